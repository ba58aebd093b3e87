"""The CNN under explanation: a torchvision ResNet whose ``fc`` is replaced by a ``n_classes`` head.

The original CNN is the linear head on the pooled output of block B4 (docs/METHOD.md, section 2):
``logit_c = <w_c, z_4> + b_c`` with ``z_4 = mean_ij A_4(x)[:, i, j]`` (torchvision's ``avgpool``).

- :data:`ARCHITECTURES`: registry from the params name (``backbone.architecture``) to the
  torchvision builder; adding an architecture with the same ``layer1..layer4`` / ``fc`` layout is
  one ``ARCHITECTURES.register`` line.
- :func:`build_backbone`, :func:`train_backbone`, :func:`evaluate_backbone`.
- :func:`save_backbone` / :func:`load_backbone`: ``backbone.safetensors`` (state dict) and
  ``backbone.json`` (the metadata that rebuilds the module). Nothing is pickled.
"""

from __future__ import annotations

import logging
import time
import urllib.error
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from kmx_eval import io
from kmx_eval.device import autocast
from kmx_eval.errors import DataError, ParamsError, UnavailableError
from kmx_eval.registry import Registry

log = logging.getLogger("kmx_eval")

#: ``backbone.architecture`` -> torchvision builder ``f(weights=...) -> ResNet``.
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("backbone architecture")
ARCHITECTURES.register("resnet18")(torchvision.models.resnet18)
ARCHITECTURES.register("resnet34")(torchvision.models.resnet34)
ARCHITECTURES.register("resnet50")(torchvision.models.resnet50)

#: ``backbone.weights`` -> the torchvision weights name (``None``: random initialisation).
WEIGHTS = {"none": None, "imagenet": "IMAGENET1K_V1"}

WEIGHTS_FILE = "backbone.safetensors"
META_FILE = "backbone.json"
#: Keys :func:`load_backbone` needs in ``backbone.json`` to rebuild the module.
REQUIRED_META = ("architecture", "n_classes")


def build_backbone(architecture: str, n_classes: int, weights: str = "none") -> nn.Module:
    """Build a torchvision ResNet whose ``fc`` is a fresh ``Linear(C_4, n_classes)``.

    Parameters
    ----------
    architecture : str
        A key of :data:`ARCHITECTURES` (``resnet18``, ``resnet34``, ``resnet50``).
    n_classes : int
        Number of classes of the new linear head (at least 2).
    weights : {"none", "imagenet"}
        ``none`` initialises at random (from torch's global RNG: seed it first);
        ``imagenet`` loads torchvision's ``IMAGENET1K_V1`` weights for every layer but ``fc``.

    Raises
    ------
    ParamsError
        Unknown architecture or weights, or fewer than 2 classes.
    UnavailableError
        ImageNet weights requested but neither downloadable nor in the torch hub cache.
    """
    builder = ARCHITECTURES.get(architecture, where="backbone.architecture")
    if weights not in WEIGHTS:
        raise ParamsError(f"backbone.weights: unknown value {weights!r}; valid: {', '.join(WEIGHTS)}")
    if int(n_classes) < 2:
        raise ParamsError(f"a backbone needs at least 2 classes, got n_classes={n_classes}")
    if WEIGHTS[weights] is None:
        model = builder(weights=None)
    else:
        try:
            model = builder(weights=WEIGHTS[weights])
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            # URLError is an OSError; RuntimeError covers a truncated or corrupt download.
            reason = str(getattr(exc, "reason", "") or exc.__class__.__name__).rstrip(".")
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            url = torchvision.models.get_model_weights(builder)[WEIGHTS[weights]].url
            raise UnavailableError(
                f"the ImageNet weights of {architecture} could not be downloaded ({reason}); "
                f"put {url.rsplit('/', 1)[-1]} (from {url}) in {cache} or use backbone.weights: none"
            ) from None
    model.fc = nn.Linear(model.fc.in_features, int(n_classes))
    return model


def _loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, *,
            shuffle: bool = False, generator: torch.Generator | None = None,
            drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)


