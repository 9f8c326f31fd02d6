"""The SynthFaces domains: the source (photo), similar domains (an image-only transform of the photo),
dissimilar domains (another renderer of the same parameters) and distractors (nuisance changes of the
photo, only for training the CLIP so that a colour shift alone cannot satisfy a target prompt)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import transforms as T
from .params import FaceParams, hash_ints
from .render import render

KINDS = ("source", "similar", "dissimilar", "distractor")


@dataclass(frozen=True)
class Domain:
    """One domain.

    ``phrases``: caption templates with ``{}`` for the subject noun phrase (``{tint}`` for the tint name);
    the first one, with ``nouns[0]``, makes the canonical prompt (:func:`domain_prompt`).
    ``transform``: the image-only ``T(images[-1, 1]) -> images[-1, 1]`` (similar domains; distractors also
    take ``seeds``); ``None`` for dissimilar domains, which have their own ``renderer``.
    """
    name: str
    kind: str
    description: str
    phrases: tuple[str, ...]
    transform: Optional[Callable[..., torch.Tensor]] = None
    renderer: str = "photo"
    nouns: tuple[str, ...] = ("face", "person")
    adjectives: tuple[str, ...] = field(default=())  # extra adjectives for captions ("green" zombie ...)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} not in {KINDS}")

    def __call__(self, images: torch.Tensor, seeds=None) -> torch.Tensor:
        """Apply the transform to any images ([N, 3, H, W] in [-1, 1])."""
        if self.transform is None:
            raise TypeError(f"{self.name} is a {self.kind} domain: it has a renderer, not an image transform")
        if self.kind == "distractor":
            return self.transform(images, seeds)
        return self.transform(images)

    @property
    def prompt(self) -> str:
        from .captions import domain_prompt  # captions imports this module
        return domain_prompt(self.name)


def _identity(x):
    return x


_D = [
    Domain("photo", "source", "shaded procedural portrait photo (the source domain)",
           ("a photo of {}", "a portrait photo of {}", "a photograph of {}", "a picture of {}"), _identity),
    # similar: image-only transforms
    Domain("sketch", "similar", "pencil sketch: gray dodge outlines and hatching on white paper",
           ("a pencil sketch of {}", "a pencil drawing of {}", "a sketch of {}", "a graphite drawing of {}"),
           T.sketch),
    Domain("popart", "similar", "pop art: oversaturated, posterised to 3 levels per channel",
           ("a pop art painting of {}", "a pop art print of {}", "pop art of {}", "a warhol style print of {}"),
           T.popart),
    Domain("pixelart", "similar", "pixel art: 16x16 blocks, 5 levels per channel (125 colours)",
           ("a pixel art image of {}", "pixel art of {}", "an 8-bit pixel art sprite of {}",
            "a retro pixel art picture of {}"), T.pixelart),
    Domain("negative", "similar", "photographic negative (inverted colours)",
           ("a negative photo of {}", "an inverted color photo of {}", "a photo negative of {}",
            "a film negative of {}"), T.negative),
    Domain("sepia", "similar", "vintage sepia photo: brown monochrome, faded, vignette",
           ("a sepia photo of {}", "a vintage sepia photograph of {}", "an old sepia photo of {}",
            "an antique brown photo of {}"), T.sepia),
    Domain("watercolor", "similar", "watercolour: bleeding soft washes, pooled edges, paper texture, white margins",
           ("a watercolor painting of {}", "a watercolour of {}", "a watercolor of {}",
            "a soft watercolor painting of {}"), T.watercolor),
    Domain("zombie", "similar", "zombie: skin hues turned sickly green, desaturated and darker",
           ("a photo of {}", "a picture of {}", "a horror movie still of {}", "a scary photo of {}"),
           T.zombie, adjectives=("zombie",)),
    Domain("cartoon", "similar", "cartoon: cel-shaded flat colour bands (4 brightness levels) with dark outlines",
           ("a cartoon of {}", "a cartoon drawing of {}", "a comic style cartoon of {}",
            "an animated cartoon of {}"), T.cartoon),
    Domain("thermal", "similar", "thermal camera image: heat colour map (black-purple-orange-yellow)",
           ("a thermal image of {}", "an infrared heat map of {}", "a thermal camera photo of {}",
            "a heat vision image of {}"), T.thermal),
    # dissimilar: own renderers of the same parameters
    Domain("cat", "dissimilar", "cat face: ears, whiskers, pink nose, slit pupils, fur from the hair colour",
           ("a photo of {}", "a picture of {}", "a portrait of {}", "an image of {}"), None, renderer="cat",
           nouns=("cat", "cat face", "kitten")),
    Domain("robot", "dissimilar", "robot head: metal plates, LED eyes, antenna/top piece, grille mouth",
           ("a photo of {}", "a picture of {}", "a render of {}", "an image of {}"), None, renderer="robot",
           nouns=("robot", "robot head", "metal robot")),
    # distractors: photo with nuisance changes
    Domain("tinted", "distractor", "photo with a blue, red, green or orange colour cast",
           ("a tinted photo of {}", "a {tint}-tinted photo of {}", "a photo of {} with a {tint} tint",
            "a {tint} toned photo of {}"), T.tinted),
    Domain("saturated", "distractor", "oversaturated photo",
           ("a saturated photo of {}", "an oversaturated photo of {}", "a vivid color photo of {}",
            "a high saturation photo of {}"), T.saturated),
    Domain("washed", "distractor", "washed-out low-contrast photo",
           ("a washed out photo of {}", "a faded low contrast photo of {}", "a pale washed out photo of {}",
            "a low contrast photo of {}"), T.washed),
    Domain("grayscale", "distractor", "black-and-white photo",
           ("a black and white photo of {}", "a grayscale photo of {}", "a monochrome photo of {}",
            "a b&w photo of {}"), T.grayscale),
    Domain("blurry", "distractor", "out-of-focus photo",
           ("a blurry photo of {}", "an out of focus photo of {}", "a blurred photo of {}",
            "a soft focus photo of {}"), T.blurry),
    Domain("noisy", "distractor", "photo with Gaussian sensor noise (deterministic per face)",
           ("a noisy photo of {}", "a grainy photo of {}", "a photo of {} with noise",
            "a noisy low light photo of {}"), T.noisy),
]

#: Every domain by name, in a fixed order (source, similar, dissimilar, distractor).
DOMAINS: dict[str, Domain] = {d.name: d for d in _D}


def get_domain(name: str) -> Domain:
    """A domain of ``DOMAINS`` or a held-out style (:mod:`.styles`, validation and test families)."""
    from .styles import HELDOUT_STYLES  # styles imports this module
    if name in DOMAINS:
        return DOMAINS[name]
    if name in HELDOUT_STYLES:
        return HELDOUT_STYLES[name]
    raise KeyError(f"unknown SynthFaces domain {name!r}; known: {', '.join(DOMAINS)}; held-out styles: "
                   f"{', '.join(HELDOUT_STYLES)}")


def domains_of_kind(*kinds: str) -> list[str]:
    return [n for n, d in DOMAINS.items() if d.kind in kinds]


def face_seeds(params: FaceParams) -> torch.Tensor:
    """One int64 seed per face, a function of (stream, index): drives distractor noise and tints."""
    return hash_ints(params.stream, params.index)


def render_domain(params: FaceParams, domain: str, size: int = 64) -> torch.Tensor:
    """Images of ``params`` in ``domain``: [N, 3, size, size] in [-1, 1].

    Source/similar/distractor: ``T(render(params, "photo"))``; dissimilar: the domain's own renderer."""
    d = get_domain(domain)
    base = render(params, d.renderer, size=size)
    if d.kind == "dissimilar" or d.kind == "source":
        return base
    with torch.no_grad():
        if d.kind == "distractor":
            return d.transform(base, face_seeds(params)).clamp(-1, 1)
        return d.transform(base).clamp(-1, 1)


def apply_domain(images: torch.Tensor, domain: str, seeds=None) -> torch.Tensor:
    """The ground-truth transform of a similar (or distractor) domain applied to any images, e.g. a source
    generator's output: ``T(G_s(w))``. Differentiable (quantisers pass gradients straight through)."""
    return get_domain(domain)(images, seeds)
