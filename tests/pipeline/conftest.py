"""The pipeline tests reuse the tiny models of the models and explain tests (tests/tiny_models.py)."""

from tiny_models import images, kmeans_module, make_images, resnet18, tiny_resnet18  # noqa: F401 (fixtures)
