"""Test utility: write pickles in the layout of NVIDIA stylegan2-ada-pytorch snapshots, without NVIDIA code.

A snapshot is ``pickle.dump(dict(training_set_kwargs=..., G=..., D=..., G_ema=..., augment_pipe=...))``
where every network object reduces to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = {type: 'class', version: 6, module_src: <source text>, class_name: <bare class name>, state: <module
__dict__>}``. NVIDIA stores the bare class name (``orig_class.__name__``: 'Generator', 'SynthesisBlock', ...)
and no module name. The state holds real ``torch.nn.Parameter`` / tensor objects (pickled by torch's own
reducers, so the file references ``torch._utils._rebuild_parameter``, ``torch._utils._rebuild_tensor_v2``,
``torch.storage._load_from_bytes`` and ``collections.OrderedDict``), numpy float64 gains (``numpy`` scalar and
dtype globals) and ``dnnlib.util.EasyDict`` init kwargs.

tests/test_nvidia_pkl.py checks this layout (globals, sub-module classes, tensor names and shapes, init
kwargs) against ``tests/fixtures/nvidia_ada_tiny.pkl``, a snapshot written by NVIDIA's own code; this writer
exists to make the variants (refusals, corruptions, protocol 3, gzip) that a fixture file cannot.

``torch_utils.persistence`` and ``dnnlib.util`` exist only as throw-away fake modules in ``sys.modules``
while a file is written, so the reader under test must work without them. The embedded ``module_src`` is a
fake that writes a marker file and raises ``SystemExit`` if it is ever executed.
"""
from __future__ import annotations

import contextlib
import gzip as _gzip
import io
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

FILTER = [1, 3, 3, 1]


def _fake_module_src(marker_path=None) -> str:
    marker = repr(str(marker_path)) if marker_path is not None else "None"
    return (
        "# Fake training/networks.py written by tests/nvidia_pickle_writer.py.\n"
        "# A safe loader must never run this text.\n"
        f"_marker = {marker}\n"
        "if _marker is not None:\n"
        "    with open(_marker, 'w') as f:\n"
        "        f.write('executed')\n"
        "raise SystemExit('executed!')\n"
    )


# ----------------------------------------------------------------------------------------------------------
# Fake NVIDIA modules (only present in sys.modules while writing)


