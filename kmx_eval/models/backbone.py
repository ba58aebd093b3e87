"""The CNN under explanation: a registered architecture whose classifier has ``n_classes`` outputs.

The original CNN's classifier reads the deepest block B_n (docs/METHOD.md, section 2); where it is
global average pooling followed by one linear layer (``Architecture.gap_linear``),
``logit_c = <w_c, z_n> + b_c`` with ``z_n = mean_ij A_n(x)[:, i, j]``.

- :data:`ARCHITECTURES` (from :mod:`kmx_eval.models.architectures`): params name -> description.
- :func:`build_backbone`, :func:`train_backbone`, :func:`evaluate_backbone`.
- :func:`load_checkpoint`: the user's own trained weights (safetensors, or a PyTorch file read
  with ``weights_only=True``), checked against the architecture and the number of classes;
  :func:`checkpoint_sha256` identifies the file.
- :func:`save_backbone` / :func:`load_backbone`: ``backbone.safetensors`` (state dict) and
  ``backbone.json`` (the metadata that rebuilds the module). Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import pickle
import re
import time
import urllib.error
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from kmx_eval import io
from kmx_eval.device import autocast
from kmx_eval.errors import DataError, ParamsError, UnavailableError
from kmx_eval.models.architectures import ARCHITECTURES, architecture_of, get_architecture, meta_model

log = logging.getLogger("kmx_eval")

__all__ = ["ARCHITECTURES", "WEIGHTS", "build_backbone", "load_checkpoint", "checkpoint_sha256",
           "classifier_of", "architecture_of", "train_backbone", "evaluate_backbone",
           "save_backbone", "load_backbone"]

#: ``backbone.weights`` -> the torchvision weights name (``None``: random initialisation).
WEIGHTS = {"none": None, "imagenet": "IMAGENET1K_V1"}

WEIGHTS_FILE = "backbone.safetensors"
META_FILE = "backbone.json"
#: Keys :func:`load_backbone` needs in ``backbone.json`` to rebuild the module.
REQUIRED_META = ("architecture", "n_classes")


def build_backbone(architecture: str, n_classes: int, weights: str = "none") -> nn.Module:
    """Build a registered torchvision architecture whose classifier is a fresh ``Linear(., n_classes)``.

    Parameters
    ----------
    architecture : str
        A key of :data:`ARCHITECTURES` (``resnet18``, ``vgg16_bn``, ``densenet121``...).
    n_classes : int
        Number of classes of the new linear classifier (at least 2).
    weights : {"none", "imagenet"}
        ``none`` initialises at random (from torch's global RNG: seed it first);
        ``imagenet`` loads torchvision's ``IMAGENET1K_V1`` weights for every layer but the classifier.

    Raises
    ------
    ParamsError
        Unknown architecture or weights, or fewer than 2 classes.
    UnavailableError
        ImageNet weights requested but neither downloadable nor in the torch hub cache.
    """
    arch = get_architecture(architecture)
    if weights not in WEIGHTS:
        raise ParamsError(f"backbone.weights: unknown value {weights!r}; valid: {', '.join(WEIGHTS)}")
    if int(n_classes) < 2:
        raise ParamsError(f"a backbone needs at least 2 classes, got n_classes={n_classes}")
    if WEIGHTS[weights] is None:
        return arch.build(int(n_classes))
    try:
        return arch.build(int(n_classes), weights=WEIGHTS[weights])
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        # URLError is an OSError; RuntimeError covers a truncated or corrupt download.
        reason = str(getattr(exc, "reason", "") or exc.__class__.__name__).rstrip(".")
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        url = torchvision.models.get_model_weights(arch.builder)[WEIGHTS[weights]].url
        raise UnavailableError(
            f"the ImageNet weights of {architecture} could not be downloaded ({reason}); "
            f"put {url.rsplit('/', 1)[-1]} (from {url}) in {cache} or use backbone.weights: none"
        ) from None


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final linear layer of a backbone (``fc`` of a ResNet, ``classifier.6`` of a VGG...)."""
    return architecture_of(model).classifier_of(model)


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint file's bytes (what the report and DVC's resolved settings record)."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_hint(path: Path) -> str:
    return (f"convert it once, in a Python session you trust: import torch; from safetensors.torch "
            f"import save_file; m = torch.load('{path}', weights_only=False); "
            f"save_file({{k: v.contiguous() for k, v in (m.state_dict() if hasattr(m, 'state_dict') "
            f"else m).items()}}, '{path.with_suffix('.safetensors')}')")


