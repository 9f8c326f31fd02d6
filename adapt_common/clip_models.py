"""CLIP models from local files, through the ``clip`` package's own architecture and ``build_model``.

The same code loads the bundled SynthFaces CLIP and a real OpenAI checkpoint (``ViT-B-32.pt``, a TorchScript
archive) from a local path: a config switches between them and nothing else changes. Nothing is downloaded.

Loading runs no code from the file. A TorchScript archive is a zip whose ``data.pkl`` describes the module tree
and whose ``data/`` entries hold the tensors; it is read with a restricted unpickler that builds only tensors
and inert stand-ins for the modules (``torch.jit.load`` would compile the archive's code and run its
``__setstate__`` methods). Sizes are bounded before the model is built, and NaN/Inf weights are refused.

Images go in as the generators make them, [N, 3, H, W] in [-1, 1]; the preprocessing is a differentiable
tensor pipeline (to [0, 1], bicubic resize of the short side, centre crop, CLIP normalisation), so guidance
losses can backpropagate through it.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: OpenAI model names and the file names their checkpoints have when downloaded by the ``clip`` package.
OPENAI_FILES = {
    "RN50": "RN50.pt", "RN101": "RN101.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt", "ViT-L/14@336px": "ViT-L-14-336px.pt",
}
_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
#: Bundled models, by alias: the guide every SynthFaces config trains with, and a second model of the same
#: architecture trained on other faces with another seed, which judges reports so that no report's CLIP scores
#: come from the model that guided the training (a guide's shortcuts fool itself, far less a model that never
#: shared its data or initialisation).
BUNDLED = {"synthfaces": _CHECKPOINTS / "synthfaces_clip.pt",
           "synthfaces_judge": _CHECKPOINTS / "synthfaces_judge_clip.pt"}
#: The CLIP that reports judge with unless told otherwise (``evaluation.clip``, ``evaluate --clip``, the study).
DEFAULT_JUDGE = "synthfaces_judge"


class ClipLoadError(ValueError):
    """A CLIP checkpoint that cannot be found or read."""


#: How to turn a TorchScript archive this loader refuses into a plain state dict (on a machine that trusts it).
CONVERT_HINT = ("convert it once, where you trust the file, to a plain state dict: python -c \"import torch; "
                "torch.save(torch.jit.load('IN.pt', map_location='cpu').state_dict(), 'OUT.pt')\" and pass OUT.pt")


def _import_clip():
    with warnings.catch_warnings():  # clip-anytorch imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        import clip
    return clip


def resolve_clip_path(name_or_path: str) -> Path:
    """A local file for a model name (``ViT-B/32``), an alias (``synthfaces``) or a path.

    Names are looked up in ``$CLIP_HOME`` and then ``~/.cache/clip`` (where the ``clip`` package stores its
    downloads), so a machine that already has the OpenAI files uses them as they are.
    """
    if name_or_path in BUNDLED:
        path = BUNDLED[name_or_path]
        if not path.exists():
            raise ClipLoadError(f"the bundled CLIP {name_or_path!r} is not at {path}")
        return path
    if name_or_path in OPENAI_FILES:
        dirs = [os.environ.get("CLIP_HOME"), os.path.expanduser("~/.cache/clip")]
        for d in filter(None, dirs):
            path = Path(d) / OPENAI_FILES[name_or_path]
            if path.exists():
                return path
        raise ClipLoadError(f"CLIP {name_or_path} needs its weights file {OPENAI_FILES[name_or_path]} in $CLIP_HOME "
                            f"or ~/.cache/clip (downloads are disabled); or pass the file's path")
    path = Path(os.path.expanduser(name_or_path))
    if not path.is_file():
        raise ClipLoadError(f"{name_or_path}: no such CLIP checkpoint file, and not a known name "
                            f"({', '.join(list(BUNDLED) + list(OPENAI_FILES))})")
    return path


def same_clip(a: str, b: str) -> bool:
    """Whether two CLIP names or paths name the same file (a judge that is also a guide)."""
    def where(x: str) -> str:
        try:
            return str(resolve_clip_path(x).resolve())
        except ClipLoadError:
            return x
    return where(a) == where(b)


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a CLIP checkpoint: a TorchScript archive (OpenAI's files) or a plain state dict, read
    without running any code from the file; its sizes are bounded (:func:`check_clip_sizes`)."""
    from .integrity import require_stored
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            is_jit = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except zipfile.BadZipFile:
        is_jit = False
    if is_jit:
        sd = read_torchscript_tensors(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ClipLoadError(f"{path}: refused: it holds Python objects other than tensors (a pickled model?), "
                                "which safe loading does not run; save the model's state_dict instead "
                                f"({str(e).splitlines()[0]})") from e
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            raise ClipLoadError(f"{path}: could not read it as a CLIP checkpoint; it is truncated or corrupt "
                                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "text_projection" not in sd or "token_embedding.weight" not in sd:
        raise ClipLoadError(f"{path}: not an OpenAI-format CLIP checkpoint (no text_projection / token_embedding)")
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    require_stored(sd, path, ClipLoadError)
    check_clip_sizes(sd, path)
    return sd


# -- sizes ---------------------------------------------------------------------------------------------------

#: Bounds on what ``clip.model.build_model`` reads from a state dict (ViT-L/14@336px: width 1024, 24 layers,
#: patch 14, a 24x24 grid; the text side: 77 tokens, a 49,408-token vocabulary, width 768, 12 layers).
CLIP_LIMITS = {"width": 8192, "layers": 128, "patch": 128, "grid": 128, "context_length": 4096,
               "vocab_size": 1_000_000}


def check_clip_sizes(sd: dict[str, torch.Tensor], path) -> None:
    """Bound every size ``build_model`` derives from ``sd`` (shapes and key counts) before it allocates."""
    from .files import require_size

    def dim(key: str, axis: int) -> int:
        t = sd.get(key)
        if t is None or t.dim() <= axis:
            raise ClipLoadError(f"{path}: {key} is missing or has too few dimensions for a CLIP checkpoint")
        return int(t.shape[axis])

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})

    L = CLIP_LIMITS
    sizes = [("embed_dim (text_projection)", dim("text_projection", 1), L["width"]),
             ("context_length", dim("positional_embedding", 0), L["context_length"]),
             ("vocab_size", dim("token_embedding.weight", 0), L["vocab_size"]),
             ("transformer width", dim("ln_final.weight", 0), L["width"]),
             ("text layers", count("transformer.resblocks."), L["layers"])]
    if "visual.proj" in sd:
        sizes += [("vision width", dim("visual.conv1.weight", 0), L["width"]),
                  ("vision layers", count("visual.transformer.resblocks."), L["layers"]),
                  ("vision patch size", dim("visual.conv1.weight", 3), L["patch"]),
                  ("vision positions", dim("visual.positional_embedding", 0), L["grid"] ** 2 + 1)]
    else:
        sizes += [("vision width", dim("visual.layer1.0.conv1.weight", 0), L["width"]),
                  ("attention-pool positions", dim("visual.attnpool.positional_embedding", 0), L["grid"] ** 2 + 1)]
        sizes += [(f"blocks of visual.layer{b}", count(f"visual.layer{b}."), L["layers"]) for b in (1, 2, 3, 4)]
    try:
        for what, value, limit in sizes:
            require_size(what, value, limit, path, minimum=1)
    except ValueError as e:
        raise ClipLoadError(str(e)) from None