def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called; pickled by reference only
    raise RuntimeError("test stand-in; must never be called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (pickled as a dict subclass named dnnlib.util.EasyDict)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


@contextlib.contextmanager
def fake_nvidia_modules():
    """Register ``torch_utils``, ``torch_utils.persistence``, ``dnnlib``, ``dnnlib.util`` for pickling only."""
    added = []
    mods = {
        "torch_utils": {},
        "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {"EasyDict": EasyDict},
        "dnnlib.util": {"EasyDict": EasyDict},
    }
    try:
        for name, attrs in mods.items():
            if name in sys.modules:
                raise RuntimeError(f"module {name} already imported; the fake would shadow it")
            m = types.ModuleType(name)
            m.__dict__.update(attrs)
            sys.modules[name] = m
            added.append(name)
        sys.modules["torch_utils"].persistence = sys.modules["torch_utils.persistence"]
        sys.modules["dnnlib"].util = sys.modules["dnnlib.util"]
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


class PersistentObj:
    """Pickles exactly like an NVIDIA persistent-class instance."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def _easy(obj):
    if isinstance(obj, dict):
        return EasyDict({k: _easy(v) for k, v in obj.items()})
    return obj


# ----------------------------------------------------------------------------------------------------------
# Random NVIDIA-named state dicts


def channels(size, channel_base, channel_max):
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(size)) + 1)}


def resample_filter():
    f = torch.tensor(FILTER, dtype=torch.float32)
    return torch.outer(f, f) / f.sum() ** 2


def make_nvidia_state(size=32, channel_base=512, channel_max=64, z_dim=32, w_dim=32, n_mapping=2, seed=0, *,
                      c_dim=0, img_channels=3, architecture="skip", d_architecture="resnet", conv_clamp=256,
                      num_fp16_res=4, mbstd_group_size=4, mbstd_num_channels=1, g_extra_synthesis=None,
                      meta=False):
    """Random NVIDIA-named ``G_ema`` and ``D`` state dicts for a StyleGAN2 config, plus init kwargs.

    Returns ``(g_ema_state_dict, d_state_dict, {"G": g_init_kwargs, "D": d_init_kwargs})``. Every tensor
    (biases, noise strengths, w_avg included) is random and non-zero, so mapping mistakes are visible. The
    init kwargs are plain dicts laid out as ada-pytorch's train.py builds them (``c_dim``, ``img_resolution``,
    ``img_channels`` from the training set; ``mapping_kwargs``, ``synthesis_kwargs``, ``epilogue_kwargs``).
    The tensor layout always follows the StyleGAN2 skip G / resnet D with one stddev channel: the keyword
    overrides (c_dim, architecture, ...) only change the kwargs, for refusal tests. ``meta=True`` makes
    every tensor except the resample filters a data-less ``meta`` tensor (shape checks of full-size nets).
    """
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        if meta:
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=gen)

    ch = channels(size, channel_base, channel_max)
    g = OrderedDict()
    for i in range(n_mapping):
        g[f"mapping.fc{i}.weight"] = rnd(w_dim, z_dim if i == 0 else w_dim) * 100  # stored as randn / lr_mul
        g[f"mapping.fc{i}.bias"] = rnd(w_dim) * 0.1
    g["mapping.w_avg"] = rnd(w_dim)
    res = [2 ** i for i in range(2, int(math.log2(size)) + 1)]
    for r in res:
        b = f"synthesis.b{r}"
        if r == 4:
            g[f"{b}.const"] = rnd(ch[4], 4, 4)
        g[f"{b}.resample_filter"] = resample_filter()
        convs = [("conv1", ch[4], ch[4])] if r == 4 else [("conv0", ch[r // 2], ch[r]), ("conv1", ch[r], ch[r])]
        for name, cin, cout in convs:
            p = f"{b}.{name}"
            g[f"{p}.weight"] = rnd(cout, cin, 3, 3)
            g[f"{p}.noise_strength"] = rnd(()) * 0.1
            g[f"{p}.bias"] = rnd(cout) * 0.1
            g[f"{p}.resample_filter"] = resample_filter()
            g[f"{p}.noise_const"] = rnd(r, r)
            g[f"{p}.affine.weight"] = rnd(cin, w_dim)
            g[f"{p}.affine.bias"] = 1 + 0.1 * rnd(cin)
        g[f"{b}.torgb.weight"] = rnd(img_channels, ch[r], 1, 1)
        g[f"{b}.torgb.bias"] = rnd(img_channels) * 0.1
        g[f"{b}.torgb.affine.weight"] = rnd(ch[r], w_dim)
        g[f"{b}.torgb.affine.bias"] = 1 + 0.1 * rnd(ch[r])

    d = OrderedDict()
    for r in reversed(res[1:]):
        b = f"b{r}"
        tmp, out = ch[r], ch[r // 2]
        if r == size:
            d[f"{b}.fromrgb.weight"] = rnd(tmp, img_channels, 1, 1)
            d[f"{b}.fromrgb.bias"] = rnd(tmp) * 0.1
            d[f"{b}.fromrgb.resample_filter"] = resample_filter()
        d[f"{b}.conv0.weight"] = rnd(tmp, tmp, 3, 3)
        d[f"{b}.conv0.bias"] = rnd(tmp) * 0.1
        d[f"{b}.conv0.resample_filter"] = resample_filter()
        d[f"{b}.conv1.weight"] = rnd(out, tmp, 3, 3)
        d[f"{b}.conv1.bias"] = rnd(out) * 0.1
        d[f"{b}.conv1.resample_filter"] = resample_filter()
        d[f"{b}.skip.weight"] = rnd(out, tmp, 1, 1)
        d[f"{b}.skip.resample_filter"] = resample_filter()
        d[f"{b}.resample_filter"] = resample_filter()
    c4 = ch[4]
    d["b4.conv.weight"] = rnd(c4, c4 + mbstd_num_channels, 3, 3)
    d["b4.conv.bias"] = rnd(c4) * 0.1
    d["b4.conv.resample_filter"] = resample_filter()
    d["b4.fc.weight"] = rnd(c4, c4 * 16)
    d["b4.fc.bias"] = rnd(c4) * 0.1
    d["b4.out.weight"] = rnd(1, c4)
    d["b4.out.bias"] = rnd(1) * 0.1

    synthesis = dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                     conv_clamp=conv_clamp)
    if architecture != "skip":
        synthesis["architecture"] = architecture
    synthesis.update(g_extra_synthesis or {})
    g_kwargs = dict(z_dim=z_dim, w_dim=w_dim, mapping_kwargs=dict(num_layers=n_mapping),
                    synthesis_kwargs=synthesis, c_dim=c_dim, img_resolution=size, img_channels=img_channels)
    epilogue = dict(mbstd_group_size=mbstd_group_size)
    if mbstd_num_channels != 1:  # train.py never sets it
        epilogue["mbstd_num_channels"] = mbstd_num_channels
    d_kwargs = dict(block_kwargs=dict(), mapping_kwargs=dict(), epilogue_kwargs=epilogue,
                    channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                    conv_clamp=conv_clamp, c_dim=c_dim, img_resolution=size, img_channels=img_channels)
    if d_architecture != "resnet":
        d_kwargs["architecture"] = d_architecture
    return g, d, {"G": g_kwargs, "D": d_kwargs}


# ----------------------------------------------------------------------------------------------------------
# Module trees and the pickle


_G_CLASSES = {"": "Generator", "mapping": "MappingNetwork", "synthesis": "SynthesisNetwork",
              "block": "SynthesisBlock", "conv0": "SynthesisLayer", "conv1": "SynthesisLayer",
              "torgb": "ToRGBLayer", "fc": "FullyConnectedLayer", "affine": "FullyConnectedLayer"}
_D_CLASSES = {"": "Discriminator", "block": "DiscriminatorBlock", "b4": "DiscriminatorEpilogue",
              "fromrgb": "Conv2dLayer", "conv0": "Conv2dLayer", "conv1": "Conv2dLayer", "skip": "Conv2dLayer",
              "conv": "Conv2dLayer", "fc": "FullyConnectedLayer", "out": "FullyConnectedLayer",
              "mbstd": "MinibatchStdLayer"}
_BUFFERS = {"w_avg", "resample_filter", "noise_const"}


class _Node:
    def __init__(self):
        self.params, self.buffers, self.children = OrderedDict(), OrderedDict(), OrderedDict()


def _tree(flat):
    root = _Node()
    for key, t in flat.items():
        *path, leaf = key.split(".")
        node = root
        for p in path:
            node = node.children.setdefault(p, _Node())
        if leaf in _BUFFERS:
            node.buffers[leaf] = t.clone()
        else:
            node.params[leaf] = torch.nn.Parameter(t.clone(), requires_grad=False)
    return root


def _class_for(name, classes):
    """The bare class name NVIDIA's persistence records for the sub-module called ``name``."""
    if name in classes:
        return classes[name]
    if name.startswith("fc"):
        return classes["fc"]
    if name.startswith("b") and name[1:].isdigit():
        return classes["block"]
    return "Unknown"


