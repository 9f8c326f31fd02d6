"""SynthFaces: a procedural world of faces with per-sample ground truth, for CLIP training, generator
training and domain-adaptation benchmarks. Nothing is downloaded: every image is rendered on the fly.

    from adapt_common import synthfaces as sf
    p = sf.sample_params(16, seed=sf.SPLITS["train"])       # faces 0..15 of the train stream
    x = sf.render_domain(p, "sketch", size=64)                # [16, 3, 64, 64] in [-1, 1]
    texts = sf.captions(p, "sketch")                          # "a pencil sketch of a smiling face with ..."
    y = sf.apply_domain(G(w), "sketch")                       # ground truth T(G_s(w)) of a similar domain

    python -m adapt_common.synthfaces info | preview --out grid.png | export ... | fewshot ...
"""
from .captions import ATTRIBUTE_VALUES, attribute_prompt, attributes, captions, domain_prompt
from .data import (FEWSHOT_SHOTS, SPLITS, eval_set, export_folder, fewshot_image, fewshot_set, preview_grid,
                   split_params)
from .domains import DOMAINS, KINDS, Domain, apply_domain, domains_of_kind, face_seeds, get_domain, render_domain
from .latents import params_from_z, render_from_z
from .params import (PARAM_NAMES, PARAM_SPEC, FaceParams, ParamSpec, bucket_smile, describe_params, params_from_uniform,
                     sample_params)
from .render import RENDERERS, render, render_background
from .styles import (FAMILIES, HELDOUT_STYLES, STYLE_FAMILY, STYLE_KIND, STYLE_KINDS, expand_families, family_of,
                     styles_of_family)

__all__ = [
    "ATTRIBUTE_VALUES", "DOMAINS", "Domain", "FEWSHOT_SHOTS", "FaceParams", "KINDS", "PARAM_NAMES", "PARAM_SPEC",
    "ParamSpec", "RENDERERS", "params_from_uniform", "SPLITS", "apply_domain", "attribute_prompt", "attributes", "bucket_smile",
    "captions", "describe_params", "params_from_z", "render_from_z", "domain_prompt", "domains_of_kind", "eval_set", "export_folder",
    "face_seeds", "fewshot_image", "fewshot_set", "get_domain", "preview_grid", "render", "render_background", "render_domain",
    "sample_params", "split_params", "FAMILIES", "HELDOUT_STYLES", "STYLE_FAMILY", "STYLE_KIND", "STYLE_KINDS",
    "expand_families", "family_of", "styles_of_family",
]
