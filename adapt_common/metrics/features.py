"""Image feature extractors for FID/KID and feature-space distances.

One protocol: an extractor has ``.name`` (a string to state next to every number computed from it) and is
called on images ``[N, 3, H, W]`` in [-1, 1] to give ``float64 [N, D]`` numpy features, batched internally,
without gradients.

- :class:`ClipFeatures`: the CLIP image embedding, **L2-normalised** (what :meth:`ClipModel.encode_images`
  returns and what every CLIP score uses). FID/KID on these features are in units of squared chord distance
  on the unit sphere, so their values are far smaller than Inception FIDs: they are only comparable with
  numbers computed with the same CLIP (the name says which).
- :class:`InceptionFeatures`: torchvision's ``inception_v3`` (ImageNet weights ``inception_v3_google-0cc3c7bd.pth``),
  the 2048-d pool features, input resized to 299x299 bilinear. The weights come from a local file only
  (never downloaded). Note: this is torchvision's port, not the TF-FID network of ``pytorch-fid``
  (``pt_inception-2015-12-05``); FIDs from it are close to but not equal to published FIDs, and its name
  ``inception-v3(torchvision)`` says so.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

#: The file names torchvision gives the ImageNet weights in its hub cache (``torch.hub.get_dir()/checkpoints``).
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # Inception_V3_Weights.IMAGENET1K_V1
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # AlexNet_Weights.IMAGENET1K_V1 (the LPIPS backbone)


class FeatureExtractor(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


def hub_checkpoint(file_name: str) -> Path:
    """Where torchvision would cache a downloaded weights file: ``$TORCH_HOME/hub/checkpoints/<file>``
    (``torch.hub.get_dir()`` honours ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def local_weights(file_name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """The explicit path if given (it must exist), else the hub-cache file if present, else None."""
    if explicit is not None:
        p = Path(os.path.expanduser(str(explicit)))
        return p if p.is_file() else None
    p = hub_checkpoint(file_name)
    return p if p.is_file() else None


def _batches(images: torch.Tensor, batch: int):
    for i in range(0, images.shape[0], batch):
        yield images[i:i + batch]


class ClipFeatures:
    """L2-normalised CLIP image embeddings (float64 [N, D]); name ``clip:<model name>``."""

    def __init__(self, clip, batch: int = 64):
        self.clip = clip
        self.batch = batch
        self.name = f"clip:{getattr(clip, 'name', 'clip')}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        dev = next(self.clip.parameters()).device
        out = [self.clip.encode_images(x.to(dev)).double().cpu() for x in _batches(images, self.batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, getattr(self.clip, "embed_dim", 0)))


class InceptionWeightsMissing(FileNotFoundError):
    """The Inception-v3 weights file is not on this machine (and will not be downloaded)."""


class InceptionFeatures:
    """torchvision Inception-v3 pool features (float64 [N, 2048]); name ``inception-v3(torchvision)``.

    ``weights_path``: a local ``.pth`` state dict; default ``$TORCH_HOME/hub/checkpoints/inception_v3_google-0cc3c7bd.pth``
    (where ``torchvision.models.inception_v3(weights="IMAGENET1K_V1")`` caches it). Images in [-1, 1] are what
    this network was trained on (torchvision's ``transform_input=True`` maps ImageNet-normalised input to exactly
    that), so they go in as they are, resized to 299 bilinear.
    """

    name = "inception-v3(torchvision)"

    def __init__(self, weights_path: str | os.PathLike | None = None, batch: int = 32, device: str | None = None):
        path = local_weights(INCEPTION_FILE, weights_path)
        if path is None:
            wanted = Path(os.path.expanduser(str(weights_path))) if weights_path is not None else \
                hub_checkpoint(INCEPTION_FILE)
            raise InceptionWeightsMissing(
                f"Inception-v3 weights not found: {wanted} is missing (downloads are disabled). Put torchvision's "
                f"{INCEPTION_FILE} (Inception_V3_Weights.IMAGENET1K_V1) there, pass its path, or use CLIP features")
        from torchvision.models import inception_v3
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(sd)
        net.fc = torch.nn.Identity()
        self.net = net.eval().requires_grad_(False)
        if device:
            self.net.to(device)
        self.batch = batch
        self.weights_path = str(path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        dev = next(self.net.parameters()).device
        out = []
        for x in _batches(images, self.batch):
            x = x.to(dev).float()
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net(x).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2048))


def inception_available(weights_path: str | os.PathLike | None = None) -> bool:
    return local_weights(INCEPTION_FILE, weights_path) is not None


def feature_extractor(kind: str = "auto", clip=None, *, inception_weights: str | None = None):
    """An extractor by kind: ``"inception"`` (raises :class:`InceptionWeightsMissing` if its weights are not
    local), ``"clip"`` (``clip``: a ClipModel or a name for :func:`load_clip`; default the bundled
    judge ``synthfaces_judge``), or ``"auto"`` (Inception when its weights are local, else CLIP). An object with ``.name``
    and ``__call__`` is returned as it is."""
    if not isinstance(kind, str):
        return kind
    if kind == "auto":
        kind = "inception" if inception_available(inception_weights) else "clip"
    if kind == "inception":
        return InceptionFeatures(inception_weights)
    if kind == "clip":
        if clip is None or isinstance(clip, str):
            from ..clip_models import DEFAULT_JUDGE, load_clip
            clip = load_clip(clip or DEFAULT_JUDGE)
        return ClipFeatures(clip)
    raise ValueError(f"unknown feature extractor {kind!r}: use auto, inception or clip")