def _to_persistent(node, name, classes, module_src, root_kwargs, root_class, options, path=""):
    children = OrderedDict()
    for cname, child in node.children.items():
        children[cname] = _to_persistent(child, cname, classes, module_src, None, None, options, f"{path}{cname}.")
    if name == "b4" and classes is _D_CLASSES and "mbstd" not in children:  # parameter-free layer
        children["mbstd"] = _to_persistent(_Node(), "mbstd", classes, module_src, None, None, options,
                                           f"{path}mbstd.")
    params, buffers = OrderedDict(node.params), OrderedDict(node.buffers)
    non_persistent = set()
    if options.get("nonpersistent_buffer") and path == "":
        buffers["debug_nonpersistent"] = torch.ones(3)
        non_persistent.add("debug_nonpersistent")
    if options.get("none_entries") and name == "skip":
        params["bias"] = None  # a registered-but-None parameter
    if options.get("none_entries") and name == "synthesis":
        buffers["unused"] = None
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": non_persistent,
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": children,
        "_init_args": (),
        "_init_kwargs": _easy(root_kwargs) if root_kwargs is not None else EasyDict(),
    }
    if "weight" in node.params:  # NVIDIA layers keep numpy float64 gains as attributes
        fan_in = node.params["weight"][0].numel()
        state["weight_gain"] = np.float64(1 / np.sqrt(fan_in))
    class_name = root_class if root_class is not None else _class_for(name, classes)
    # NVIDIA's meta: exactly these keys; the class name is bare (no module name is stored anywhere).
    return PersistentObj(dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state))


