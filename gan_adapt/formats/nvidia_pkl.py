"""Safe reader for NVIDIA ``.pkl`` snapshots of StyleGAN2 networks (stylegan2-ada-pytorch, or stylegan3's
``training/networks_stylegan2.py``); StyleGAN3 networks are recognised and refused.

NVIDIA's snapshots are ``pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...))``
of modules whose classes are "persistent": each one reduces to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` carries the *full source code* of
the network module (``module_src``), the bare class name (``orig_class.__name__``: 'Generator',
'SynthesisBlock', ...; no module name is stored) and the instance ``__dict__`` (``state``). NVIDIA's own
loader ``exec``s that source, which is arbitrary code execution on an untrusted file and needs NVIDIA's
``torch_utils``/``dnnlib`` packages on the path. StyleGAN2 and StyleGAN3 generators are both called
'Generator'; the family is told from the classes of the sub-modules (StyleGAN3's synthesis network starts with
a ``SynthesisInput`` and has ``L0_36_512``-style layers) and the init kwargs (``magnitude_ema_beta``, ...).

This module never executes anything from the file and never falls back to ``pickle.load``:

* :class:`SafeNvidiaUnpickler` resolves globals through an allow-list (:data:`ALLOWED_GLOBALS`); the persistent
  objects become inert :class:`PersistentObjectStub` records (class name, state, source text kept as a
  string), tensors are rebuilt by torch's own rebuild helpers, and every nested storage blob is read with
  ``torch.load(..., weights_only=True)``. Anything else raises :class:`BlockedGlobalError`
  (a :class:`pickle.UnpicklingError`) naming the global.
* :func:`read_nvidia_pkl` flattens the stubs into plain state dicts (``G``, ``D``, ``G_ema``; the
  ``augment_pipe`` is ignored), with a file-size cap and transparent gzip support.
* :func:`generator_config_from_init_kwargs` / :func:`discriminator_config_from_init_kwargs` turn NVIDIA's
  constructor arguments into our ``Generator`` / ``DiscriminatorConfig`` arguments and refuse what the
  rosinality layout cannot represent (conditional nets, non-skip G, non-resnet D, StyleGAN3, ...).
* :func:`nvidia_g_to_rosinality` / :func:`nvidia_d_to_rosinality` rename and reshape the tensors to
  rosinality's state-dict names (the mapping is written out in ``nvidia_g_to_rosinality`` and ``nvidia_d_to_rosinality`` below).
* :func:`load` does all of the above and returns a ``StyleGANCheckpoint`` (the format registry's entry point).

Typical use::

    nets = read_nvidia_pkl(path)
    g = nets["G_ema"]
    cfg = generator_config_from_init_kwargs(g["init_kwargs"], class_name=g["class_name"], classes=g["classes"],
                                            state_dict=g["state_dict"], source=path)
    sd, w_avg = nvidia_g_to_rosinality(g["state_dict"], size=cfg["size"], n_mlp=cfg["n_mlp"], source=path)
    G = Generator(**cfg); G.load_state_dict(sd, strict=True); G.set_latent_avg(w_avg)

No NVIDIA code is used or reproduced. tests/test_nvidia_pkl.py checks the result against outputs of NVIDIA's
own generator and discriminator for snapshots written by NVIDIA's own code (tools/fixtures/make_nvidia_fixture.py).
"""
from __future__ import annotations

import collections
import gzip
import io
import math
import os
import pickle
import re
import warnings
from typing import Any, Mapping

import torch

from adapt_common.files import SizeLimitError, require_finite, require_size

from .architecture import CheckpointError

__all__ = [
    "load",
    "DEFAULT_MAX_BYTES",
    "ALLOWED_GLOBALS",
    "NvidiaPickleError",
    "BlockedGlobalError",
    "PersistentObjectStub",
    "EasyDictStub",
    "SafeNvidiaUnpickler",
    "safe_load_nvidia_pickle",
    "read_nvidia_pkl",
    "flatten_persistent_state",
    "module_classes",
    "synthesis_kwargs_of",
    "MAX_RESOLUTION",
    "MAX_LATENT_DIM",
    "MAX_CHANNELS",
    "MAX_CHANNEL_BASE",
    "MAX_MAPPING_LAYERS",
    "generator_config_from_init_kwargs",
    "discriminator_config_from_init_kwargs",
    "conversion_notes",
    "nvidia_g_to_rosinality",
    "nvidia_d_to_rosinality",
    "default_fir_kernel",
]

#: Largest file (and largest decompressed gzip payload) :func:`read_nvidia_pkl` accepts by default. A 1024-px
#: config-f snapshot with G, D and G_ema is about 360 MB.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3

_REFUSAL = "the file is not a StyleGAN2-ADA pickle or contains code the loader refuses to run"


class NvidiaPickleError(CheckpointError):
    """The file cannot be read as, or converted from, an NVIDIA StyleGAN2-ADA pickle (message names the file).

    A :class:`~gan_adapt.formats.architecture.CheckpointError`, hence a ``ValueError``.
    """


class BlockedGlobalError(pickle.UnpicklingError, CheckpointError):
    """The pickle references a global that is not on the allow-list; nothing from it was called.

    Both a ``pickle.UnpicklingError`` and a ``CheckpointError``.
    """


# ----------------------------------------------------------------------------------------------------------
# Inert stand-ins for NVIDIA's classes


