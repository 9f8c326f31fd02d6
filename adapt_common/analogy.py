"""An image analogy fitted on one pair: A : A' :: B : ?  (Hertzmann et al., "Image Analogies", SIGGRAPH 2001).

One-shot adaptation from a reference image A' has one pair to learn from once the reference is inverted into the
source generator: A = G_A(w_ref), the nearest source face, and A' the reference. :class:`ImageAnalogy` learns a
transform T̂ with T̂(A) ≈ A' that is simple enough to hold for other faces B: a global colour map
(:class:`adapt_common.colour_map.ColourMap`, least squares) followed by a small residual convolutional net on the
colour-mapped image, the image itself and the pixel's position (|x| about the vertical mid-line, and y: aligned
faces are close to symmetric). The net is what a colour map cannot be: edges, local contrast, position-dependent
tones. Its last layer starts at zero, so before training T̂ is the colour map exactly.

How long the net trains is chosen on the pair itself: it is fitted on the left half of the image and scored on
the right half every few steps; the best step count (0: the colour map alone) is then used to refit on the whole
image. One pair overfits quickly, and this holds a part of it out without any other data.

    analogy, info = ImageAnalogy.fit(source_face, reference)    # [1, 3, H, W] each, in [-1, 1]
    pseudo_target = analogy(G_A(w))                             # any images of the source domain

One-shot training uses T̂(G_A(w)) as a pixel target for G_B(w) (``loss.analogy_l1`` of the one-shot trainer): the
analogy supplies what the pair shows, the trained parameterization makes it a property of the generator.

One pair also teaches the analogy the inversion's errors: where the inverted face differs from the reference's true
face (another skin tone, a sharper edge), T̂ learns to "correct" it, and applies that correction to every other
face. :class:`AnalogyEnsemble` averages analogies fitted on several views of the reference (the reference and its
mirror image, each inverted on its own: a style-invariant encoder is not mirror-symmetric, so the two inversions
err differently while the style is the same; with several reference images of the style, each image and its
mirror), and pulls the average towards the unchanged face by how much the views disagree (:func:`shrinkage`), a
Wiener-style factor signal² / (signal² + k · disagreement² · 2 / M) for M views:

    views = [ImageAnalogy.fit(invert(r), r)[0] for r in (reference, reference.flip(-1))]
    s = shrinkage(views, probe_faces, k=2.0)                   # probe_faces: a few G_A(w)
    analogy = AnalogyEnsemble(views, strength=s.strength)      # x + s * (mean_i T̂_i(x) - x)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .colour_map import ColourMap


def _coordinates(n: int, h: int, w: int, device) -> torch.Tensor:
    """[n, 2, h, w]: |x| about the mid-line (0 at the centre, 1 at the edges) and y in [-1, 1]."""
    ys = torch.linspace(-1, 1, h, device=device).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=device).abs().view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([xs, ys], 1)


@dataclass
class AnalogyFit:
    """What :meth:`ImageAnalogy.fit` measured: mean L1 (0..1 scale) on the held-out right half."""
    steps: int  # the chosen training steps of the residual net (0: colour map alone)
    holdout_colour_map: float  # the colour map alone
    holdout_best: float  # the net at the chosen step count (fitted on the left half)
    holdout_identity: float  # the unchanged source: the gap


class ImageAnalogy(nn.Module):
    """T̂(x) = C(x) + f([C(x), x, |x_pos|, y_pos]) with C a polynomial colour map and f a small conv net."""

    def __init__(self, degree: int = 3, width: int = 32, depth: int = 3, coordinates: bool = True):
        super().__init__()
        self.coordinates = coordinates
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got {depth} and {width}")
        self.degree = degree
        self.register_buffer("colour_coef", ColourMap.identity(degree).coef)  # until fitted
        layers, c = [], 3 + 3 + (2 if coordinates else 0)
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.2)]
            c = width
        last = nn.Conv2d(c, 3, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    @property
    def colour_map(self) -> ColourMap:
        return ColourMap(degree=self.degree, coef=self.colour_coef)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> the analogous images, [-1, 1]."""
        base = self.colour_map(images).to(images.dtype)
        n, _, h, w = images.shape
        parts = [base, images]
        if self.coordinates:
            parts.append(_coordinates(n, h, w, images.device).to(images.dtype))
        inp = torch.cat(parts, 1)
        return (base + self.net(inp)).clamp(-1, 1)

    @classmethod
    def fit(cls, source: torch.Tensor, target: torch.Tensor, *, steps: int = 600, lr: float = 2e-3,
            check_every: int = 25, degree: int = 3, width: int = 32, depth: int = 3, coordinates: bool = True,
            seed: int = 0
            ) -> tuple["ImageAnalogy", AnalogyFit]:
        """Fit T̂ with T̂(source) ≈ target (one pair, [1, 3, H, W] each, [-1, 1]); see the module doc."""
        if source.shape != target.shape or source.ndim != 4 or source.shape[:2] != (1, 3):
            raise ValueError(f"an analogy is fitted on one RGB pair of one shape, got {tuple(source.shape)} and "
                             f"{tuple(target.shape)}")
        if steps < 0 or check_every < 1:
            raise ValueError(f"steps must be >= 0 and check_every >= 1, got {steps} and {check_every}")
        source, target = source.detach().float().clamp(-1, 1), target.detach().float().clamp(-1, 1)
        cmap = ColourMap.fit(source, target, degree=degree)
        w = source.shape[-1]
        left = torch.zeros_like(source[:, :1])
        left[..., : w // 2] = 1
        right = 1 - left

        def masked_l1(x, mask):
            return ((x - target).abs() * mask).sum() / (mask.sum() * 3) / 2

        def make():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(degree=degree, width=width, depth=depth, coordinates=coordinates).to(source.device)
            model.colour_coef.copy_(cmap.coef)
            return model

        def train(model, mask, n_steps, score_mask=None):
            """Adam on the masked L1 for n_steps; with score_mask, (best step, best score) checked on it."""
            opt = torch.optim.Adam(model.net.parameters(), lr=lr)
            best = (0, float(masked_l1(model(source).detach(), score_mask))) if score_mask is not None else None
            for step in range(1, n_steps + 1):
                loss = masked_l1(model(source), mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if score_mask is not None and (step % check_every == 0 or step == n_steps):
                    with torch.no_grad():
                        score = float(masked_l1(model(source), score_mask))
                    if score < best[1]:
                        best = (step, score)
            return best

        with torch.enable_grad():
            probe = make()
            with torch.no_grad():
                cmap_score = float(masked_l1(probe(source), right))
                identity = float(masked_l1(source, right))
            best_step, best_score = train(probe, left, steps, right)
            model = make()
            if best_step > 0:
                train(model, left + right, best_step)
        model.requires_grad_(False).eval()
        return model, AnalogyFit(steps=best_step, holdout_colour_map=cmap_score, holdout_best=best_score,
                                 holdout_identity=identity)


class AnalogyEnsemble(nn.Module):
    """x + strength · (mean_i T̂_i(x) − x): the mean of analogies fitted on views of the style, pulled towards
    the unchanged image by ``strength`` in [0, 1] (a buffer, so that a saved state restores it exactly)."""

    def __init__(self, members: list[ImageAnalogy], strength: float = 1.0):
        super().__init__()
        if not members:
            raise ValueError("an analogy ensemble needs at least one fitted analogy")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.members = nn.ModuleList(members)
        self.register_buffer("strength", torch.tensor(float(strength)))

    def mean_analogy(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(images) for m in self.members]).mean(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images + self.strength.to(images.dtype) * (self.mean_analogy(images) - images)).clamp(-1, 1)


@dataclass
class Shrinkage:
    """What :func:`shrinkage` measured on the probe faces (mean L1 on the 0..1 scale)."""
    signal: float  # the averaged analogy's change of a face
    disagreement: float  # between the views' analogies (the mean over pairs of views)
    strength: float  # signal² / (signal² + k · disagreement²)


@torch.no_grad()
def shrinkage(members: list[ImageAnalogy], probe: torch.Tensor, k: float) -> Shrinkage:
    """How far to trust the mean of ``members`` (analogies fitted on views of one reference), judged on ``probe``
    [N, 3, H, W] source faces other than the reference's: the views agree on the style and disagree on what each
    learned from its own inversion's errors, so their disagreement estimates the part of the change that is noise.
    Strength = signal² / (signal² + k · disagreement² · 2 / M) for M members; k = 0 trusts the mean fully
    (strength 1)."""
    if len(members) < 2 and k > 0:
        raise ValueError("the shrinkage compares analogies fitted on different views: it needs at least two")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    outs = torch.stack([m(probe) for m in members])
    mean = outs.mean(0)
    signal = float((mean - probe).abs().mean() / 2)
    pairs = [(i, j) for i in range(len(members)) for j in range(i + 1, len(members))]
    disagreement = float(sum((outs[i] - outs[j]).abs().mean() for i, j in pairs) / (2 * len(pairs))) if pairs else 0.0
    # The mean of M views errs by about disagreement / sqrt(2 M) (disagreement ~ sqrt(2) x one view's error): the
    # pull weakens as views are added, and two views (one reference and its mirror image) keep k's first meaning
    # exactly.
    denominator = signal ** 2 + k * disagreement ** 2 * 2 / len(members)
    strength = signal ** 2 / denominator if denominator > 0 else 0.0
    return Shrinkage(signal=signal, disagreement=disagreement, strength=float(strength))
