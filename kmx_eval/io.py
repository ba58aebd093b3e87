"""Atomic, pickle-free outputs.

Every output is written to a temporary sibling and renamed into place, so a stage killed at any
moment (SIGKILL included) leaves either the previous output or none, never a half-written file
that DVC would hash and trust. Arrays go to ``.npz`` (loaded with ``allow_pickle=False``) or
safetensors, metadata to JSON: nothing the pipeline writes is unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kmx_eval.errors import DataError, KmxError

#: Top-level folders a stage may write to, relative to the repository (the working directory
#: of ``dvc repro``). Anything else is refused so that a path in params cannot overwrite sources.
OUTPUT_ROOTS = ("resolved", "data", "models", "features", "heads", "maps", "metrics", "reports")


def check_output_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Resolve ``path`` and check that it lies in one of :data:`OUTPUT_ROOTS` under ``root``."""
    root = Path(root or os.getcwd()).resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else root / p).resolve()
    for name in OUTPUT_ROOTS:
        if resolved == root / name or (root / name) in resolved.parents:
            return resolved
    raise KmxError(
        f"refusing to write {str(path)!r}: stages only write under "
        f"{', '.join(n + '/' for n in OUTPUT_ROOTS)} of {root}"
    )


#: Set by the stage wrapper (:func:`kmx_eval.cli.stage`) to the repository root while a stage runs:
#: then every atomic write is checked against :data:`OUTPUT_ROOTS`. Library use is unrestricted.
_GUARD_ROOT: Path | None = None


@contextlib.contextmanager
def guard_outputs(root: str | os.PathLike) -> Iterator[None]:
    """While active, refuse writes outside :data:`OUTPUT_ROOTS` of ``root`` (see check_output_path)."""
    global _GUARD_ROOT
    previous, _GUARD_ROOT = _GUARD_ROOT, Path(root).resolve()
    try:
        yield
    finally:
        _GUARD_ROOT = previous


@contextlib.contextmanager
def _written_or_nothing(path: Path, scratch: Path) -> Iterator[None]:
    """Remove ``scratch`` whatever happens inside; a full disk or quota there becomes one KmxError
    naming ``path`` (any other OSError propagates as it is)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            why = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise KmxError(f"could not write {path}: {why}; nothing was left half-written") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file or folder is removed and ``path`` is left untouched.
    Works for files and for folders (the caller creates whichever it needs at the yielded path).
    """
    path = Path(path)
    if _GUARD_ROOT is not None:
        check_output_path(path, _GUARD_ROOT)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A stage killed by SIGKILL cannot clean up: remove what an earlier, interrupted write of
    # this same output left behind (never the output itself, which is only ever replaced whole).
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    with _written_or_nothing(path, tmp):
        yield target
        if not target.exists():
            raise RuntimeError(f"atomic_path: nothing was written to {target}")
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)


@contextlib.contextmanager
def replace_together(folder: str | os.PathLike, names: Sequence[str]) -> Iterator[Path]:
    """Yield a staging folder inside ``folder``; once the caller has written every one of ``names``
    (files or folders) there, move them into ``folder``, each replacing its old version.

    Until then nothing in ``folder`` changes: on any exception the staging folder is removed and
    ``folder`` keeps its old outputs, all of them (a report half old, half new would be worse than
    either). The swap is one rename per name; should one fail, those already moved are put back.
    """
    folder = Path(folder)
    if _GUARD_ROOT is not None:
        check_output_path(folder, _GUARD_ROOT)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".replace.*.tmp"):  # left by a SIGKILL mid-write
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".replace.", suffix=".tmp", dir=folder))
    replaced = staging / ".replaced"
    with _written_or_nothing(folder, staging):
        yield staging
        missing = [n for n in names if not (staging / n).exists()]
        if missing:
            raise RuntimeError(f"replace_together: {', '.join(missing)} not written to {staging}")
        replaced.mkdir()
        _swap_in(folder, staging, replaced, names)


def _swap_in(folder: Path, staging: Path, replaced: Path, names: Sequence[str]) -> None:
    """Move each ``staging/name`` to ``folder/name``, the old one to ``replaced/name``; undo on failure."""
    moved: list[tuple[str, bool]] = []  # (name, whether an old version was moved aside)
    try:
        for name in names:
            target = folder / name
            had_old = target.exists() or target.is_symlink()
            if had_old:
                os.replace(target, replaced / name)
            moved.append((name, had_old))
            os.replace(staging / name, target)
    except BaseException:
        for name, had_old in reversed(moved):
            target = folder / name
            if not (staging / name).exists():  # the new version got in: take it out again
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            if had_old:
                os.replace(replaced / name, target)
        raise


def _fsync_write(target: Path, data: bytes) -> None:
    with open(target, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        obj = float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # JSON has no NaN; missing values are null
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        _fsync_write(tmp, data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys (byte-stable for the same content)."""
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KmxError(f"{path} does not exist; run the stage that writes it (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV without the index, floats with 10 significant digits."""
    return write_text(path, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays to an uncompressed ``.npz``; object arrays are refused (they would need pickle)."""
    clean = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"save_npz: array {key!r} has dtype object, which would need pickle")
        clean[key] = arr
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **clean)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` written by :func:`save_npz` (never unpickles)."""
    path = Path(path)
    if not path.exists():
        raise KmxError(f"{path} does not exist; run the stage that writes it (dvc repro)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Save a torch state dict with safetensors, atomically."""
    # safetensors.torch loads torch: io is imported by the stages that must stay light
    from safetensors.torch import save_file

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def load_tensors(path: str | os.PathLike) -> dict:
    # safetensors.torch loads torch: io is imported by the stages that must stay light
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise KmxError(f"{path} does not exist; run the stage that writes it (dvc repro)")
    return load_file(str(path))
