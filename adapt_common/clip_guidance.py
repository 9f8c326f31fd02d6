"""CLIP guidance for one-shot adaptation, shared by the GAN and the diffusion trainers.

A :class:`ClipGuide` holds one or more CLIP models (the bundled small CLIP offline, ViT-B/32 and ViT-B/16 at real
scale); every loss is computed per model and summed, as in StyleGAN-NADA, MTG, DiFa and HyperDomainNet.

The domain direction Δ in CLIP space comes from text (mean over templates of t_target − t_source, as NADA) or
from one reference image (E(I_ref) − mean E(G_source(z)), as DiFa: the mean of source samples is a steadier
anchor than any one image). Losses, on normalised embeddings of matching source/adapted batches (a = source,
b = adapted):

- ``direction``: 1 − cos(E(b) − E(a), Δ), the directional loss (the cosine's norm floored at
  :data:`DIFFERENCE_FLOOR`, so the first step, where b = a, has a finite gradient);
- ``indomain``: HyperDomainNet's in-domain angle consistency, mean over pairs i < j of
  (⟨a_i, a_j⟩ − ⟨b_i, b_j⟩)²: keeps the batch's pairwise geometry, so the adapted samples stay as different
  from each other as the source ones (it fixed the pop-art collapse in docs/small_clip_guidance.md);
- ``tt_direction``: for batches where each sample has its own target (hypernetwork training), pairs of samples
  of different targets should differ along the difference of their targets' directions;
- ``clip_ref``: 1 − cos(E(b_ref), E(I_ref)) for the adapted image of the reference's own latent;
- ``clip_within``: MTG's within-domain term, 1 − cos(E(b) − E(I_ref), E(a) − E(a_ref)).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .clip_models import ClipModel, load_clip

#: Text templates for prompt ensembling. A small CLIP trained on one caption style needs few; NADA uses 79.
DEFAULT_TEMPLATES = ("{}",)


#: Differences of unit embeddings shorter than this count as "no direction yet": the cosine divides by at least
#: this much. Without it the first step, where the adapted generator still equals the source (b − a = 0),
#: has a gradient ~1/|b − a| ≈ 1e8 that fills Adam's second moment and stalls training for hundreds of steps.
DIFFERENCE_FLOOR = 0.02


def _cosine_loss(x: torch.Tensor, y: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    """mean 1 − ⟨x, ŷ⟩ / max(|x|, floor)."""
    y = F.normalize(y, dim=-1).expand_as(x)
    return (1 - (x * y).sum(-1) / x.norm(dim=-1).clamp_min(floor)).mean()


class ClipGuide:
    """``fast``: vision transformers encode images through :func:`adapt_common.clip_models.vit_cls_features` (the
    package's embeddings bit for bit, with fewer copies); ``cls_only_last``: also its class-token-only last block
    (faster, equal within float rounding). See :meth:`adapt_common.clip_models.ClipModel.encode_images`."""

    def __init__(self, clips: Sequence[ClipModel | str], device: str | torch.device = "cpu", *, fast: bool = False,
                 cls_only_last: bool = False):
        if not clips:
            raise ValueError("CLIP guidance needs at least one CLIP model")
        self.clips = [load_clip(c, device) if isinstance(c, str) else c.to(device).eval().requires_grad_(False)
                      for c in clips]
        self.names = [c.name for c in self.clips]
        self.fast, self.cls_only_last = fast, cls_only_last

    # -- embeddings ------------------------------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised embeddings of [-1, 1] images, one [N, D] tensor per CLIP (gradients flow)."""
        if self.fast or self.cls_only_last:
            return [c.encode_images(images, fast=True, cls_only_last=self.cls_only_last) for c in self.clips]
        return [c.encode_images(images) for c in self.clips]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[torch.Tensor]:
        """Per CLIP: [len(texts), len(templates), D], each template's embedding normalised."""
        out = []
        for c in self.clips:
            emb = c.encode_texts([t.format(x) for x in texts for t in templates])
            out.append(emb.reshape(len(texts), len(templates), -1))
        return out

    @torch.no_grad()
    def text_direction(self, source: str, target: str, templates: Sequence[str] = DEFAULT_TEMPLATES
                       ) -> list[torch.Tensor]:
        """Per CLIP: the normalised mean over templates of t_target − t_source, [D]."""
        out = []
        for emb in self.encode_texts([source, target], templates):
            out.append(F.normalize((emb[1] - emb[0]).mean(0), dim=-1))
        return out

    @torch.no_grad()
    def mean_embedding(self, sample, n: int = 256, batch: int = 32) -> list[torch.Tensor]:
        """Per CLIP: the normalised mean embedding of ``n`` images from ``sample(count) -> images``."""
        sums = None
        done = 0
        while done < n:
            k = min(batch, n - done)
            embs = self.encode_images(sample(k))
            sums = [e.sum(0) for e in embs] if sums is None else [s + e.sum(0) for s, e in zip(sums, embs)]
            done += k
        return [F.normalize(s / n, dim=-1) for s in sums]

    @torch.no_grad()
    def image_direction(self, reference: torch.Tensor, source_mean: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per CLIP: normalise(E(reference) − source_mean) (reference [1, 3, H, W] or several, averaged)."""
        refs = self.encode_images(reference)
        return [F.normalize(r.mean(0) - m, dim=-1) for r, m in zip(refs, source_mean)]

    # -- losses (summed over the CLIP models) --------------------------------------------------------------

    @staticmethod
    def direction_loss(emb_b: Sequence[torch.Tensor], emb_a: Sequence[torch.Tensor],
                       directions: Sequence[torch.Tensor]) -> torch.Tensor:
        """Σ_models mean_i 1 − cos(b_i − a_i, Δ) (Δ [D], or [N, D] for a per-sample target)."""
        return sum(_cosine_loss(b - a, d, DIFFERENCE_FLOOR) for b, a, d in zip(emb_b, emb_a, directions))

    @staticmethod
    def indomain_loss(emb_b: Sequence[torch.Tensor], emb_a: Sequence[torch.Tensor]) -> torch.Tensor:
        """Σ_models mean over pairs i < j of (⟨a_i, a_j⟩ − ⟨b_i, b_j⟩)²."""
        total = 0
        for b, a in zip(emb_b, emb_a):
            n = b.shape[0]
            if n < 2:
                raise ValueError("the in-domain angle consistency loss needs a batch of at least 2")
            iu = torch.triu_indices(n, n, 1, device=b.device)
            total = total + ((a @ a.t() - b @ b.t())[iu[0], iu[1]]).square().mean()
        return total

    @staticmethod
    def tt_direction_loss(emb_b: Sequence[torch.Tensor], directions: Sequence[torch.Tensor],
                          targets: torch.Tensor) -> torch.Tensor:
        """Σ_models mean over pairs of different targets of 1 − cos(b_i − b_j, Δ_i − Δ_j); directions [N, D]
        per sample, ``targets`` [N] ids (pairs of one target are skipped)."""
        total = 0
        i, j = torch.triu_indices(len(targets), len(targets), 1)
        keep = targets[i] != targets[j]
        if not keep.any():
            return torch.zeros(())
        i, j = i[keep], j[keep]
        for b, d in zip(emb_b, directions):
            total = total + _cosine_loss(b[i] - b[j], d[i] - d[j], DIFFERENCE_FLOOR)
        return total

    @staticmethod
    def clip_ref_loss(emb_b_ref: Sequence[torch.Tensor], emb_ref: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(_cosine_loss(b, r) for b, r in zip(emb_b_ref, emb_ref))

    @staticmethod
    def clip_within_loss(emb_b, emb_ref, emb_a, emb_a_ref) -> torch.Tensor:
        return sum(_cosine_loss(b - r, a - ar, DIFFERENCE_FLOOR) for b, r, a, ar in zip(emb_b, emb_ref, emb_a, emb_a_ref))