def _xy(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a batch of ``(x, label, index)`` (or ``(x, label)``) items."""
    return batch[0], batch[1]


def train_backbone(model: nn.Module, train_dataset: Dataset, test_dataset: Dataset, cfg,
                   seed: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Train ``model`` in place with cross-entropy, AdamW and a one-cycle learning rate.

    Minimises ``L = -1/|B| sum_{i in B} log softmax(f(x_i))_{y_i}`` over shuffled mini-batches ``B``
    of ``cfg.batch_size`` images, with AdamW (``cfg.lr``, ``cfg.weight_decay``) and
    :class:`~torch.optim.lr_scheduler.OneCycleLR` peaking at ``cfg.lr`` over
    ``cfg.epochs * steps_per_epoch`` steps. Augmentation is the dataset's business (``augment``).

    The shuffling order comes from a generator seeded with ``seed``, the initial weights from the
    caller (seed torch before :func:`build_backbone`), so the same seed gives the same weights on
    the CPU. ``cfg.mixed_precision`` enables bfloat16 autocast on CUDA only.

    Parameters
    ----------
    model : nn.Module
        A module mapping ``(n, 3, H, W)`` images to ``(n, n_classes)`` logits.
    train_dataset, test_dataset : Dataset
        Items ``(x float32 (3, H, W), label, index)``.
    cfg : kmx_eval.config.BackboneConfig
        ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``num_workers``, ``mixed_precision``.
    seed : int
        Seeds the shuffling order.
    device : torch.device or str

    Returns
    -------
    dict
        ``loss`` and ``train_accuracy`` (lists, one value per epoch: mean training loss and share
        of correctly classified training images, both measured during the epoch),
        ``test_accuracy`` (float, after training, eval mode), ``train_seconds`` (float).
    """
    device = torch.device(device)
    n_train = len(train_dataset)
    if n_train < 2:
        raise DataError(f"the training split has {n_train} image(s); training needs at least 2 "
                        f"(BatchNorm estimates batch statistics)")
    model.to(device)
    generator = torch.Generator().manual_seed(int(seed))
    # A last batch of one image breaks BatchNorm's batch statistics (B4 is 1x1 on small images);
    # dropping the remainder keeps every step a full batch and the shuffle changes it each epoch.
    drop_last = n_train > cfg.batch_size
    loader = _loader(train_dataset, cfg.batch_size, cfg.num_workers, device, shuffle=True,
                     generator=generator, drop_last=drop_last)
    steps = len(loader)
    history: dict[str, Any] = {"loss": [], "train_accuracy": []}
    start = time.perf_counter()
    if cfg.epochs > 0:
        # The fused kernel: on 2 CPU cores the default (foreach) AdamW step over ResNet34's 21M
        # parameters takes seconds, the fused one a tenth of a second.
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      fused=device.type in ("cpu", "cuda") or None)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr,
                                                        total_steps=cfg.epochs * steps)
        criterion = nn.CrossEntropyLoss()
        for epoch in range(cfg.epochs):
            model.train()
            total_loss = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            bar = tqdm(loader, desc=f"train epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       unit="batch")
            for step, batch in enumerate(bar):
                x, y = _xy(batch)
                x = x.to(device, non_blocking=True)
                y = torch.as_tensor(y, dtype=torch.long).to(device, non_blocking=True)
                with autocast(device, cfg.mixed_precision):
                    logits = model(x)
                    loss = criterion(logits.float(), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                # Accumulate on the device; one host sync per epoch, not per step.
                total_loss += loss.detach().double() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                if step % 10 == 0 or step == steps - 1:  # .item() syncs a GPU: not every step
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            history["loss"].append(float(total_loss) / seen)
            history["train_accuracy"].append(float(correct) / seen)
            log.info("epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, cfg.epochs,
                     history["loss"][-1], history["train_accuracy"][-1])
    history["train_seconds"] = time.perf_counter() - start
    logits, labels = evaluate_backbone(model, test_dataset, cfg.batch_size, device,
                                       num_workers=cfg.num_workers)
    history["test_accuracy"] = float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return history


@torch.no_grad()
def evaluate_backbone(model: nn.Module, dataset: Dataset, batch_size: int,
                      device: torch.device | str = "cpu", num_workers: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``model`` (eval mode, float32) on every item of ``dataset``, in dataset order.

    Returns
    -------
    logits : np.ndarray, (N, n_classes) float32
    labels : np.ndarray, (N,) int64
    """
    device = torch.device(device)
    model.to(device).eval()
    logits, labels = [], []
    for batch in tqdm(_loader(dataset, batch_size, num_workers, device), desc="evaluate", leave=False,
                      unit="batch"):
        x, y = _xy(batch)
        logits.append(model(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.long))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def save_backbone(model: nn.Module, folder: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``folder/backbone.safetensors`` (state dict) and ``folder/backbone.json`` (``meta``).

    ``meta`` must hold ``architecture`` and ``n_classes`` (what :func:`load_backbone` rebuilds
    the module from); the train stage adds ``class_names``, ``image_size``, ``weights``, ``seed``,
    ``epochs``, ``test_accuracy``... Both files are written atomically.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_backbone: meta lacks {', '.join(missing)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    io.save_tensors(folder / WEIGHTS_FILE, model.state_dict(),
                    metadata={"architecture": str(meta["architecture"])})
    io.write_json(folder / META_FILE, dict(meta))
    return folder


def load_backbone(folder: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the backbone saved by :func:`save_backbone`; returns ``(model.eval(), meta)``.

    The module is rebuilt from ``meta`` with random initialisation (never downloading anything:
    the saved state dict holds every weight) and the state dict is loaded strictly.
    """
    folder = Path(folder)
    meta = io.read_json(folder / META_FILE)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DataError(f"{folder / META_FILE} lacks {', '.join(missing)}; rerun the train stage")
    model = build_backbone(meta["architecture"], int(meta["n_classes"]), weights="none")
    state = io.load_tensors(folder / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            f"{folder / WEIGHTS_FILE} does not fit a {meta['architecture']} with "
            f"{meta['n_classes']} classes ({first}); rerun the train stage"
        ) from None
    return model.to(torch.device(device)).eval(), meta
