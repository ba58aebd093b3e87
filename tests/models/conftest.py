"""The models tests' tiny images and ResNet18 (tests/tiny_models.py)."""

from tiny_models import make_images, tiny_resnet18  # noqa: F401 (fixtures)
