"""The explain tests' random ResNet18, images and k-means head module (tests/tiny_models.py)."""

from tiny_models import images, kmeans_module, resnet18  # noqa: F401 (fixtures)
