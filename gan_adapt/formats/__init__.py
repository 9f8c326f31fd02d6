"""StyleGAN2 checkpoint formats: detection, loading into one in-memory form, saving, conversion.

| format       | files                 | read | write |
|--------------|-----------------------|------|-------|
| `rosinality` | `.pt` (torch.save)    | yes  | yes   |
| `nvidia`     | `.pkl` (stylegan2-ada-pytorch, optionally gzipped) | yes, allow-list unpickler | no |
| `native`     | `.safetensors` + JSON architecture in the metadata | yes | yes |
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import native, rosinality
from .architecture import CheckpointError
from .checkpoint import StyleGANCheckpoint

__all__ = ["CheckpointError", "StyleGANCheckpoint", "detect_format", "load_checkpoint", "load_generator",
           "save_checkpoint", "convert"]

WRITERS = {"rosinality": rosinality.save, "native": native.save}
EXTENSIONS = {".pt": "rosinality", ".pth": "rosinality", ".safetensors": "native", ".pkl": "nvidia"}


def detect_format(path: str | Path) -> str:
    """Format of a checkpoint file from its first bytes (not its name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file inside it")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    # safetensors first: its little-endian u64 header length may well start with the byte 0x80 of a pickle.
    if len(head) >= 9 and head[8:9] == b"{" and 8 < int.from_bytes(head[:8], "little") < size:
        return "native"  # safetensors: u64 header length + JSON
    if head[:4] == b"PK\x03\x04":
        return "rosinality"  # torch.save zip archive
    if head[:2] == b"\x1f\x8b":
        return "nvidia"  # gzipped pickle
    if head[:1] == b"\x80":
        # A raw pickle: NVIDIA's, or torch's legacy (pre-1.6) serialisation, which starts with a magic number.
        return "rosinality" if head[2:3] == b"\x8a" else "nvidia"
    raise CheckpointError(f"{path}: unknown checkpoint format (not a torch .pt, NVIDIA .pkl or safetensors "
                          f"file; it starts with {head[:8]!r})")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", *,
                    verify_hash: bool = True) -> StyleGANCheckpoint:
    """Load any supported StyleGAN2 checkpoint file (see the table above). Native files are checked against
    the content hashes they record (``verify_hash=False``: not, for files edited on purpose)."""
    fmt = detect_format(path)
    if fmt == "rosinality":
        ckpt = rosinality.load(path)
    elif fmt == "native":
        ckpt = native.load(path, verify_hash=verify_hash)
    else:
        from . import nvidia_pkl
        ckpt = nvidia_pkl.load(path)
    return ckpt.to(device)


def load_generator(path: str | Path, device: str | torch.device = "cpu", *, verify_hash: bool = True):
    """The sampling generator (``g_ema``) of a checkpoint, in eval mode with its truncation centre set."""
    return load_checkpoint(path, device, verify_hash=verify_hash).g_ema


def save_checkpoint(ckpt: StyleGANCheckpoint, path: str | Path, fmt: str | None = None) -> Path:
    """Save as ``fmt`` (``rosinality`` or ``native``; default from the extension: .pt or .safetensors)."""
    path = Path(path)
    fmt = fmt or EXTENSIONS.get(path.suffix.lower())
    if fmt == "nvidia":
        raise CheckpointError(f"{path}: writing NVIDIA pickles is not supported (they carry code); "
                              "save as .pt (rosinality) or .safetensors (native)")
    if fmt not in WRITERS:
        raise CheckpointError(f"{path}: cannot tell the output format from the extension {path.suffix!r}; "
                              "use .pt (rosinality) or .safetensors (native), or pass the format")
    return WRITERS[fmt](ckpt, path)


def convert(src: str | Path, dst: str | Path, fmt: str | None = None) -> StyleGANCheckpoint:
    ckpt = load_checkpoint(src)
    save_checkpoint(ckpt, dst, fmt)
    return ckpt