class PersistentObjectStub:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` becomes: an inert record.

    ``module_src`` is kept as a string only for inspection; it is never compiled or executed.
    """

    __slots__ = ("class_name", "state", "module_src", "meta_type", "version")

    def __init__(self, meta: Any):
        if not isinstance(meta, dict):
            raise pickle.UnpicklingError(f"persistent object metadata must be a dict, got {type(meta).__name__}")
        self.meta_type = meta.get("type")
        self.version = meta.get("version")
        self.class_name = meta.get("class_name")
        self.state = meta.get("state")
        self.module_src = meta.get("module_src")
        if self.meta_type != "class" or not isinstance(self.class_name, str):
            raise pickle.UnpicklingError(
                f"unsupported persistent object (type={self.meta_type!r}, class_name={self.class_name!r})")
        if not isinstance(self.state, dict):
            raise pickle.UnpicklingError(f"persistent object {self.class_name} has no dict state")
        if self.module_src is not None and not isinstance(self.module_src, str):
            raise pickle.UnpicklingError(f"persistent object {self.class_name}: module_src is not a string")

    def __repr__(self):
        return f"<PersistentObjectStub {self.class_name}>"


class EasyDictStub(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict with attribute access.

    Missing attributes raise ``AttributeError`` (not ``KeyError``): pickle probes objects with
    ``getattr(obj, "__setstate__", None)``.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


def _make_persistent_stub(meta):
    return PersistentObjectStub(meta)


def _load_storage_from_bytes(b):
    """Replacement for ``torch.storage._load_from_bytes``: a nested ``torch.save`` blob, read weights-only."""
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage payload must be bytes, got {type(b).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
        return torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:  # numpy >= 2
        from numpy._core import multiarray as ma
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
    objs = {"scalar": ma.scalar, "dtype": np.dtype, "_reconstruct": ma._reconstruct, "ndarray": np.ndarray}
    return {(mod, name): obj for mod in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
            for name, obj in objs.items()}


def _torch_allowed() -> dict[tuple[str, str], Any]:
    import torch._utils as tu

    out = {("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
           ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter}
    for name in ("_rebuild_tensor", "_rebuild_parameter_with_state"):  # older / newer torch writers
        if hasattr(tu, name):
            out[("torch._utils", name)] = getattr(tu, name)
    return out


#: (module, name) -> object. The only globals a pickle may reference. ``builtins.set``/``frozenset`` are
#: needed because Python <= 3.7 (what stylegan2-ada-pytorch used) writes protocol 3, where a module's
#: ``_non_persistent_buffers_set`` is pickled as ``builtins.set([...])`` instead of the EMPTY_SET opcode.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _make_persistent_stub,
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    ("dnnlib", "EasyDict"): EasyDictStub,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    **_torch_allowed(),
    **_numpy_allowed(),
}


class SafeNvidiaUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` is the allow-list :data:`ALLOWED_GLOBALS`.

    Never imports a module named by the pickle and never runs embedded source.
    """

    allowed = ALLOWED_GLOBALS

    def find_class(self, module, name):
        obj = self.allowed.get((module, name))
        if obj is not None:
            return obj
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = (" (this looks like a TensorFlow StyleGAN/StyleGAN2 pickle; convert it to a PyTorch checkpoint "
                    "first)")
        elif module.startswith("torch_utils.persistence"):
            hint = " (unknown torch_utils.persistence entry)"
        raise BlockedGlobalError(f"blocked global {module}.{name}: {_REFUSAL}{hint}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(
            f"blocked persistent id {str(pid)[:80]!r}: StyleGAN2-ADA pickles do not use persistent ids "
            "(is this a torch.save file?)")


def safe_load_nvidia_pickle(file) -> Any:
    """Unpickle an already opened binary stream with :class:`SafeNvidiaUnpickler` (no size cap, no gzip)."""
    return SafeNvidiaUnpickler(file).load()


# ----------------------------------------------------------------------------------------------------------
# Reading the file


class _CappedReader(io.RawIOBase):
    """Wraps a binary stream and raises once more than ``limit`` bytes were read (gzip bombs)."""

    def __init__(self, raw, limit: int, path: str):
        super().__init__()
        self._raw, self._limit, self._path, self._n = raw, limit, path, 0

    def readable(self):
        return True

    def _count(self, n):
        self._n += n
        if self._n > self._limit:
            raise NvidiaPickleError(f"{self._path}: decompressed data exceeds the size cap of {self._limit} bytes")

    def read(self, size=-1):
        data = self._raw.read(size)
        self._count(len(data))
        return data

    def readinto(self, b):
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self._count(n)
        return n

    def readline(self, size=-1):
        data = self._raw.readline(size)
        self._count(len(data))
        return data


def _check_magic(head: bytes, path: str) -> None:
    if head.startswith(b"PK\x03\x04"):
        raise NvidiaPickleError(f"{path}: this is a zip archive (torch.save format, e.g. a rosinality .pt "
                                "checkpoint), not an NVIDIA pickle")
    if not head:
        raise NvidiaPickleError(f"{path}: the file is empty")
    if head[:1] != b"\x80":
        raise NvidiaPickleError(f"{path}: not a pickle of protocol 2 or newer (first bytes {head[:4]!r}); "
                                "NVIDIA StyleGAN2-ADA snapshots are written with protocol 3 or 4")


def _load_top(path: str, max_bytes: int):
    size = os.path.getsize(path)
    if size > max_bytes:
        raise NvidiaPickleError(f"{path}: file is {size} bytes, larger than the size cap of {max_bytes} bytes "
                                "(pass a larger max_bytes if the file is trusted to be a checkpoint)")
    with open(path, "rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        if head.startswith(b"\x1f\x8b"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                stream = io.BufferedReader(_CappedReader(gz, max_bytes, path), buffer_size=1 << 20)
                _check_magic(stream.peek(4)[:4], path)
                return SafeNvidiaUnpickler(stream).load()
        _check_magic(head, path)
        return SafeNvidiaUnpickler(raw).load()


def _plain(obj, depth=0):
    """EasyDict/OrderedDict -> dict, numpy scalars -> Python numbers, recursively (for init kwargs)."""
    if depth > 32:
        raise NvidiaPickleError("init kwargs nested too deeply")
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, depth + 1) for v in obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        try:
            return obj.item()
        except Exception:  # pragma: no cover
            return obj
    return obj


# Positional-argument names of NVIDIA's StyleGAN2 constructors, in order (used only if a network was built
# with positional arguments; train.py always uses keywords).
_G_ARG_NAMES = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_D_ARG_NAMES = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")


def _init_kwargs_of(stub: PersistentObjectStub) -> dict:
    state = stub.state
    kwargs = _plain(state.get("_init_kwargs") or {})
    args = _plain(tuple(state.get("_init_args") or ()))
    if not isinstance(kwargs, dict):
        raise NvidiaPickleError(f"{stub.class_name}: _init_kwargs is not a dict")
    if args:
        names = {"Generator": _G_ARG_NAMES, "Discriminator": _D_ARG_NAMES}.get(stub.class_name, ())
        if len(args) > len(names):
            kwargs = dict(kwargs, _init_args=list(args))
        else:
            kwargs = {**dict(zip(names, args)), **kwargs}
    return kwargs


def module_classes(stub: PersistentObjectStub) -> dict[str, str]:
    """{sub-module path ('' for the root, 'synthesis.b4', ...): class name} of a module tree of stubs.

    NVIDIA's persistence records only the bare class name of each module (``orig_class.__name__``, e.g.
    'Generator' for both StyleGAN2 and StyleGAN3), not its module, so the classes of the sub-modules are what
    tells the network families apart.
    """
    out: dict[str, str] = {}

    def walk(node, path, depth):
        if depth > 64 or len(out) > 100_000:
            raise NvidiaPickleError("module tree nested too deeply or too large")
        out[path] = node.class_name
        for name, child in (node.state.get("_modules") or {}).items():
            if isinstance(child, PersistentObjectStub):
                walk(child, f"{path}.{name}" if path else str(name), depth + 1)

    walk(stub, "", 0)
    return out


def flatten_persistent_state(stub: PersistentObjectStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Module tree of stubs -> flat state dict (``_parameters``, persistent ``_buffers``, ``_modules``)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(node, pre, depth):
        if depth > 64:
            raise NvidiaPickleError("module tree nested too deeply")
        if id(node) in seen:
            raise NvidiaPickleError(f"module tree has a cycle at {pre or '<root>'}")
        seen.add(id(node))
        state = node.state
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        for group, skip in (("_parameters", ()), ("_buffers", non_persistent)):
            entries = state.get(group) or {}
            if not isinstance(entries, dict):
                raise NvidiaPickleError(f"{pre or '<root>'}: {group} is not a dict")
            for name, t in entries.items():
                if t is None or name in skip:
                    continue
                if not isinstance(t, torch.Tensor):
                    raise NvidiaPickleError(f"{pre}{name}: expected a tensor, got {type(t).__name__}")
                out[pre + name] = t.detach()
        children = state.get("_modules") or {}
        if not isinstance(children, dict):
            raise NvidiaPickleError(f"{pre or '<root>'}: _modules is not a dict")
        for name, child in children.items():
            if child is None:
                continue
            if not isinstance(child, PersistentObjectStub):
                raise NvidiaPickleError(f"{pre}{name}: sub-module of unsupported type {type(child).__name__}")
            walk(child, f"{pre}{name}.", depth + 1)

    walk(stub, prefix, 0)
    return out


def read_nvidia_pkl(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, dict]:
    """Read an NVIDIA stylegan2-ada-pytorch / stylegan3 snapshot without executing anything from it.

    Returns ``{"G": ..., "D": ..., "G_ema": ...}`` for the networks present, each
    ``{"class_name": str, "classes": {sub-module path: class name}, "init_kwargs": dict,
    "state_dict": {name: tensor}}`` (NVIDIA key names, CPU tensors; class names bare, as NVIDIA stores them).
    ``augment_pipe`` and ``training_set_kwargs`` are ignored. A pickle of a single network (not a snapshot
    dict) is returned under ``"G_ema"`` (generator) or ``"D"`` (discriminator).

    Raises :class:`BlockedGlobalError` (a ``pickle.UnpicklingError``) if the file references anything outside
    the allow-list, and :class:`NvidiaPickleError` (a ``ValueError``) for oversized, truncated, corrupt or
    otherwise unusable files; both messages start with the path. gzip-compressed pickles (``.pkl.gz``) are
    detected by their magic bytes; the size cap also applies to the decompressed data.
    """
    path = os.fspath(path)
    try:
        top = _load_top(path, max_bytes)
    except (BlockedGlobalError, NvidiaPickleError) as e:
        msg = str(e)
        if msg.startswith(path):
            raise
        raise type(e)(f"{path}: {msg}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except RecursionError as e:
        raise NvidiaPickleError(f"{path}: pickle nested too deeply ({e})") from None
    except Exception as e:  # truncated, corrupt, wrong argument types for the allowed callables, ...
        truncated = isinstance(e, EOFError) or "truncat" in str(e) or "ran out of input" in str(e).lower()
        what = "truncated" if truncated else "truncated, corrupt or not an NVIDIA pickle"
        raise NvidiaPickleError(f"{path}: could not read the file: it is {what} ({type(e).__name__}: {e})") from e

    if isinstance(top, PersistentObjectStub):
        top = {("D" if top.class_name.endswith("Discriminator") else "G_ema"): top}
    if not isinstance(top, dict):
        raise NvidiaPickleError(f"{path}: expected a snapshot dict with G/D/G_ema, got {type(top).__name__}")
    result = {}
    for key in ("G", "D", "G_ema"):
        obj = top.get(key)
        if obj is None:
            continue
        if not isinstance(obj, PersistentObjectStub):
            raise NvidiaPickleError(f"{path}: {key} is a {type(obj).__name__}, not a persistent network object")
        try:
            result[key] = {"class_name": obj.class_name, "classes": module_classes(obj),
                           "init_kwargs": _init_kwargs_of(obj), "state_dict": flatten_persistent_state(obj)}
        except NvidiaPickleError as e:
            raise NvidiaPickleError(f"{path}: {key}: {e}") from None
    if not result:
        keys = ", ".join(sorted(map(str, top.keys())))[:200]
        raise NvidiaPickleError(f"{path}: no G, D or G_ema network in the pickle (top-level keys: {keys})")
    return result


# ----------------------------------------------------------------------------------------------------------
# Hyper-parameters

# Synthesis arguments that only StyleGAN3 (alias-free) networks have.
_SG3_SYNTHESIS_KEYS = {"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_critical", "first_cutoff",
                       "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "filter_size",
                       "lrelu_upsampling", "num_layers"}
# Arguments of NVIDIA's Generator itself; the rest are synthesis arguments (a ``synthesis_kwargs`` dict in
# stylegan2-ada-pytorch, top-level keywords in the stylegan3 repository).
_G_OWN_ARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"}
_DEFAULT_FILTER = [1, 3, 3, 1]

#: Largest sizes accepted from a pickle's init kwargs, checked before anything is built from them. Real nets:
#: 1024 px (some 2048), w_dim 512, channel_max 512 (1024 for StyleGAN3-R), channel_base 32768 (65536).
MAX_RESOLUTION = 4096
MAX_LATENT_DIM = 4096
MAX_CHANNELS = 4096
MAX_CHANNEL_BASE = 1 << 20
MAX_MAPPING_LAYERS = 64

_SUPPORTED = ("StyleGAN2 networks: stylegan2-ada-pytorch's training/networks.py or stylegan3's "
              "training/networks_stylegan2.py (train.py --cfg=stylegan2)")


def _src(source) -> str:
    return os.fspath(source) if source is not None else "NVIDIA pickle"


def _sub(kw: Mapping, name: str, src: str) -> dict:
    v = kw.get(name) or {}
    if not isinstance(v, Mapping):
        raise NvidiaPickleError(f"{src}: {name} must be a dict, got {type(v).__name__}")
    return dict(v)


def _check_filter(value, what: str, src: str) -> None:
    if value is None:
        return
    taps = value.tolist() if isinstance(value, torch.Tensor) else list(value)
    if [float(x) for x in taps] != [float(x) for x in _DEFAULT_FILTER]:
        raise NvidiaPickleError(f"{src}: {what} resample_filter={taps} is not supported; the rosinality layout uses "
                                f"the StyleGAN2 filter {_DEFAULT_FILTER}")


def _int(kw: Mapping, name: str, default, src: str):
    v = kw.get(name, default)
    if v is None:
        return None
    try:
        ok = not isinstance(v, bool) and int(v) == v
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NvidiaPickleError(f"{src}: {name}={v!r} is not an integer")
    return int(v)


def synthesis_kwargs_of(kw: Mapping, src: str = "NVIDIA pickle") -> dict:
    """A Generator's synthesis arguments, in either of NVIDIA's layouts (see ``_G_OWN_ARGS``)."""
    top = {k: v for k, v in kw.items() if k not in _G_OWN_ARGS and k != "synthesis_kwargs"}
    return {**top, **_sub(kw, "synthesis_kwargs", src)}


def _children(classes: Mapping[str, str], parent: str) -> dict[str, str]:
    """{child name: class} of the direct sub-modules of ``parent`` ('' = the root)."""
    pre = parent + "." if parent else ""
    return {p[len(pre):]: c for p, c in classes.items() if p.startswith(pre) and "." not in p[len(pre):]}


def _stylegan3_evidence(classes: Mapping[str, str] | None, synthesis: Mapping) -> list[str]:
    found = []
    if classes is not None:
        layers = _children(classes, "synthesis")
        if "SynthesisInput" in layers.values():
            found.append("its synthesis network starts with a SynthesisInput (Fourier features)")
        named = sorted((n for n in layers if re.fullmatch(r"L\d+_\d+_\d+", n)), key=lambda n: int(n[1:].split("_")[0]))
        if named:
            found.append(f"alias-free layers {', '.join(named[:3])}{' ...' if len(named) > 3 else ''}")
    keys = sorted(_SG3_SYNTHESIS_KEYS & set(synthesis))
    if keys:
        found.append(f"StyleGAN3 init arguments {', '.join(keys)}")
    return found


def _check_generator_family(class_name: str | None, classes: Mapping[str, str] | None, synthesis: Mapping,
                            src: str) -> None:
    """Refuse anything but an NVIDIA StyleGAN2 generator, judged by the sub-module classes and init kwargs.

    The class name alone cannot tell: StyleGAN2 and StyleGAN3 generators are both pickled as 'Generator'.
    """
    sg3 = _stylegan3_evidence(classes, synthesis)
    if sg3:
        raise NvidiaPickleError(
            f"{src}: this is a StyleGAN3 (alias-free) generator, from NVlabs/stylegan3's "
            f"training/networks_stylegan3.py ({'; '.join(sg3)}). It cannot be converted to the StyleGAN2 "
            f"layout this tool uses; supported are {_SUPPORTED}")
    if class_name is not None and class_name != "Generator":
        raise NvidiaPickleError(f"{src}: unsupported generator class {class_name!r}; supported are {_SUPPORTED}, "
                                "whose generator class is 'Generator'")
    if classes is None:
        return
    blocks = _children(classes, "synthesis")
    bad = {n: c for n, c in blocks.items() if c != "SynthesisBlock" or not re.fullmatch(r"b\d+", n)}
    if (classes.get("synthesis") != "SynthesisNetwork" or classes.get("mapping") != "MappingNetwork"
            or not blocks or bad):
        seen = ", ".join(f"{n}: {c}" for n, c in sorted(classes.items()) if n.count(".") <= 1 and n)[:300]
        raise NvidiaPickleError(f"{src}: a 'Generator' that is not StyleGAN2's (expected a MappingNetwork and a "
                                f"SynthesisNetwork of SynthesisBlocks b4, b8, ...; found {seen}); supported are "
                                f"{_SUPPORTED}")


def _check_discriminator_family(class_name: str | None, classes: Mapping[str, str] | None, src: str) -> None:
    if class_name is not None and class_name != "Discriminator":
        raise NvidiaPickleError(f"{src}: unsupported discriminator class {class_name!r}; supported are {_SUPPORTED}")
    if classes is None:
        return
    top = {n: c for n, c in _children(classes, "").items() if n and n != "mapping"}
    ok = top and all(c == ("DiscriminatorEpilogue" if n == "b4" else "DiscriminatorBlock") for n, c in top.items())
    if not ok or "b4" not in top:
        seen = ", ".join(f"{n}: {c}" for n, c in sorted(top.items()))[:300]
        raise NvidiaPickleError(f"{src}: a 'Discriminator' that is not StyleGAN2's (expected DiscriminatorBlocks "
                                f"and a DiscriminatorEpilogue b4; found {seen})")


def generator_config_from_init_kwargs(kw: Mapping, *, class_name: str | None = None,
                                      classes: Mapping[str, str] | None = None,
                                      state_dict: Mapping[str, torch.Tensor] | None = None,
                                      source: str | os.PathLike | None = None) -> dict:
    """NVIDIA ``Generator`` constructor arguments -> our ``Generator(**config)`` arguments.

    Returns ``dict(size, style_dim, n_mlp, channel_base, channel_max, lr_mlp, conv_clamp)``. The channel table
    is ``min(channel_base // res, channel_max)`` in both code bases (rosinality's ``channel_multiplier`` m is
    ``channel_base = 16384 * m``, ``channel_max = 512``; config-f is 32768). ``n_mlp`` is
    ``mapping_kwargs.num_layers`` (default 8; the ada ``auto`` config uses 2).

    ``conv_clamp`` is NVIDIA's activation clamp (256 for every ada-pytorch-trained net, None for nets converted
    from TF). rosinality networks never clamp: drop the key (or set it to None) for rosinality-faithful
    behaviour, keep it to reproduce NVIDIA's outputs exactly for extreme activations.

    Both keyword layouts are read: stylegan2-ada-pytorch's (``synthesis_kwargs={...}``) and the stylegan3
    repository's (synthesis arguments as top-level keywords). ``class_name`` (bare, as NVIDIA pickles it),
    ``classes`` (``{sub-module path: class}``, see :func:`module_classes`) and ``state_dict`` (NVIDIA names),
    when given, are validated too: the network family is judged from the sub-module classes and the init
    kwargs, since a StyleGAN3 generator's class is also named 'Generator'. Sizes are bounded
    (:data:`MAX_RESOLUTION` ...) before anything is built from them. Raises :class:`NvidiaPickleError` (a
    ``ValueError``; ``SizeLimitError`` for out-of-range sizes) naming ``source`` for anything the rosinality
    layout cannot represent: StyleGAN3 and other non-StyleGAN2 networks, conditional nets (``c_dim > 0``),
    ``architecture != "skip"``, ``img_channels != 3``, ``z_dim != w_dim``, other layer types, custom resample
    filters.
    """
    src = _src(source)
    kw = dict(kw)
    mapping, synthesis = _sub(kw, "mapping_kwargs", src), synthesis_kwargs_of(kw, src)
    _check_generator_family(class_name, classes, synthesis, src)
    c_dim = _int(kw, "c_dim", 0, src) or 0
    if c_dim > 0:
        raise NvidiaPickleError(f"{src}: conditional generator (c_dim={c_dim}) is not supported: the rosinality "
                                "generator has no label embedding")
    img_channels = _int(kw, "img_channels", 3, src)
    if img_channels != 3:
        raise NvidiaPickleError(f"{src}: img_channels={img_channels} is not supported (RGB only)")
    if "img_resolution" not in kw:
        raise NvidiaPickleError(f"{src}: generator init kwargs lack img_resolution")
    size = require_size("img_resolution", kw["img_resolution"], MAX_RESOLUTION, src, minimum=4)
    if size & (size - 1):
        raise NvidiaPickleError(f"{src}: img_resolution={size} is not a power of two >= 4")
    w_dim = require_size("w_dim", kw.get("w_dim", 512), MAX_LATENT_DIM, src, minimum=1)
    z_dim = require_size("z_dim", kw.get("z_dim", w_dim), MAX_LATENT_DIM, src, minimum=1)
    if z_dim != w_dim:
        raise NvidiaPickleError(f"{src}: z_dim={z_dim} differs from w_dim={w_dim}; the rosinality mapping network "
                                "uses one style_dim for both")
    architecture = synthesis.get("architecture", "skip")
    if architecture != "skip":
        raise NvidiaPickleError(f"{src}: generator architecture={architecture!r} is not supported; the rosinality "
                                "generator is the 'skip' architecture")
    layer_features = mapping.get("layer_features")
    if layer_features not in (None, w_dim):
        raise NvidiaPickleError(f"{src}: mapping_kwargs.layer_features={layer_features} differs from w_dim={w_dim}")
    for key, expected in (("activation", "lrelu"),):
        for where, d in (("mapping_kwargs", mapping), ("synthesis_kwargs", synthesis)):
            if d.get(key, expected) != expected:
                raise NvidiaPickleError(f"{src}: {where}.{key}={d[key]!r} is not supported (only {expected!r})")
    if synthesis.get("kernel_size", 3) != 3:
        raise NvidiaPickleError(f"{src}: synthesis kernel_size={synthesis['kernel_size']} is not supported (only 3)")
    if not synthesis.get("use_noise", True):
        raise NvidiaPickleError(f"{src}: generators without noise inputs (use_noise=False) are not supported")
    _check_filter(synthesis.get("resample_filter"), "synthesis", src)
    n_mlp = require_size("mapping_kwargs.num_layers", mapping.get("num_layers", 8), MAX_MAPPING_LAYERS, src,
                         minimum=1)
    channel_base = require_size("channel_base", synthesis.get("channel_base", 32768), MAX_CHANNEL_BASE, src,
                                minimum=1)
    channel_max = require_size("channel_max", synthesis.get("channel_max", 512), MAX_CHANNELS, src, minimum=1)
    if channel_base // size < 1:
        raise NvidiaPickleError(f"{src}: channel_base={channel_base}, channel_max={channel_max} give no channels "
                                f"at {size} px")
    lr_mlp = float(mapping.get("lr_multiplier", 0.01))
    conv_clamp = synthesis.get("conv_clamp")
    config = dict(size=size, style_dim=w_dim, n_mlp=n_mlp, channel_base=channel_base, channel_max=channel_max,
                  lr_mlp=lr_mlp, conv_clamp=None if conv_clamp is None else float(conv_clamp))
    if state_dict is not None:
        _check_g_state_against_config(state_dict, config, src)
    return config


def _channels(size: int, channel_base: int, channel_max: int) -> dict[int, int]:
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(size)) + 1)}


def _check_g_state_against_config(sd: Mapping[str, torch.Tensor], cfg: dict, src: str) -> None:
    n_fc = len([k for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    if n_fc != cfg["n_mlp"]:
        raise NvidiaPickleError(f"{src}: init kwargs say {cfg['n_mlp']} mapping layers but the weights have {n_fc}")
    res = sorted({int(m.group(1)) for k in sd for m in [re.match(r"synthesis\.b(\d+)\.", k)] if m})
    if not res or res[-1] != cfg["size"]:
        raise NvidiaPickleError(f"{src}: init kwargs say img_resolution={cfg['size']} but the synthesis blocks are "
                                f"{res}")
    ch = _channels(cfg["size"], cfg["channel_base"], cfg["channel_max"])
    for r in res:
        w = sd.get(f"synthesis.b{r}.conv1.weight")
        if w is not None and w.shape[0] != ch[r]:
            raise NvidiaPickleError(f"{src}: synthesis.b{r} has {w.shape[0]} channels but channel_base="
                                    f"{cfg['channel_base']}, channel_max={cfg['channel_max']} give {ch[r]}")


def discriminator_config_from_init_kwargs(kw: Mapping, *, class_name: str | None = None,
                                          classes: Mapping[str, str] | None = None,
                                          state_dict: Mapping[str, torch.Tensor] | None = None,
                                          source: str | os.PathLike | None = None) -> dict:
    """NVIDIA ``Discriminator`` constructor arguments -> ``DiscriminatorConfig(**config)`` arguments.

    Returns ``dict(size, channel_base, channel_max, stddev_group, stddev_feat)``. ``stddev_group`` is NVIDIA's
    ``epilogue_kwargs.mbstd_group_size`` (default 4; ada's paper256/paper512 configs use 8, cifar 32): it has
    no weights, so it is carried over instead of refused; rosinality's own Discriminator hard-codes 4.
    ``mbstd_num_channels`` must be 1 (rosinality's final conv takes exactly one extra channel).

    Refuses (:class:`NvidiaPickleError`): conditional D (``c_dim > 0``), ``architecture != "resnet"``,
    ``img_channels != 3``, other D classes, custom resample filters. NVIDIA's ``conv_clamp`` (256 for
    ada-trained nets) has no counterpart in the rosinality D; see :func:`conversion_notes`.
    """
    src = _src(source)
    _check_discriminator_family(class_name, classes, src)
    kw = dict(kw)
    epilogue, block = _sub(kw, "epilogue_kwargs", src), _sub(kw, "block_kwargs", src)
    c_dim = _int(kw, "c_dim", 0, src) or 0
    if c_dim > 0:
        raise NvidiaPickleError(f"{src}: conditional discriminator (c_dim={c_dim}) is not supported: the rosinality "
                                "discriminator has no label projection")
    img_channels = _int(kw, "img_channels", 3, src)
    if img_channels != 3:
        raise NvidiaPickleError(f"{src}: img_channels={img_channels} is not supported (RGB only)")
    architecture = kw.get("architecture", "resnet")
    if architecture != "resnet":
        raise NvidiaPickleError(f"{src}: discriminator architecture={architecture!r} is not supported; the "
                                "rosinality discriminator is the 'resnet' architecture")
    size = require_size("discriminator img_resolution", kw.get("img_resolution"), MAX_RESOLUTION, src, minimum=8)
    if size & (size - 1):
        raise NvidiaPickleError(f"{src}: discriminator img_resolution={size} is not a power of two >= 8")
    group = epilogue.get("mbstd_group_size", 4)
    if group is None or isinstance(group, bool) or int(group) != group or int(group) < 1:
        raise NvidiaPickleError(f"{src}: mbstd_group_size={group!r} is not supported (need a positive integer; "
                                "rosinality uses 4)")
    feat = epilogue.get("mbstd_num_channels", 1)
    if feat != 1:
        raise NvidiaPickleError(f"{src}: mbstd_num_channels={feat} is not supported; the rosinality discriminator "
                                "appends exactly one minibatch-stddev channel")
    for where, d in (("block_kwargs", block), ("epilogue_kwargs", epilogue), ("", kw)):
        if d.get("activation", "lrelu") != "lrelu":
            raise NvidiaPickleError(f"{src}: {where or 'discriminator'} activation={d['activation']!r} is not "
                                    "supported (only 'lrelu')")
    _check_filter(block.get("resample_filter"), "discriminator", src)
    channel_base = require_size("discriminator channel_base", kw.get("channel_base", 32768), MAX_CHANNEL_BASE, src,
                                minimum=1)
    channel_max = require_size("discriminator channel_max", kw.get("channel_max", 512), MAX_CHANNELS, src, minimum=1)
    config = dict(size=size, channel_base=channel_base, channel_max=channel_max, stddev_group=int(group),
                  stddev_feat=1)
    if state_dict is not None:
        ch = _channels(size, channel_base, channel_max)
        w = state_dict.get(f"b{size}.fromrgb.weight")
        if w is None or w.shape[0] != ch[size]:
            raise NvidiaPickleError(f"{src}: discriminator weights do not match img_resolution={size}, "
                                    f"channel_base={channel_base}, channel_max={channel_max}")
    return config


def conversion_notes(g_kwargs: Mapping | None = None, d_kwargs: Mapping | None = None) -> list[str]:
    """Human-readable differences between the NVIDIA network and its rosinality conversion (for the CLI)."""
    notes = []
    if g_kwargs is not None:
        syn = synthesis_kwargs_of(g_kwargs)
        clamp = syn.get("conv_clamp")
        if clamp is not None:
            notes.append(f"G: NVIDIA clamps activations to +-{clamp} (conv_clamp); rosinality networks never clamp. "
                         "Outputs differ only for extreme activations. To reproduce NVIDIA, build the generator "
                         "with conv_clamp (nvidia_pkl.load(..., conv_clamp=True)).")
        if syn.get("num_fp16_res"):
            notes.append(f"G: NVIDIA ran the top {syn['num_fp16_res']} resolutions in fp16 on CUDA; the converted "
                         "weights are float32 and run in float32.")
        notes.append("G: mapping.w_avg (tracked during training) is returned as latent_avg, the truncation centre.")
    if d_kwargs is not None:
        clamp = d_kwargs.get("conv_clamp")
        if clamp is not None:
            notes.append(f"D: NVIDIA clamps conv activations to +-{clamp}; the rosinality discriminator does not.")
        group = dict(d_kwargs.get("epilogue_kwargs") or {}).get("mbstd_group_size", 4)
        if group != 4:
            notes.append(f"D: minibatch-stddev group size is {group} (rosinality's default is 4); pass "
                         f"stddev_group={group} to keep NVIDIA's behaviour.")
    return notes


# ----------------------------------------------------------------------------------------------------------
# Key mapping


def default_fir_kernel(gain: float = 1.0) -> torch.Tensor:
    """``outer([1,3,3,1]) / 64 * gain``: NVIDIA's ``resample_filter`` (gain 1), rosinality's up-conv
    ``blur.kernel`` and ToRGB ``upsample.kernel`` (gain 4) and D ``Blur`` kernels (gain 1)."""
    f = torch.tensor(_DEFAULT_FILTER, dtype=torch.float32)
    return torch.outer(f, f) / f.sum() ** 2 * gain


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


class _Consumer:
    """Takes tensors from an NVIDIA state dict by name, checking shapes; reports what is missing or left."""

    def __init__(self, sd: Mapping[str, torch.Tensor], src: str, what: str):
        self.sd, self.src, self.what = dict(sd), src, what
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple | None = None) -> torch.Tensor:
        t = self.sd.get(key)
        if t is None:
            raise NvidiaPickleError(f"{self.src}: {self.what} weights lack {key!r}")
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise NvidiaPickleError(f"{self.src}: {self.what} tensor {key!r} has shape {tuple(t.shape)}, expected "
                                    f"{tuple(shape)}")
        self.used.add(key)
        return _as_float(t)

    def finish(self) -> None:
        left = []
        ref = default_fir_kernel()
        for key, t in self.sd.items():
            if key in self.used:
                continue
            if key.endswith("resample_filter"):  # no rosinality counterpart; must be the standard filter
                if tuple(t.shape) != (4, 4) or not torch.allclose(t.float(), ref, atol=1e-6):
                    raise NvidiaPickleError(f"{self.src}: {key} is not the standard [1,3,3,1] filter; custom "
                                            "resample filters are not supported")
                continue
            left.append(key)
        if left:
            shown = ", ".join(left[:8]) + (f" (+{len(left) - 8} more)" if len(left) > 8 else "")
            raise NvidiaPickleError(f"{self.src}: {self.what} has weights the rosinality layout cannot hold: {shown} "
                                    "(conditional, non-skip/non-resnet or non-StyleGAN2 network?)")


def _block_resolutions(sd: Mapping[str, torch.Tensor], pattern: str, src: str, what: str) -> list[int]:
    res = sorted({int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m})
    if not res:
        raise NvidiaPickleError(f"{src}: no {what} blocks found")
    expected = [2 ** i for i in range(2, int(math.log2(res[-1])) + 1)]
    if res != expected or res[-1] < 4:
        raise NvidiaPickleError(f"{src}: {what} blocks {res} are not 4, 8, ..., {res[-1]}")
    return res


def nvidia_g_to_rosinality(state_dict: Mapping[str, torch.Tensor], *, size: int | None = None,
                           n_mlp: int | None = None, include_fir_buffers: bool = True,
                           source: str | os.PathLike | None = None
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """NVIDIA ``G``/``G_ema`` state dict -> (rosinality ``g_ema`` state dict, ``latent_avg``).

    Mapping (spec 1.3): ``mapping.fc{i}`` -> ``style.{i+1}``; ``synthesis.b4.const`` -> ``input.input``
    (unsqueeze(0)); ``synthesis.b4.conv1`` -> ``conv1``; block k (resolution 8 * 2**k) ``conv0``/``conv1`` ->
    ``convs.{2k}``/``convs.{2k+1}``; per conv: ``weight`` -> ``conv.weight`` (unsqueeze(0), no flip),
    ``affine`` -> ``conv.modulation``, ``noise_strength`` -> ``noise.weight`` (reshape(1)), ``bias`` ->
    ``activate.bias``, ``noise_const`` [r,r] -> ``noises.noise_{j}`` [1,1,r,r] (j = 0 for b4.conv1, else
    2k+1 / 2k+2); ``b4.torgb`` / ``b{r}.torgb`` -> ``to_rgb1`` / ``to_rgbs.{k}`` (weight unsqueeze(0), bias
    reshape(1,3,1,1), affine -> conv.modulation). ``mapping.w_avg`` is returned separately as ``latent_avg``
    (None if absent).

    NVIDIA's ``resample_filter`` buffers have no counterpart; they are checked to be the standard filter and
    dropped. rosinality's FIR buffers (``convs.{2k}.conv.blur.kernel`` and ``to_rgbs.{k}.upsample.kernel``,
    both ``outer([1,3,3,1])/64*4``) are added when ``include_fir_buffers`` (default), so the result loads with
    ``strict=True``; with ``include_fir_buffers=False`` the caller must fill them from the model defaults.

    ``size``/``n_mlp``, when given, are checked against the weights. Every NVIDIA tensor must be used:
    leftovers (``mapping.embed`` of conditional nets, StyleGAN3 layers, ...) raise :class:`NvidiaPickleError`.
    Tensors are returned as float32 views of the input where possible (no copies).
    """
    src = _src(source)
    c = _Consumer(state_dict, src, "generator")
    n_fc = len([k for k in state_dict if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    if n_fc == 0:
        raise NvidiaPickleError(f"{src}: generator has no mapping.fc* layers")
    if n_mlp is not None and n_fc != n_mlp:
        raise NvidiaPickleError(f"{src}: expected {n_mlp} mapping layers, the weights have {n_fc}")
    res = _block_resolutions(state_dict, r"synthesis\.b(\d+)\.", src, "synthesis")
    if size is not None and res[-1] != size:
        raise NvidiaPickleError(f"{src}: expected a {size}-px generator, the weights go up to {res[-1]} px")

    out: dict[str, torch.Tensor] = {}
    w_dim = None
    for i in range(n_fc):
        w = c.take(f"mapping.fc{i}.weight")
        if w.ndim != 2:
            raise NvidiaPickleError(f"{src}: mapping.fc{i}.weight must be 2-D, got {tuple(w.shape)}")
        w_dim = w.shape[0]
        out[f"style.{i + 1}.weight"] = w
        out[f"style.{i + 1}.bias"] = c.take(f"mapping.fc{i}.bias", (w.shape[0],))
    if out["style.1.weight"].shape[1] != w_dim:
        raise NvidiaPickleError(f"{src}: mapping input size {out['style.1.weight'].shape[1]} != w_dim {w_dim}")
    latent_avg = c.take("mapping.w_avg", (w_dim,)) if "mapping.w_avg" in state_dict else None

    const = c.take("synthesis.b4.const")
    if const.ndim != 3 or tuple(const.shape[1:]) != (4, 4):
        raise NvidiaPickleError(f"{src}: synthesis.b4.const has shape {tuple(const.shape)}, expected [C,4,4]")
    out["input.input"] = const.unsqueeze(0)

    noises: dict[str, torch.Tensor] = {}

    def conv(nv: str, ro: str, in_ch: int, r: int, noise_index: int, up: bool) -> int:
        w = c.take(f"{nv}.weight")
        if w.ndim != 4 or w.shape[1] != in_ch or tuple(w.shape[2:]) != (3, 3):
            raise NvidiaPickleError(f"{src}: {nv}.weight has shape {tuple(w.shape)}, expected [O,{in_ch},3,3]")
        o = w.shape[0]
        out[f"{ro}.conv.weight"] = w.unsqueeze(0)
        if up and include_fir_buffers:
            out[f"{ro}.conv.blur.kernel"] = default_fir_kernel(4.0)
        out[f"{ro}.conv.modulation.weight"] = c.take(f"{nv}.affine.weight", (in_ch, w_dim))
        out[f"{ro}.conv.modulation.bias"] = c.take(f"{nv}.affine.bias", (in_ch,))
        out[f"{ro}.noise.weight"] = c.take(f"{nv}.noise_strength", ()).reshape(1)
        out[f"{ro}.activate.bias"] = c.take(f"{nv}.bias", (o,))
        noises[f"noises.noise_{noise_index}"] = c.take(f"{nv}.noise_const", (r, r))[None, None]
        return o

    def torgb(nv: str, ro: str, in_ch: int, up: bool) -> None:
        out[f"{ro}.bias"] = c.take(f"{nv}.bias", (3,)).reshape(1, 3, 1, 1)
        if up and include_fir_buffers:
            out[f"{ro}.upsample.kernel"] = default_fir_kernel(4.0)
        out[f"{ro}.conv.weight"] = c.take(f"{nv}.weight", (3, in_ch, 1, 1)).unsqueeze(0)
        out[f"{ro}.conv.modulation.weight"] = c.take(f"{nv}.affine.weight", (in_ch, w_dim))
        out[f"{ro}.conv.modulation.bias"] = c.take(f"{nv}.affine.bias", (in_ch,))

    ch = conv("synthesis.b4.conv1", "conv1", const.shape[0], 4, 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", ch, up=False)
    rgb_in = []
    for k, r in enumerate(res[1:]):
        mid = conv(f"synthesis.b{r}.conv0", f"convs.{2 * k}", ch, r, 2 * k + 1, up=True)
        ch = conv(f"synthesis.b{r}.conv1", f"convs.{2 * k + 1}", mid, r, 2 * k + 2, up=False)
        rgb_in.append(ch)
    for k, r in enumerate(res[1:]):
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{k}", rgb_in[k], up=True)
    out.update(noises)
    c.finish()
    return out, latent_avg


def nvidia_d_to_rosinality(state_dict: Mapping[str, torch.Tensor], *, size: int | None = None,
                           include_fir_buffers: bool = True, source: str | os.PathLike | None = None
                           ) -> dict[str, torch.Tensor]:
    """NVIDIA resnet ``D`` state dict -> rosinality ``Discriminator`` state dict.

    ==============================  =====================================================================
    NVIDIA                          rosinality
    ==============================  =====================================================================
    ``b{size}.fromrgb.weight/bias``  ``convs.0.0.weight`` / ``convs.0.1.bias`` (1x1 conv + lrelu)
    ``b{r}.conv0.weight/bias``       ``convs.{k}.conv1.0.weight`` / ``convs.{k}.conv1.1.bias``
    ``b{r}.conv1.weight/bias``       ``convs.{k}.conv2.1.weight`` / ``convs.{k}.conv2.2.bias`` (down)
    ``b{r}.skip.weight``             ``convs.{k}.skip.1.weight`` (no bias)
    ``b4.conv.weight/bias``          ``final_conv.0.weight`` / ``final_conv.1.bias``
    ``b4.fc.weight/bias``            ``final_linear.0.weight/bias``
    ``b4.out.weight/bias``           ``final_linear.1.weight/bias``
    ==============================  =====================================================================

    with k = 1 for r = size, 2 for size/2, ..., down to r = 8. ``convs.{k}.conv2.0.kernel`` and
    ``convs.{k}.skip.0.kernel`` (rosinality's Blur buffers, ``outer([1,3,3,1])/64``) are added when
    ``include_fir_buffers``. All weights are copied unchanged.

    Equivalence (from the architectures; tests/test_nvidia_pkl.py compares D logits with NVIDIA's own):

    * Weight scaling is the same run-time equalised-lr scheme (``1/sqrt(fan_in)``, lr multiplier 1 in D).
    * NVIDIA's resnet block computes ``skip(x)*sqrt(.5) + lrelu(conv1(conv0(x)))*sqrt(2)*sqrt(.5)``; rosinality
      computes ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``: the same. The down-sampling convs blur with the
      [1,3,3,1] filter padded (2,2) then stride 2 (3x3) and, for the 1x1 skip, blur padded (1,1) then keep
      every second pixel, in both.
    * Minibatch stddev: both split the batch into groups of ``min(group, N)`` samples ([G, N/G, F, C/F, H, W]),
      take the population std over the group, average over channels and pixels and **append** the stddev
      channel after the C feature channels, so ``b4.conv.weight[:, C]`` is the stddev input in both.
    * ``b4.fc`` flattens the [C,4,4] conv output in C, H, W order; rosinality's ``out.view(batch, -1)`` uses the
      same order, so ``b4.fc.weight`` is used as-is.
    * Differences: NVIDIA clamps conv activations to ``conv_clamp`` (256 for ada-trained nets) and runs the top
      ``num_fp16_res`` blocks in fp16 on CUDA; the group size comes from ``mbstd_group_size`` (see
      :func:`discriminator_config_from_init_kwargs`).
    """
    src = _src(source)
    c = _Consumer(state_dict, src, "discriminator")
    if any(k.startswith("mapping.") for k in state_dict):
        raise NvidiaPickleError(f"{src}: discriminator has a mapping network (conditional D), which is not supported")
    res = _block_resolutions(state_dict, r"b(\d+)\.", src, "discriminator")
    top = res[-1]
    if top < 8:
        raise NvidiaPickleError(f"{src}: discriminator has no blocks above 4 px")
    if size is not None and top != size:
        raise NvidiaPickleError(f"{src}: expected a {size}-px discriminator, the weights start at {top} px")
    out: dict[str, torch.Tensor] = {}
    w = c.take(f"b{top}.fromrgb.weight")
    if w.ndim != 4 or tuple(w.shape[1:]) != (3, 1, 1):
        raise NvidiaPickleError(f"{src}: b{top}.fromrgb.weight has shape {tuple(w.shape)}, expected [C,3,1,1]")
    ch = w.shape[0]
    out["convs.0.0.weight"] = w
    out["convs.0.1.bias"] = c.take(f"b{top}.fromrgb.bias", (ch,))
    for k, r in enumerate(reversed(res[1:]), start=1):
        p = f"convs.{k}"
        out[f"{p}.conv1.0.weight"] = c.take(f"b{r}.conv0.weight", (ch, ch, 3, 3))
        out[f"{p}.conv1.1.bias"] = c.take(f"b{r}.conv0.bias", (ch,))
        w = c.take(f"b{r}.conv1.weight")
        if w.ndim != 4 or tuple(w.shape[1:]) != (ch, 3, 3):
            raise NvidiaPickleError(f"{src}: b{r}.conv1.weight has shape {tuple(w.shape)}, expected [O,{ch},3,3]")
        o = w.shape[0]
        if include_fir_buffers:
            out[f"{p}.conv2.0.kernel"] = default_fir_kernel(1.0)
        out[f"{p}.conv2.1.weight"] = w
        out[f"{p}.conv2.2.bias"] = c.take(f"b{r}.conv1.bias", (o,))
        if include_fir_buffers:
            out[f"{p}.skip.0.kernel"] = default_fir_kernel(1.0)
        out[f"{p}.skip.1.weight"] = c.take(f"b{r}.skip.weight", (o, ch, 1, 1))
        ch = o
    w = c.take("b4.conv.weight")
    if tuple(w.shape) != (ch, ch + 1, 3, 3):
        extra = w.shape[1] - ch if w.ndim == 4 else "?"
        raise NvidiaPickleError(f"{src}: b4.conv.weight has shape {tuple(w.shape)}, expected ({ch}, {ch + 1}, 3, 3): "
                                f"{extra} minibatch-stddev channels, rosinality supports exactly 1")
    out["final_conv.0.weight"] = w
    out["final_conv.1.bias"] = c.take("b4.conv.bias", (ch,))
    out["final_linear.0.weight"] = c.take("b4.fc.weight", (ch, ch * 16))
    out["final_linear.0.bias"] = c.take("b4.fc.bias", (ch,))
    w = c.take("b4.out.weight")
    if tuple(w.shape) != (1, ch):
        raise NvidiaPickleError(f"{src}: b4.out.weight has shape {tuple(w.shape)}, expected (1, {ch}) "
                                "(a projection discriminator with cmap_dim > 0 is not supported)")
    out["final_linear.1.weight"] = w
    out["final_linear.1.bias"] = c.take("b4.out.bias", (1,))
    c.finish()
    return out


# ----------------------------------------------------------------------------------------------------------
# The format-registry entry point


def load(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, conv_clamp: bool = True):
    """Read an NVIDIA snapshot into a :class:`~gan_adapt.formats.checkpoint.StyleGANCheckpoint`.

    ``g_ema`` comes from ``G_ema`` (or ``G`` if the file has no ``G_ema``), with ``latent_avg`` from
    ``mapping.w_avg``; ``g`` and ``d`` are filled when the file has them. The generator keeps NVIDIA's
    activation clamp (``conv_clamp``, 256 for ada-trained nets) so it renders what NVIDIA's code renders;
    ``conv_clamp=False`` builds it without (rosinality behaviour). The file's value is kept in
    ``meta["nvidia_conv_clamp"]``; the native format stores the clamp, rosinality ``.pt`` files cannot. A discriminator that
    cannot be converted (conditional, non-resnet, ...) is left out and the reason recorded in
    ``meta["notes"]``; a generator that cannot be converted raises :class:`NvidiaPickleError`. NaN/Inf weights
    in any network used raise ``NonFiniteTensorError`` naming the file, the network and the tensor.
    """
    from ..networks import Discriminator, DiscriminatorConfig, Generator
    from .architecture import load_state_dict_strict
    from .checkpoint import StyleGANCheckpoint, finish_generator

    path = os.fspath(path)
    nets = read_nvidia_pkl(path, max_bytes=max_bytes)
    ema_key = "G_ema" if "G_ema" in nets else ("G" if "G" in nets else None)
    if ema_key is None:
        raise NvidiaPickleError(f"{path}: the pickle has a discriminator but no generator (G_ema or G)")
    meta: dict = {"nvidia_networks": sorted(nets)}

    def build_g(key):
        net = nets[key]
        cfg = generator_config_from_init_kwargs(net["init_kwargs"], class_name=net["class_name"],
                                                classes=net["classes"], state_dict=net["state_dict"],
                                                source=f"{path} ({key})")
        require_finite(net["state_dict"], f"{path} ({key})")
        clamp = cfg.pop("conv_clamp")
        meta["nvidia_conv_clamp"] = clamp
        g = Generator(**cfg, conv_clamp=clamp if conv_clamp else None)
        sd, w_avg = nvidia_g_to_rosinality(net["state_dict"], size=cfg["size"], n_mlp=cfg["n_mlp"],
                                           source=f"{path} ({key})")
        load_state_dict_strict(g, sd, f"{path} ({key})")
        return g, w_avg

    g_ema, w_avg = build_g(ema_key)
    g_kwargs = nets[ema_key]["init_kwargs"]
    meta["nvidia_class_name"] = nets[ema_key]["class_name"]
    meta["nvidia_init_kwargs"] = g_kwargs
    notes = conversion_notes(g_kwargs)
    g = build_g("G")[0] if ema_key == "G_ema" and "G" in nets else None
    d = None
    if "D" in nets:
        net = nets["D"]
        try:
            dcfg = discriminator_config_from_init_kwargs(net["init_kwargs"], class_name=net["class_name"],
                                                         classes=net["classes"], state_dict=net["state_dict"],
                                                         source=f"{path} (D)")
            require_finite(net["state_dict"], f"{path} (D)")  # not caught below: broken weights refuse the file
            d_sd = nvidia_d_to_rosinality(net["state_dict"], size=dcfg["size"], source=f"{path} (D)")
            d = Discriminator(config=DiscriminatorConfig(**dcfg))
            load_state_dict_strict(d, d_sd, f"{path} (D)")
            notes += conversion_notes(d_kwargs=net["init_kwargs"])
        except (CheckpointError, SizeLimitError) as e:
            d = None
            notes.append(f"D not converted: {e}")
    meta["notes"] = notes
    finish_generator(g_ema, w_avg, meta)
    return StyleGANCheckpoint(g_ema=g_ema, d=d, g=g, source_format="nvidia", path=path, meta=meta)