def _read_state(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or ``weights_only`` PyTorch file (never arbitrary pickle)."""
    # safetensors: only reading a checkpoint needs it, and the resolve stage imports this module
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{where}: {path} is not a readable safetensors file "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:  # not a pickle of tensors and classes at all
            raise DataError(f"{where}: {path} is neither a safetensors file nor a PyTorch file "
                            f"(torch.load with weights_only=True cannot parse it)") from None
        raise DataError(f"{where}: {path} needs arbitrary pickle to load (it holds a "
                        f"{found.group(1)}, not only tensors), which the suite never runs; "
                        f"{_convert_hint(path)}") from None
    except Exception as exc:  # torch raises KeyError, RuntimeError... on a file that is not its own
        raise DataError(f"{where}: {path} is neither a safetensors file nor a PyTorch file "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                        ) from None
    # Training scripts often save {"state_dict": ..., "epoch": ...}; DataParallel prefixes "module.".
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{where}: {path} holds a {type(obj).__name__}, not a state dict (a mapping "
                        f"from parameter names to tensors)")
    if obj and all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def load_checkpoint(path: str | Path, architecture: str, n_classes: int,
                    where: str = "backbone.checkpoint") -> nn.Module:
    """The user's trained model: ``architecture`` with ``n_classes`` outputs and the state dict at ``path``.

    Every tensor of the file is copied into the module and every tensor of the module comes from
    the file (strict): the returned model equals the checkpoint tensor for tensor.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` file, or a PyTorch file (``torch.save(model.state_dict(), ...)``) read
        with ``torch.load(..., weights_only=True)``.
    architecture : str
        A key of :data:`ARCHITECTURES`.
    n_classes : int
        The dataset's number of classes; the checkpoint's classifier must have as many outputs.
    where : str
        The params key named in error messages.

    Raises
    ------
    DataError
        The file is missing, needs pickle, is not a state dict of ``architecture`` (the first
        missing or unexpected key is named), or its classifier has another number of classes.
    """
    path = Path(path).expanduser()  # as dataset paths are: ~/model.pt is the user's home
    arch = get_architecture(architecture)
    if path.is_dir():
        raise DataError(f"{where}: {path} is a folder; give the file of the model's state dict "
                        f"(.safetensors, or a .pt/.pth saved with torch.save)")
    if not path.is_file():
        raise DataError(f"{where}: checkpoint {path} does not exist")
    state = _read_state(path, where)
    expected = _meta_state(arch, int(n_classes))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        first = (f"key {missing[0]!r} is missing" if missing else f"key {unexpected[0]!r} is unexpected")
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected"
        match = _matching_architecture(state, arch)
        hint = f"; its keys match {match}" if match else ""
        raise DataError(f"{where}: {path} is not a state dict of {arch.name}: {first} ({counts}{hint})")
    weight_key = f"{arch.classifier}.weight"
    if state[weight_key].shape[0] != int(n_classes):
        raise DataError(f"{where}: the classifier ({arch.classifier}) of {path} has "
                        f"{state[weight_key].shape[0]} outputs but the dataset has {int(n_classes)} classes")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise DataError(f"{where}: tensor {key!r} of {path} has shape {tuple(state[key].shape)}, "
                            f"{arch.name} expects {tuple(tensor.shape)}")
    return _assigned(arch.name, int(n_classes), state).eval()


def _meta_state(arch, n_classes: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return arch.build(n_classes).state_dict()


def _assigned(architecture: str, n_classes: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """``architecture`` holding exactly the tensors of ``state`` (strict).

    The module is built on the ``meta`` device and the state dict's tensors are assigned to it, so
    no random initialisation is computed only to be overwritten (seconds for a VGG16's 138M
    parameters). A module with tensors outside its state dict falls back to a normal build.
    """
    arch = get_architecture(architecture)
    with torch.device("meta"):
        model = arch.build(n_classes)
    # assign keeps the file's dtype: convert (e.g. a float16 checkpoint) to the module's own first.
    dtypes = {k: t.dtype for k, t in model.state_dict().items()}
    state = {k: (v.to(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = arch.build(n_classes)
        model.load_state_dict(state, strict=True)
    return model


def _matching_architecture(state: Mapping[str, torch.Tensor], tried) -> str | None:
    """The registered architecture whose parameter names equal the state dict's, if any."""
    keys = set(state)
    for name in ARCHITECTURES.names():
        arch = ARCHITECTURES.get(name)
        if arch is not tried and set(meta_model(arch).state_dict()) == keys:
            return name
    return None


def _loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, *,
            shuffle: bool = False, generator: torch.Generator | None = None,
            drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)


def _xy(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a batch of ``(x, label, index)`` (or ``(x, label)``) items."""
    return batch[0], batch[1]


def train_backbone(model: nn.Module, train_dataset: Dataset, test_dataset: Dataset, *, cfg,
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
    loader = _training_loader(train_dataset, cfg, device=device, seed=seed)
    model.to(device)
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
        for epoch in range(cfg.epochs):
            loss, accuracy = _train_epoch(model, loader, optimiser=optimiser, scheduler=scheduler,
                                          device=device, mixed_precision=cfg.mixed_precision,
                                          desc=f"train epoch {epoch + 1}/{cfg.epochs}")
            history["loss"].append(loss)
            history["train_accuracy"].append(accuracy)
            log.info("epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, cfg.epochs,
                     history["loss"][-1], history["train_accuracy"][-1])
    history["train_seconds"] = time.perf_counter() - start
    logits, labels = evaluate_backbone(model, test_dataset, cfg.batch_size, device,
                                       num_workers=cfg.num_workers)
    history["test_accuracy"] = float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return history


def _training_loader(train_dataset: Dataset, cfg, *, device: torch.device, seed: int) -> DataLoader:
    """Shuffled full batches of ``cfg.batch_size`` images, the order drawn from a generator seeded
    with ``seed``; a DataError for a split too small to train on."""
    n_train = len(train_dataset)
    if n_train < 2:
        raise DataError(f"the training split has {n_train} image(s); training needs at least 2 "
                        f"(BatchNorm estimates batch statistics)")
    generator = torch.Generator().manual_seed(int(seed))
    # A last batch of one image breaks BatchNorm's batch statistics (B4 is 1x1 on small images);
    # dropping the remainder keeps every step a full batch and the shuffle changes it each epoch.
    drop_last = n_train > cfg.batch_size
    return _loader(train_dataset, cfg.batch_size, cfg.num_workers, device, shuffle=True,
                   generator=generator, drop_last=drop_last)


def _train_epoch(model: nn.Module, loader: DataLoader, *, optimiser: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device,
                 mixed_precision: bool, desc: str) -> tuple[float, float]:
    """One pass over ``loader`` with cross-entropy: ``(mean loss, share of correctly classified
    images)``, both measured during the epoch."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, steps = 0, len(loader)
    bar = tqdm(loader, desc=desc, leave=False, unit="batch")
    for step, batch in enumerate(bar):
        x, y = _xy(batch)
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y, dtype=torch.long).to(device, non_blocking=True)
        with autocast(device, mixed_precision):
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
    return float(total_loss) / seen, float(correct) / seen


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

    The module is rebuilt from ``meta`` (never downloading anything: the saved state dict holds
    every weight) and the state dict is loaded strictly (:func:`_assigned`).
    """
    folder = Path(folder)
    meta = io.read_json(folder / META_FILE)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DataError(f"{folder / META_FILE} lacks {', '.join(missing)}; rerun the train stage")
    get_architecture(meta["architecture"])
    if int(meta["n_classes"]) < 2:
        raise DataError(f"{folder / META_FILE}: n_classes {meta['n_classes']} is below 2; rerun the train stage")
    state = io.load_tensors(folder / WEIGHTS_FILE)
    try:
        model = _assigned(meta["architecture"], int(meta["n_classes"]), state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            f"{folder / WEIGHTS_FILE} does not fit a {meta['architecture']} with "
            f"{meta['n_classes']} classes ({first}); rerun the train stage"
        ) from None
    return model.to(torch.device(device)).eval(), meta
