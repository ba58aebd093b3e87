"""Where each stage writes, in one place. ``dvc.yaml`` declares the same paths as outs.

Every path is relative to the repository root (the working directory of ``dvc repro``).
"""

from __future__ import annotations

from pathlib import Path

BASELINES = "cnn"  # the pseudo-combination under which post-hoc baselines of the CNN are filed


RESOLVED_DIR = Path("resolved")


def resolved_settings(stage: str, dataset: str | None = None, combination: str | None = None) -> Path:
    """The settings one stage run reads, defaults filled in, written by the ``resolve`` stage and
    listed as that stage's dependency in ``dvc.yaml`` (see :mod:`kmx_eval.stage_params`)."""
    if dataset is None:
        return RESOLVED_DIR / f"{stage}.json"
    return RESOLVED_DIR / dataset / (f"{stage}-{combination}.json" if combination else f"{stage}.json")


def prepared(dataset: str) -> Path:
    """Hugging Face DatasetDict (train, test) saved to disk by ``prepare@dataset``."""
    return Path("data") / dataset


def backbone_dir(dataset: str) -> Path:
    return Path("models") / dataset


def backbone_weights(dataset: str, seed: int) -> Path:
    return backbone_dir(dataset) / f"seed{seed}" / "backbone.safetensors"


def backbone_meta(dataset: str, seed: int) -> Path:
    return backbone_dir(dataset) / f"seed{seed}" / "backbone.json"


def train_metrics(dataset: str) -> Path:
    return Path("metrics") / dataset / "train.json"


def embeddings(dataset: str) -> Path:
    """Folder of pooled-embedding caches written by ``embed@dataset``, one ``seed{s}.npz`` each."""
    return Path("features") / dataset


def embeddings_file(dataset: str, seed: int) -> Path:
    return embeddings(dataset) / f"seed{seed}.npz"


def heads(dataset: str, combination: str) -> Path:
    return Path("heads") / dataset / combination


def head_dir(dataset: str, combination: str, seed: int) -> Path:
    return heads(dataset, combination) / f"seed{seed}"


def combination_metrics(dataset: str, combination: str) -> Path:
    """Folder of one combination's metrics: ``fit.json``, ``evaluate/``, ``evaluate.json``, ``curves.csv``."""
    return Path("metrics") / dataset / combination


def fit_metrics(dataset: str, combination: str) -> Path:
    return combination_metrics(dataset, combination) / "fit.json"


def maps(dataset: str, combination: str) -> Path:
    """Folder of explanation maps of ``explain@dataset-combination`` (or ``baselines@dataset``)."""
    return Path("maps") / dataset / combination


def maps_file(dataset: str, combination: str, seed: int) -> Path:
    return maps(dataset, combination) / f"seed{seed}.npz"


def evaluation(dataset: str, combination: str) -> Path:
    """Folder of ``evaluate@dataset-combination``: tidy metrics, per-sample scores, curves."""
    return combination_metrics(dataset, combination) / "evaluate"


def evaluation_summary(dataset: str, combination: str) -> Path:
    """Small JSON of key numbers, declared as DVC metrics."""
    return combination_metrics(dataset, combination) / "evaluate.json"


REPORT_DIR = Path("reports")


def curves(dataset: str, combination: str) -> Path:
    """Pixel-flipping curves (CSV), declared as DVC plots, beside the evaluate folder."""
    return combination_metrics(dataset, combination) / "curves.csv"


def platform_record(stage: str, dataset: str | None = None, combination: str | None = None) -> Path:
    """Where a stage run records its platform (kmx_eval/numerics.py): ``metrics/platform/`` beside
    the metrics, git-tracked with them and read by the report through its ``metrics`` dependency;
    the report's own in ``reports/platform.json`` (writing into its own dependency would make DVC
    rerun it every time). Not a DVC output: its bytes name the CPU, and as an output they would
    change dvc.lock on another CPU although no number changed."""
    if stage == "report":
        return Path("reports") / "platform.json"
    name = stage if dataset is None else f"{stage}@{dataset}" + (f"-{combination}" if combination else "")
    return Path("metrics") / "platform" / f"{name}.json"
