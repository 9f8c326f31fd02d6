"""Intra-cluster diversity (Intra-LPIPS / IC-LPIPS), the few-shot diversity metric of Ojha et al. 2021 (CDC).

Every generated image is assigned to its closest training image (the cluster centres, usually the 10 shots)
by the distance metric; the value is the mean pairwise distance among the members of each cluster that has
at least 2 members, averaged over those clusters. A generator that copies its training images scores 0.

Distance metrics (the one used is named in the result's ``metric``):

- ``lpips-alex(v0.1)``: real LPIPS (``lpips.LPIPS(net="alex")``, v0.1 linear weights shipped inside the lpips
  package) with torchvision's ImageNet AlexNet trunk read from a **local** file
  (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` or an explicit path). lpips would download that
  file itself; here the trunk is built empty (``pnet_rand=True``) and the local weights are loaded into it, so
  nothing is ever downloaded. Images below 64 px are upsampled to 64 px first.
- fallback when the AlexNet weights are absent: ``cosine:<extractor name>``, the cosine distance ``1 − cos`` of a
  feature extractor's features (in :func:`adapt_common.metrics.evaluate.evaluate`, the CLIP image embedding;
  the SynthFaces CLIP was trained on this world and separates its attributes). Values are not comparable with
  published Intra-LPIPS numbers; the metric name says which was used.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from .features import ALEXNET_FILE, hub_checkpoint, local_weights

#: torchvision ``alexnet.features`` index -> LPIPS slice holding it (the layers with weights).
_ALEX_SLICE = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


class LpipsWeightsMissing(FileNotFoundError):
    """The AlexNet trunk weights for LPIPS are not on this machine (and will not be downloaded)."""


def lpips_available(weights_path: str | os.PathLike | None = None) -> bool:
    return local_weights(ALEXNET_FILE, weights_path) is not None


class LpipsDistance:
    """Real LPIPS (AlexNet, v0.1) from local files only; ``distance(x, y)`` -> [N] for paired [-1, 1] images."""

    name = "lpips-alex(v0.1)"

    def __init__(self, weights_path: str | os.PathLike | None = None, batch: int = 64, device: str | None = None):
        path = local_weights(ALEXNET_FILE, weights_path)
        if path is None:
            wanted = weights_path if weights_path is not None else hub_checkpoint(ALEXNET_FILE)
            raise LpipsWeightsMissing(f"LPIPS needs torchvision's AlexNet weights {ALEXNET_FILE}: {wanted} is "
                                      f"missing (downloads are disabled)")
        import lpips
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`
            model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        trunk = {}
        for k, v in sd.items():
            parts = k.split(".")
            if parts[0] == "features" and int(parts[1]) in _ALEX_SLICE:
                trunk[f"slice{_ALEX_SLICE[int(parts[1])]}.{parts[1]}.{parts[2]}"] = v
        model.net.load_state_dict(trunk, strict=True)
        self.model = model.eval().requires_grad_(False)
        if device:
            self.model.to(device)
        self.batch = batch
        self.weights_path = str(path)

    min_size = 64

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images smaller than 64 px are upsampled (bilinear) to 64: AlexNet's pooling needs about 32 px."""
        images = images.float()
        if min(images.shape[-2:]) < self.min_size:
            images = torch.nn.functional.interpolate(images, size=(self.min_size, self.min_size), mode="bilinear",
                                                     align_corners=False)
        return images

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        out = [self.model(a[i:i + self.batch].to(dev), b[i:i + self.batch].to(dev)).flatten().cpu()
               for i in range(0, a.shape[0], self.batch)]
        return torch.cat(out).double() if out else torch.zeros(0, dtype=torch.float64)


class FeatureCosineDistance:
    """``1 − cos`` between a feature extractor's features; name ``cosine:<extractor name>``."""

    def __init__(self, extractor):
        self.extractor = extractor
        self.name = f"cosine:{extractor.name}"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        f = torch.from_numpy(np.asarray(self.extractor(images), dtype=np.float64))
        return torch.nn.functional.normalize(f, dim=-1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - (a * b).sum(-1)


def distance_metric(metric="auto", features=None, *, lpips_weights: str | None = None):
    """A distance metric: ``"lpips"`` (raises :class:`LpipsWeightsMissing` without the local AlexNet file),
    ``"features"`` (cosine distance of ``features``), ``"auto"`` (LPIPS when its weights are local, else the
    feature cosine distance), or an object with ``name``, ``prepare`` and ``distance`` (returned as is)."""
    if not isinstance(metric, str):
        return metric
    if metric == "auto":
        metric = "lpips" if lpips_available(lpips_weights) else "features"
    if metric == "lpips":
        return LpipsDistance(lpips_weights)
    if metric == "features":
        if features is None:
            raise ValueError(f"LPIPS weights ({ALEXNET_FILE}) are not local and no feature extractor was given "
                             f"for the fallback distance: pass features=ClipFeatures(clip)")
        return FeatureCosineDistance(features)
    raise ValueError(f"unknown distance metric {metric!r}: use auto, lpips or features")


def intra_cluster_lpips(generated: torch.Tensor, train_images: torch.Tensor, metric="auto", *, features=None,
                        max_pairs_per_cluster: int | None = 2000, seed: int = 0) -> dict:
    """Intra-cluster diversity of ``generated`` around the cluster centres ``train_images`` (both [-1, 1]).

    ``metric``: see :func:`distance_metric` (``features`` is the extractor for the fallback). Clusters with more
    than ``max_pairs_per_cluster`` pairs use that many pairs drawn by a seeded generator (None: all pairs).
    Returns ``{value, std (over clusters), metric, n_clusters_used, cluster_sizes, n_generated, n_train}``;
    ``value`` is NaN when no cluster has 2 members.
    """
    m = distance_metric(metric, features)
    g = m.prepare(generated)
    t = m.prepare(train_images)
    n, k = g.shape[0], t.shape[0]
    # distance of every generated image to every centre: [N, K]
    cross = torch.stack([m.distance(g, t[j:j + 1].expand(n, *t.shape[1:])) for j in range(k)], dim=1)
    assign = cross.argmin(dim=1)
    rng = np.random.RandomState(seed)
    per_cluster, sizes = [], []
    for j in range(k):
        members = torch.nonzero(assign == j).flatten().numpy()
        sizes.append(int(members.size))
        if members.size < 2:
            continue
        ii, jj = np.triu_indices(members.size, k=1)
        if max_pairs_per_cluster is not None and ii.size > max_pairs_per_cluster:
            pick = rng.choice(ii.size, max_pairs_per_cluster, replace=False)
            ii, jj = ii[pick], jj[pick]
        a, b = torch.from_numpy(members[ii]), torch.from_numpy(members[jj])
        per_cluster.append(float(m.distance(g[a], g[b]).mean()))
    return {
        "value": float(np.mean(per_cluster)) if per_cluster else float("nan"),
        "std": float(np.std(per_cluster)) if per_cluster else float("nan"),
        "metric": m.name,
        "n_clusters_used": len(per_cluster),
        "cluster_sizes": sizes,
        "n_generated": n,
        "n_train": k,
    }
