"""One-shot CLIP Quality and Diversity (HyperDomainNet, reused by StyleDomain; spec styledomain.md §6.1).

- ``Quality = mean_{i,t} <E(x_i), T_t>``: the mean cosine between the normalised image embeddings and the target:
  text embeddings of the prompt under each template (each normalised; the cosine is averaged over templates, not
  the embeddings renormalised after averaging), or a reference image embedding.
- ``Diversity = mean_{i<j} (1 − <E(x_i), E(x_j)>)``.

Templates: the HyperDomainNet evaluation notebook averages over the 79 ``imagenet_templates`` of CLIP's
prompt-engineering notebook, the StyleDomain draft uses the single template ``"A {}"``. This module ships a
small set (:data:`SMALL_TEMPLATES`) for real CLIPs and bare class names; for the SynthFaces CLIP, whose domain
prompts are already whole captions, the prompt is used as it is (:data:`PROMPT_ONLY`). Numbers depend on the
CLIP, the number of samples, ψ and the template set: state all of them next to every number.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: The prompt as it is (SynthFaces prompts are full captions such as "a pencil sketch of a face").
PROMPT_ONLY: tuple[str, ...] = ("{}",)
#: A few of CLIP's imagenet templates (the papers use all 79).
SMALL_TEMPLATES: tuple[str, ...] = (
    "a {}.", "a photo of a {}.", "a rendering of a {}.", "a good photo of a {}.", "a close-up photo of a {}.",
    "a drawing of a {}.", "a picture of a {}.",
)
TEMPLATE_SETS = {"prompt-only": PROMPT_ONLY, "small": SMALL_TEMPLATES}


def template_set(templates) -> tuple[str, tuple[str, ...]]:
    """(name, templates) for a set name or a sequence of ``{}`` templates."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(f"unknown template set {templates!r}; known: {sorted(TEMPLATE_SETS)}")
        return templates, TEMPLATE_SETS[templates]
    templates = tuple(templates)
    for name, ts in TEMPLATE_SETS.items():
        if ts == templates:
            return name, ts
    return "custom", templates


@torch.no_grad()
def text_target(clip, prompt: str, templates=PROMPT_ONLY) -> torch.Tensor:
    """The normalised text embeddings [T, D] of ``prompt`` under each template."""
    _, ts = template_set(templates)
    return clip.encode_texts([t.format(prompt) for t in ts]).float()


def quality(image_emb: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine between image embeddings [N, D] and the target: [D] (a text or reference-image embedding)
    or [T, D] (one embedding per template, averaged over templates)."""
    x = F.normalize(torch.as_tensor(image_emb).double(), dim=-1)
    t = F.normalize(torch.as_tensor(target).double().reshape(-1, x.shape[-1]), dim=-1)
    return float((x @ t.T).mean())


def diversity(image_emb: torch.Tensor) -> float:
    """Mean over pairs i < j of ``1 − cos(e_i, e_j)`` (NaN for fewer than 2 embeddings)."""
    x = F.normalize(torch.as_tensor(image_emb).double(), dim=-1)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    gram = x @ x.T
    mean_cos = (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))
    return float(1 - mean_cos)
