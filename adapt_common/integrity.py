"""Integrity checks of loaded files: the content hash a file records, and tensors that hold their own values.

A file written by this project records a hash of its tensors (:func:`adapt_common.files.tensors_hash`); loading
recomputes it, so a flipped bit or an incomplete copy is an error instead of silently changed weights. Files
edited on purpose load with ``verify_hash=False``, or with the checks switched off for a whole command
(``python -m gan_adapt --no-verify-hash ...``), which sets :data:`SKIP_ENV` so worker processes agree.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

import torch

from .files import tensors_hash

#: Set to 1 to skip content-hash checks (what ``--no-verify-hash`` does for the command it runs).
SKIP_ENV = "DOMAIN_ADAPT_NO_VERIFY_HASH"


class HashMismatchError(ValueError):
    """A file's tensors do not hash to the hash it records."""


def hash_checks_enabled(verify_hash: bool = True) -> bool:
    """Whether a loader called with ``verify_hash`` checks hashes (the switch can only turn checks off)."""
    return bool(verify_hash) and os.environ.get(SKIP_ENV, "").strip().lower() not in ("1", "true", "yes")


@contextlib.contextmanager
def hash_checks_skipped() -> Iterator[None]:
    """Skip content-hash checks inside the block (and in processes started from it)."""
    before = os.environ.get(SKIP_ENV)
    os.environ[SKIP_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SKIP_ENV, None)
        else:
            os.environ[SKIP_ENV] = before


def verify_content_hash(tensors: Mapping[str, torch.Tensor], expected, source, *, verify_hash: bool = True,
                        what: str = "content hash", error: type[ValueError] = HashMismatchError) -> None:
    """Refuse ``tensors`` unless they hash to ``expected`` (files without a recorded hash pass: older files)."""
    if expected is None or not hash_checks_enabled(verify_hash):
        return
    found = tensors_hash(tensors)
    if expected != found:
        raise error(f"{source}: its tensors do not match the {what} it records (expected {expected}, found "
                    f"{found}): the file was damaged (a flipped bit, an incomplete copy) or edited after it was "
                    "written. Copy it again from where it came from; if you edited it on purpose, load it with "
                    "verify_hash=False (command line: python -m gan_adapt --no-verify-hash <command> ...)")


def require_stored(tensors: Mapping[str, torch.Tensor], source, error: type[ValueError] = ValueError) -> None:
    """Refuse tensors that are views with more values than their storage holds (stride-0 broadcasts): a tiny
    pickled file can describe huge shapes this way, which any computation on them would then allocate."""
    for name, t in tensors.items():
        if torch.is_tensor(t) and t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise error(f"{source}: tensor {name!r} of shape {tuple(t.shape)} is a broadcast view over "
                        f"{t.untyped_storage().nbytes():,} bytes, not stored weights; the file is corrupt or hostile")
