"""Safe file writing and content hashing."""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import torch


class OutputWriteError(OSError):
    """A file could not be written (disk full, no permission, a folder in the way, a size limit); the message
    names the file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


#: What to do about a failed write, by errno.
_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write to another disk",
    errno.EDQUOT: "the disk quota is used up: free some space or write to another disk",
    errno.EFBIG: "the file is over this system's file size limit (ulimit -f): raise it or write elsewhere",
    errno.EACCES: "no permission to write there: choose a folder you can write to",
    errno.EPERM: "no permission to write there: choose a folder you can write to",
    errno.EROFS: "that file system is read-only: choose a folder you can write to",
    errno.EISDIR: "that path is a folder: give a file name (inside it, or elsewhere)",
    errno.ENOTDIR: "a part of that path is a file, not a folder: check the path",
    errno.EEXIST: "something else already has that name: choose another path",
    errno.ENOENT: "no such file or folder: check the path",
}


def describe_os_error(e: OSError) -> str:
    """One line for a user: the file, what went wrong and what to do (our own errors already say it)."""
    if isinstance(e, OutputWriteError) or not e.strerror:
        return str(e)
    where = e.filename if e.filename is not None else "a file"
    hint = _WRITE_HINTS.get(e.errno)
    return f"{where}: {e.strerror}" + (f"; {hint}" if hint else "")


_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")


def _write_failure(path: Path, cause: BaseException) -> OutputWriteError | None:
    """The error to raise for a writer's failure on ``path``, or None when ``cause`` is not an I/O failure. Writers
    report disk errors in their own ways: Python code as OSError, safetensors as "... (os error 28)", torch.save
    as a RuntimeError of its zip writer."""
    code = None
    if isinstance(cause, OSError):
        code = cause.errno
    else:
        text = str(cause)
        found = _OS_ERROR_IN_TEXT.search(text)
        if found:
            code = int(found.group(1))
        elif not (isinstance(cause, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text
                                                        or "file write failed" in text)):
            return None
    if code is None:  # torch's writer does not say why: the likely causes, checked where we can
        try:
            full = shutil.disk_usage(path.parent).free < 1 << 20
        except OSError:
            full = False
        code = errno.ENOSPC if full else None
    first_line = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
    reason = os.strerror(code) if code else f"the writer failed: {first_line}"
    hint = _WRITE_HINTS.get(code, "is the disk full, or the file size limited (ulimit -f)? free space or write "
                                  "elsewhere")
    blocker = _file_in_the_way(path)
    if blocker is not None and code in (errno.EEXIST, errno.ENOTDIR):
        hint = f"{blocker} is a file, not a folder: check the path"
    err = OutputWriteError(code or errno.EIO, f"{path}: could not write it ({reason}); {hint}")
    err.filename = str(path)
    return err


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (``out.png/x.pt`` with a file out.png)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash or an exception midway leaves the previous file untouched and no partial file behind (a killed process
    leaves its ``.<name>.*.tmp``: :func:`remove_stale_temps`). The file gets the mode ``open()`` would give it
    (0644 under the usual umask), whatever the writer did. A failed write (disk full, no permission, a folder of
    that name) raises :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        # after the writer: some (safetensors) replace the file they are given and leave it 0600
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        failure = _write_failure(path, e)
        if failure is None:
            raise
        raise failure from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files :func:`atomic_path` left beside ``path`` when its process was killed
    mid-write; only call this while no other process writes ``path`` (a training run holds its folder's lock)."""
    path = Path(path)
    stale = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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


def manifest_header(fmt: str, version: str = "1") -> dict:
    """The first keys of every manifest: the format, its version and when the file was written."""
    return {"format": fmt, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def read_checked(path: str | os.PathLike, fmt: str | None, what: str = "file",
                 error: type[ValueError] = ManifestFileError, *,
                 verify_hash: bool = True) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """:func:`read_with_manifest`, then the checks every small file gets: its tensors against the ``content_hash``
    its manifest records (``verify_hash=False`` skips it; files without one pass) and no NaN/Inf values."""
    tensors, manifest, meta = read_with_manifest(path, fmt, what, error)
    check_tensors(tensors, manifest, path, error, verify_hash=verify_hash)
    return tensors, manifest, meta


def check_tensors(tensors: Mapping[str, torch.Tensor], manifest: dict, path: str | os.PathLike,
                  error: type[ValueError] = ManifestFileError, *, verify_hash: bool = True) -> None:
    """The checks of :func:`read_checked` on tensors already read."""
    from .integrity import verify_content_hash  # integrity imports this module
    verify_content_hash(tensors, manifest.get("content_hash"), path, verify_hash=verify_hash, error=error)
    require_finite(tensors, path)


# -- one load/save shape for every small file kind ----------------------------------------------------------------


def pretrained_file(path: str | os.PathLike, file_name: str, what: str = "file") -> Path:
    """The file ``path`` names: ``path`` itself, or for a folder (a run folder, a checkpoint folder) the file of the
    kind's canonical name ``file_name`` inside it."""
    path = Path(path)
    if not path.is_dir():
        return path
    inner = path / file_name
    if inner.is_file():
        return inner
    others = sorted(p.name for p in path.glob("*.safetensors"))[:4]
    held = f" (it holds {', '.join(others)}: give one of them, or weight_name=<name>)" if others else ""
    raise FileNotFoundError(f"{path}: a folder without {file_name}{held}; give the {what} itself or a folder that "
                            f"holds {file_name}")


def pretrained_target(path: str | os.PathLike, file_name: str) -> Path:
    """Where ``save_pretrained(path)`` writes: ``path`` itself, or ``path/<file_name>`` when ``path`` is a folder
    (one that exists, or any path written with a trailing slash, which is then created)."""
    text = os.fspath(path)
    if Path(text).is_dir() or text.endswith(("/", os.sep)):
        return Path(text) / file_name
    return Path(text)


class PretrainedFile:
    """``Kind.from_pretrained(path)`` and ``obj.save_pretrained(path)`` for every small file kind (directions,
    adapters, hypernetworks, spectral shifts), in the spirit of diffusers.

    ``path`` is the file, or a folder holding the kind's canonical :attr:`FILE_NAME` (``weight_name=`` picks
    another file in the folder). A kind implements ``_read_pretrained(path, **options)`` (a classmethod) and
    ``_write_pretrained(path, **options)``; the path they get is always the file itself.
    """

    #: The file's name inside a folder (a run folder, a checkpoint folder).
    FILE_NAME: str = ""
    #: What the file is, in messages ("direction file").
    WHAT: str = "file"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, weight_name: str | None = None, **options):
        """Load a file of this kind (``path``: the file, or a folder holding ``FILE_NAME`` or ``weight_name``)."""
        return cls._read_pretrained(pretrained_file(path, weight_name or cls.FILE_NAME, cls.WHAT), **options)

    def save_pretrained(self, path: str | os.PathLike, *, weight_name: str | None = None, **options) -> Path:
        """Write this object (``path``: the file, or a folder, an existing one or one with a trailing slash, that
        gets ``FILE_NAME`` or ``weight_name``); returns the file written."""
        return self._write_pretrained(pretrained_target(path, weight_name or self.FILE_NAME), **options)

    @classmethod
    def _read_pretrained(cls, path: Path, **options):
        raise NotImplementedError

    def _write_pretrained(self, path: Path, **options) -> Path:
        raise NotImplementedError


def warn_deprecated(old: str, new: str) -> None:
    """The DeprecationWarning of an old call kept for one release, pointing at the caller's line."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning,
                  stacklevel=3)


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
