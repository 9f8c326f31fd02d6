"""CLIP models from local files, through the ``clip`` package's own architecture and ``build_model``.

The same code loads the bundled SynthFaces CLIP and a real OpenAI checkpoint (``ViT-B-32.pt``, a TorchScript
archive) from a local path: a config switches between them and nothing else changes. Nothing is downloaded.

Images go in as the generators make them, [N, 3, H, W] in [-1, 1]; the preprocessing is a differentiable
tensor pipeline (to [0, 1], bicubic resize of the short side, centre crop, CLIP normalisation), so guidance
losses can backpropagate through it.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

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
#: Bundled models, by alias.
BUNDLED = {"synthfaces": Path(__file__).resolve().parents[1] / "checkpoints" / "synthfaces_clip.pt"}


class ClipLoadError(ValueError):
    """A CLIP checkpoint that cannot be found or read."""


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


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a CLIP checkpoint: a TorchScript archive (OpenAI's files) or a plain state dict."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            is_jit = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except zipfile.BadZipFile:
        is_jit = False
    try:
        if is_jit:
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ClipLoadError(f"{path}: could not read it as a CLIP checkpoint; it is truncated or corrupt "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "text_projection" not in sd or "token_embedding.weight" not in sd:
        raise ClipLoadError(f"{path}: not an OpenAI-format CLIP checkpoint (no text_projection / token_embedding)")
    return dict(sd)


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

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [N, D] of [-1, 1] images (gradients flow)."""
        dtype = self.model.visual.conv1.weight.dtype
        emb = self.model.encode_image(self.preprocess(images).to(dtype)).float()
        return F.normalize(emb, dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return _import_clip().tokenize(list(texts), context_length=self.context_length, truncate=True)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]."""
        tokens = self.tokenize(texts).to(self.model.token_embedding.weight.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


def build_clip(state_dict: dict[str, torch.Tensor], name: str = "clip") -> ClipModel:
    """A ClipModel from an OpenAI-format state dict, through ``clip.model.build_model``."""
    clip = _import_clip()
    sd = {k: v for k, v in state_dict.items()}
    try:
        model = clip.model.build_model(sd)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ClipLoadError(f"{name}: the state dict does not build a CLIP model ({str(e).splitlines()[0]})") from e
    return ClipModel(model.float().eval(), name=name)


def load_clip(name_or_path: str, device: str | torch.device = "cpu") -> ClipModel:
    """Load a CLIP by name (``ViT-B/32``, ``synthfaces``) or path; frozen, float32, in eval mode."""
    path = resolve_clip_path(name_or_path)
    model = build_clip(read_clip_state_dict(path), name=name_or_path)
    return model.requires_grad_(False).to(device)


def tiny_clip(seed: int = 0, *, embed_dim: int = 64, image_resolution: int = 32, width: int = 64, layers: int = 1,
              patch: int = 16, context_length: int = 32) -> ClipModel:
    """A randomly initialised small CLIP of the package's architecture (tests and smoke runs)."""
    clip = _import_clip()
    torch.manual_seed(seed)
    model = clip.model.CLIP(embed_dim, image_resolution, layers, width, patch, context_length, 49408, width,
                            max(1, width // 64), layers)
    return ClipModel(model.float().eval(), name=f"tiny-{seed}")