# -- TorchScript archives, read without running them ------------------------------------------------------------

#: Most bytes of code read from an archive (only to learn which attributes are parameters and buffers).
MAX_CODE_BYTES = 32 * 2 ** 20


class _ScriptObject:
    """What a TorchScript object (a ``__torch__.*`` class) is read as: its class name and pickled state. It has
    no methods of the archive's classes, so unpickling one runs nothing."""

    qualname = "__torch__"

    def __setstate__(self, state):
        self.state = state


#: The legacy storage class names of pickled tensors, by the dtype they stand for.
_STORAGE_DTYPES = {"DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
                   "ComplexDoubleStorage": torch.complex128}


class _StorageType(NamedTuple):
    dtype: torch.dtype


class _Storage(NamedTuple):
    data: torch.UntypedStorage
    dtype: torch.dtype


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` for plain tensors only (no hooks, no subclass metadata)."""
    if not isinstance(storage, _Storage) or hooks or metadata:
        raise pickle.UnpicklingError("a tensor with hooks or metadata, or without a storage")
    return torch.empty(0, dtype=storage.dtype).set_(storage.data, offset, size, stride)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads ``data.pkl`` of a TorchScript archive: tensors from ``data/``, stand-ins for modules, nothing else."""

    def __init__(self, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self.archive, self.root = archive, root
        self.classes: dict[str, type] = {}
        self.storages: dict[str, torch.UntypedStorage] = {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch":  # a storage type or dtype names the dtype of a storage; never instantiated
            dtype = _STORAGE_DTYPES.get(name, getattr(torch, name, None))
            if isinstance(dtype, torch.dtype):
                return _StorageType(dtype)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not a tensor or a TorchScript object")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError(f"unexpected storage reference {str(pid)[:80]}")
        key = pid[2]
        if key not in self.storages:
            info = self.archive.getinfo(f"{self.root}/data/{key}")
            if info.compress_type != zipfile.ZIP_STORED:  # PyTorch stores tensors uncompressed; no zip bombs
                raise pickle.UnpicklingError(f"data/{key} is compressed, which PyTorch never writes")
            raw = bytearray(self.archive.read(info))
            self.storages[key] = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw \
                else torch.UntypedStorage(0)
        return _Storage(self.storages[key], pid[1].dtype)


def _declared_state(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """{class qualname: its parameter and buffer names}, from the ``__parameters__`` / ``__buffers__`` lines the
    archive's code declares (read as text, never run): what ``state_dict()`` would hold."""
    declared, budget = {}, MAX_CODE_BYTES
    pattern = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = \[([^\]]*)\]\n  __buffers__ = \[([^\]]*)\]",
                         re.MULTILINE)
    for info in archive.infolist():
        if not (info.filename.startswith(f"{root}/code/") and info.filename.endswith(".py")):
            continue
        with archive.open(info) as f:
            text = f.read(budget + 1).decode("utf-8", "replace")
        budget -= len(text)
        if budget < 0:
            raise ClipLoadError(f"the archive's code is over {MAX_CODE_BYTES:,} bytes")
        module = info.filename[len(f"{root}/code/"):-len(".py")].replace("/", ".")
        for cls, params, buffers in pattern.findall(text):
            declared[f"{module}.{cls}"] = set(re.findall(r'"([^"]+)"', params + buffers))
    return declared


def _module_tensors(top: _ScriptObject, declared: dict[str, set[str]], path) -> dict[str, torch.Tensor]:
    """The state dict of a tree of stand-in modules: each module's declared parameters and buffers (all its
    tensors where the archive declares none), under dotted paths; a shared module counts once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [("", top, 0)]
    while stack:
        prefix, node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        state = getattr(node, "state", None)
        if depth > 64:
            raise ClipLoadError(f"{path}: its modules nest over 64 deep; not a CLIP model")
        if not isinstance(state, dict):
            raise ClipLoadError(f"{path}: the TorchScript object {node.qualname} keeps custom state (code that "
                                f"TorchScript would run on load), which this loader does not run; {CONVERT_HINT}")
        keep = declared.get(node.qualname)
        for name, value in state.items():
            if torch.is_tensor(value) and (keep is None or name in keep):
                out[f"{prefix}{name}"] = value
            elif isinstance(value, _ScriptObject):
                stack.append((f"{prefix}{name}.", value, depth + 1))
    return out


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive by their state-dict names, read without executing
    anything in it (no ``torch.jit.load``)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            roots = sorted({n.split("/")[0] for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")})
            if len(roots) != 1:
                raise ClipLoadError(f"{path}: a zip with {len(roots)} data.pkl records, not one TorchScript archive")
            root = roots[0]
            if f"{root}/byteorder" in zf.namelist() and zf.read(f"{root}/byteorder").strip() != b"little":
                raise ClipLoadError(f"{path}: a big-endian TorchScript archive; {CONVERT_HINT}")
            top = _TorchScriptUnpickler(zf, root).load()
            if not isinstance(top, _ScriptObject):
                raise ClipLoadError(f"{path}: its data.pkl holds a {type(top).__name__}, not a TorchScript module")
            return _module_tensors(top, _declared_state(zf, root), path)
    except ClipLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling and zip errors of every kind mean the same here
        raise ClipLoadError(f"{path}: could not read it as a TorchScript archive without running it "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {CONVERT_HINT}") from e


class ClipModel(nn.Module):
    """A ``clip.model.CLIP`` with a differentiable preprocessing for [-1, 1] images and normalised encoders."""

    def __init__(self, model: nn.Module, name: str = "clip"):
        super().__init__()
        self.model = model
        self.name = name
        self.input_resolution = int(model.visual.input_resolution)
        self.context_length = int(model.context_length)
        self.embed_dim = int(model.text_projection.shape[1])
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> the model's normalised input (resize short side, centre crop)."""
        x = (images.float() + 1) / 2
        r = self.input_resolution
        h, w = x.shape[-2:]
        if min(h, w) != r:
            scale = r / min(h, w)
            x = F.interpolate(x, size=(max(r, round(h * scale)), max(r, round(w * scale))), mode="bicubic",
                              align_corners=False, antialias=scale < 1)
        h, w = x.shape[-2:]
        top, left = (h - r) // 2, (w - r) // 2
        x = x[..., top:top + r, left:left + r]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def encode_images(self, images: torch.Tensor, fast: bool = False, cls_only_last: bool = False) -> torch.Tensor:
        """L2-normalised image embeddings [N, D] of [-1, 1] images (gradients flow).

        ``fast``: a vision transformer runs through :func:`vit_cls_features`, which gives the package's numbers bit
        for bit (forward and gradients, float32 on the CPU) with fewer copies; ``cls_only_last`` also computes the
        last block for the class token's row only (a fifth less time for the bundled CLIP, but other matrix shapes
        round differently: about 1e-7 relative). Other models (ResNets) always take the package's
        ``encode_image``."""
        dtype = self.model.visual.conv1.weight.dtype
        x = self.preprocess(images).to(dtype)
        if (fast or cls_only_last) and self._vit_fast_path_applies():
            emb = vit_cls_features(self.model.visual, x, cls_only_last=cls_only_last).float()
        else:
            emb = self.model.encode_image(x).float()
        return F.normalize(emb, dim=-1)

    def _vit_fast_path_applies(self) -> bool:
        key = (id(self.model.visual), self.model.visual.conv1.weight.dtype)
        if getattr(self, "_fast_path_key", None) != key:
            self._fast_path_key, self._fast_path_ok = key, vit_fast_path_applies(self.model.visual)
        return self._fast_path_ok

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return _import_clip().tokenize(list(texts), context_length=self.context_length, truncate=True)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]."""
        tokens = self.tokenize(texts).to(self.model.token_embedding.weight.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


def vit_fast_path_applies(visual: nn.Module) -> bool:
    """Whether :func:`vit_cls_features` computes what ``visual`` does: a ``clip.model.VisionTransformer`` whose
    blocks are the package's (unmasked self-attention, no dropout) in float32."""
    clip = _import_clip()
    if not isinstance(visual, clip.model.VisionTransformer) or visual.conv1.weight.dtype != torch.float32:
        return False
    for blk in visual.transformer.resblocks:
        attn = blk.attn
        if (not isinstance(blk, clip.model.ResidualAttentionBlock) or blk.attn_mask is not None
                or attn.in_proj_weight is None or attn.in_proj_bias is None or attn.bias_k is not None
                or attn.dropout != 0 or attn.batch_first or not isinstance(blk.mlp.gelu, clip.model.QuickGELU)):
            return False
    return True


def _vit_block(blk: nn.Module, x: torch.Tensor, cls_only: bool) -> torch.Tensor:
    """One ``ResidualAttentionBlock`` on batch-first tokens [N, L, D] (the package runs them [L, N, D]); with
    ``cls_only`` the output is the class token's row [N, 1, D] alone: its queries, attention output, residual and
    MLP are computed for that row only (keys and values still for every token)."""
    attn = blk.attn
    n, length, dim = x.shape
    heads = attn.num_heads
    h = F.layer_norm(x, blk.ln_1.normalized_shape, blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if cls_only:
        x = x[:, :1]
        q = F.linear(h[:, :1], w[:dim], b[:dim]).view(n, 1, heads, -1).transpose(1, 2)
        k, v = F.linear(h, w[dim:], b[dim:]).view(n, length, 2, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        q, k, v = F.linear(h, w, b).view(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    o = F.scaled_dot_product_attention(q, k, v)  # [N, heads, Lq, head_dim], scale 1/sqrt(head_dim) as MHA's
    o = o.transpose(1, 2).reshape(n, q.shape[2], dim)
    x = x + F.linear(o, attn.out_proj.weight, attn.out_proj.bias)
    h = F.layer_norm(x, blk.ln_2.normalized_shape, blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps)
    h = F.linear(h, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + F.linear(h, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)


def vit_cls_features(visual: nn.Module, x: torch.Tensor, cls_only_last: bool = False) -> torch.Tensor:
    """What ``clip.model.VisionTransformer.forward`` returns for preprocessed images ``x`` (before the
    embedding's normalisation), with fewer copies: tokens stay batch-first and attention is one
    ``scaled_dot_product_attention`` without ``nn.MultiheadAttention``'s checks and transposes. The same
    operations on the same rows, so the same numbers bit for bit (checked on the CPU in float32, forward and input
    gradients). ``cls_only_last``: the last block works on the class token's row only, the one row the output
    reads (a quarter less work in a 4-block ViT's last block's matrices, forward and backward); its smaller matrix
    products round differently, about 1e-7 relative. Only for a model :func:`vit_fast_path_applies` to."""
    x = visual.conv1(x)  # [N, width, grid, grid]
    x = x.flatten(2).transpose(1, 2)  # [N, grid², width]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    ln = visual.ln_pre
    x = F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    blocks = list(visual.transformer.resblocks)
    for i, blk in enumerate(blocks):
        x = _vit_block(blk, x, cls_only=cls_only_last and i == len(blocks) - 1)
    ln = visual.ln_post
    x = F.layer_norm(x[:, 0], ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    return x if visual.proj is None else x @ visual.proj


def build_clip(state_dict: dict[str, torch.Tensor], name: str = "clip") -> ClipModel:
    """A ClipModel from an OpenAI-format state dict, through ``clip.model.build_model``."""
    clip = _import_clip()
    sd = {k: v for k, v in state_dict.items()}
    try:
        model = clip.model.build_model(sd)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError, AssertionError,
            ZeroDivisionError) as e:  # what build_model raises on state dicts that are not CLIP's
        raise ClipLoadError(f"{name}: the state dict does not build a CLIP model ({str(e).splitlines()[0]})") from e
    return ClipModel(model.float().eval(), name=name)


def load_clip(name_or_path: str, device: str | torch.device = "cpu") -> ClipModel:
    """Load a CLIP by name (``ViT-B/32``, ``synthfaces``) or path; frozen, float32, in eval mode."""
    from .files import require_finite
    path = resolve_clip_path(name_or_path)
    model = build_clip(read_clip_state_dict(path), name=name_or_path)
    require_finite(model.model.state_dict(), path)  # after the build checked every shape
    return model.requires_grad_(False).to(device)


def tiny_clip(seed: int = 0, *, embed_dim: int = 64, image_resolution: int = 32, width: int = 64, layers: int = 1,
              patch: int = 16, context_length: int = 32) -> ClipModel:
    """A randomly initialised small CLIP of the package's architecture (tests and smoke runs)."""
    clip = _import_clip()
    torch.manual_seed(seed)
    model = clip.model.CLIP(embed_dim, image_resolution, layers, width, patch, context_length, 49408, width,
                            max(1, width // 64), layers)
    return ClipModel(model.float().eval(), name=f"tiny-{seed}")
