"""Safe file writing and content hashing."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash or an exception midway leaves the previous file untouched and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tensors_hash(tensors: Mapping[str, torch.Tensor], length: int = 16) -> str:
    """A content hash of named tensors (names, dtypes, shapes and values), independent of dict order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()[:length]


# -- small safetensors files with a JSON manifest (adapters, directions, hypernetworks, spectral shifts) ----------


class ManifestFileError(ValueError):
    """A safetensors file that is unreadable, or not of the expected kind."""


def save_with_manifest(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, fmt: str,
                       manifest: dict) -> Path:
    """Write ``tensors`` as safetensors with ``{"format": fmt, "manifest": <JSON>}`` metadata, atomically, and the
    manifest beside it as ``<file>.json`` for people to read."""
    import json

    from safetensors.torch import save_file
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": fmt, "manifest": json.dumps(manifest, default=str)})
    with atomic_path(path.with_suffix(path.suffix + ".json")) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_with_manifest(path: str | os.PathLike, fmt: str | None, what: str = "file",
                       error: type[ValueError] = ManifestFileError) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, manifest, raw metadata) of a safetensors file; ``fmt`` (when given) must match its format. Errors
    name the file and what is wrong, as ``error``."""
    import json

    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise error(f"{path}: not a readable safetensors file; it is truncated or corrupt ({e})") from e
    if fmt is not None and meta.get("format") != fmt:
        raise error(f"{path}: a safetensors file, but not a {fmt} file (format {meta.get('format')!r})")
    try:
        manifest = json.loads(meta["manifest"]) if "manifest" in meta else {}
    except ValueError as e:
        raise error(f"{path}: its manifest is not JSON") from e
    return tensors, manifest, meta


def split_weight(text: str, default: float = 1.0) -> tuple[str, float]:
    """``PATH[:WEIGHT]`` -> (path, weight); a colon inside the path (a Windows drive) is kept when what follows the
    last colon is not a number. A weight that is not finite (``nan``, ``inf``, ``1e400``) is refused."""
    import math
    path, sep, tail = text.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return text, default
        if not math.isfinite(weight):
            raise ValueError(f"{text!r}: the weight {tail!r} is not a finite number; give e.g. {path}:0.5")
        return path, weight
    return text, default


# -- checks of what a file holds, before it is used ----------------------------------------------------------------


class NonFiniteTensorError(ValueError):
    """A file holds NaN or infinite values."""


def require_finite(tensors: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Refuse NaN/Inf in any floating-point tensor, naming the file and the first bad tensor: such a file renders
    black or NaN images without any other sign."""
    for name, t in tensors.items():
        if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex()) and t.numel() \
                and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteTensorError(f"{source}: tensor {name!r} holds {bad} NaN/infinite value(s) of {t.numel()}; "
                                       "the file is corrupt or came from a diverged run")


class SizeLimitError(ValueError):
    """A size read from a file is beyond what any real model has (a hostile or corrupt file)."""


def require_size(what: str, value, limit: int, source: str | os.PathLike, minimum: int = 0) -> int:
    """Bound a size read from a file *before* anything is allocated with it."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SizeLimitError(f"{source}: {what} is {value!r}, not an integer; the file is corrupt") from None
    if isinstance(value, float) and value != v:
        raise SizeLimitError(f"{source}: {what} is {value!r}, not an integer; the file is corrupt")
    if not minimum <= v <= limit:
        raise SizeLimitError(f"{source}: {what} is {v:,}, outside {minimum:,}..{limit:,}; the file is corrupt or "
                             "not a model this tool can build")
    return v