def build_snapshot(g_ema_sd, d_sd, init_kwargs, *, g_sd=None, marker_path=None, module_src=None,
                   g_class="Generator", d_class="Discriminator", g_classes=None, options=None, extra=None):
    """The snapshot dict (of :class:`PersistentObj`) that :func:`write_nvidia_pkl` pickles.

    ``g_classes`` overrides entries of the generator's {sub-module name: class} table (e.g. to imitate
    another network family).
    """
    options = options or {}
    src = module_src if module_src is not None else _fake_module_src(marker_path)
    g_table = dict(_G_CLASSES, **(g_classes or {}))
    if g_sd is None:
        g_sd = OrderedDict((k, v if k.endswith("resample_filter") else v + 0.5) for k, v in g_ema_sd.items())
    snap = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="/data/x.zip",
                                         use_labels=False, max_size=100, xflip=False,
                                         resolution=init_kwargs["G"]["img_resolution"]))
    if g_sd is not False:
        snap["G"] = _to_persistent(_tree(g_sd), "", g_table, src, init_kwargs["G"], g_class, options)
    if d_sd is not None:
        snap["D"] = _to_persistent(_tree(d_sd), "", _D_CLASSES, src, init_kwargs["D"], d_class, options)
    if g_ema_sd is not None:
        snap["G_ema"] = _to_persistent(_tree(g_ema_sd), "", g_table, src, init_kwargs["G"], g_class, options)
    aug = _Node()
    aug.buffers["p"] = torch.tensor(0.25)
    aug.buffers["Hz_geom"] = torch.randn(12)
    snap["augment_pipe"] = _to_persistent(aug, "", {}, src, dict(xflip=1, rotate90=1), "AugmentPipe", {})
    snap.update(extra or {})
    return snap


def dumps_nvidia(obj, *, protocol=4, numpy_legacy_names=False) -> bytes:
    """Pickle ``obj`` with the fake NVIDIA modules registered.

    ``numpy_legacy_names`` (protocol <= 3 only) renames ``numpy._core.multiarray`` to the numpy-1.x name
    ``numpy.core.multiarray`` (text GLOBAL opcodes, so a byte replacement is exact).
    """
    with fake_nvidia_modules():
        data = pickle.dumps(obj, protocol=protocol)
    if numpy_legacy_names:
        if protocol > 3:
            raise ValueError("numpy_legacy_names needs protocol <= 3 (text GLOBAL opcodes)")
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return data


def write_nvidia_pkl(path, g_ema_sd=None, d_sd=None, init_kwargs=None, *, protocol=4, gzip=False,
                     numpy_legacy_names=False, **snapshot_kw):
    """Write a fake NVIDIA snapshot (G, D, G_ema, augment_pipe, training_set_kwargs) to ``path``.

    Without state dicts, a default small net from :func:`make_nvidia_state` is written. Extra keywords go to
    :func:`build_snapshot` (``g_sd``, ``marker_path``, ``module_src``, ``g_class``, ``d_class``, ``options``,
    ``extra``). Returns ``path``.
    """
    if g_ema_sd is None and d_sd is None:
        g_ema_sd, d_sd, init_kwargs = make_nvidia_state()
    data = dumps_nvidia(build_snapshot(g_ema_sd, d_sd, init_kwargs, **snapshot_kw), protocol=protocol,
                        numpy_legacy_names=numpy_legacy_names)
    if gzip:
        data = _gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def referenced_globals(data: bytes) -> set[str]:
    """``module.name`` of every global a pickle references, found by unpickling with inert stand-ins."""
    seen = set()

    class Anything:
        def __init__(self, *a, **k):
            pass

        def __setstate__(self, state):
            pass

        def __setitem__(self, k, v):
            pass

        def append(self, x):
            pass

        def extend(self, xs):
            pass

        def add(self, x):
            pass

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return Anything

    Recorder(io.BytesIO(data)).load()
    return seen
