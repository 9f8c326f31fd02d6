"""Captions and attribute labels of SynthFaces images.

``captions(params, domain, seed)`` gives one caption per face, e.g. "a pencil sketch of a smiling face with
round glasses and short blond hair": a domain template (varied), a noun (varied) and a random subset of the
face's visible attributes in random order. It is a pure function of (seed, face stream, face index,
domain), so the same face gets the same caption in any batch.

``attributes(params)`` gives the ground-truth label of every attribute in :data:`ATTRIBUTE_VALUES`;
``attribute_prompt(attr, value, domain)`` the zero-shot retrieval prompt for one value.
"""
from __future__ import annotations

import torch

from .domains import DOMAINS, face_seeds, get_domain
from .params import BEARDS, EYE_COLOURS, GLASSES, HAIR_COLOURS, HAIR_STYLES, HATS, FaceParams, bucket_smile, hash_ints
from .transforms import tint_names

#: Attribute -> its values (label i is ``ATTRIBUTE_VALUES[attr][i]``).
ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "hair_colour": list(HAIR_COLOURS),
    "hair_style": list(HAIR_STYLES),
    "smile": ["smiling", "neutral", "frowning"],
    "glasses": list(GLASSES),
    "eye_colour": list(EYE_COLOURS),
    "hat": list(HATS),
    "beard": list(BEARDS),
}

# words per renderer
_HAIR_STYLE_PHRASE = {
    "short": "short {c} hair", "long": "long {c} hair", "bald": None, "afro": "a {c} afro",
    "bun": "{c} hair in a bun", "mohawk": "a {c} mohawk",
}
_HAIR_STYLE_ONLY = {
    "short": "short hair", "long": "long hair", "bald": "a bald head", "afro": "an afro", "bun": "a hair bun",
    "mohawk": "a mohawk",
}
_ROBOT_TOP = {
    "short": "an antenna", "long": "two antennas", "bald": "a flat head", "afro": "a dome on its head",
    "bun": "a knob on its head", "mohawk": "a fin on its head",
}
_PAINT = {"black": "black", "brown": "brown", "blond": "yellow", "red": "red", "grey": "white", "blue": "blue"}
_FUR = {"black": "black", "brown": "brown tabby", "blond": "cream", "red": "ginger", "grey": "grey",
        "blue": "blue-grey"}
_EYES = {
    "photo": {"brown": "brown eyes", "blue": "blue eyes", "green": "green eyes"},
    "cat": {"brown": "yellow eyes", "blue": "blue eyes", "green": "green eyes"},
    "robot": {"brown": "orange led eyes", "blue": "cyan led eyes", "green": "green led eyes"},
}
_GLASSES = {"none": None, "round": "round glasses", "square": "square glasses", "sunglasses": "sunglasses"}
_HAT = {"none": None, "beanie": "a beanie", "tophat": "a top hat"}
_BEARD = {"none": None, "moustache": "a moustache", "beard": "a beard"}


def attributes(params: FaceParams) -> dict[str, torch.Tensor]:
    """Ground-truth label per attribute: {attr: LongTensor [N]} indexing ``ATTRIBUTE_VALUES[attr]``."""
    return {
        "hair_colour": params.hair_colour.clone(),
        "hair_style": params.hair_style.clone(),
        "smile": bucket_smile(params.smile),
        "glasses": params.glasses.clone(),
        "eye_colour": params.eye_colour.clone(),
        "hat": params.hat.clone(),
        "beard": params.beard.clone(),
    }


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _np(noun: str, adjectives: list[str], withs: list[str]) -> str:
    words = " ".join(adjectives + [noun])
    s = f"{_article(words)} {words}"
    if withs:
        s += " with " + (withs[0] if len(withs) == 1 else ", ".join(withs[:-1]) + " and " + withs[-1])
    return s


def _fill(template: str, np_: str, tint: str | None = None) -> str:
    return template.replace("{tint}", tint or "colour").replace("{}", np_)


def domain_prompt(domain: str) -> str:
    """The canonical zero-shot prompt of a domain, e.g. "a pencil sketch of a face", "a photo of a cat"."""
    d = get_domain(domain)
    return _fill(d.phrases[0], _np(d.nouns[0], list(d.adjectives), []))


def _face_parts(row: dict, renderer: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(adjective parts, with-parts) of one face as (attribute, phrase) pairs, in a fixed order."""
    adj, withs = [], []
    adj.append(("smile", row["smile_word"]))
    style, colour = row["hair_style"], row["hair_colour"]
    if renderer == "photo":
        if style == "bald":
            adj.append(("hair_style", "bald"))
        else:
            withs.append(("hair", _HAIR_STYLE_PHRASE[style].format(c=colour)))
        if row["beard"] != "none":
            withs.append(("beard", _BEARD[row["beard"]]))
        if row["earrings"] != "none":
            withs.append(("earrings", "gold earrings"))
    elif renderer == "cat":
        adj.append(("hair_colour", _FUR[colour]))
    else:  # robot
        withs.append(("hair_style", _ROBOT_TOP[style]))
        withs.append(("hair_colour", f"{_PAINT[colour]} paint"))
    if row["glasses"] != "sunglasses":
        withs.append(("eye_colour", _EYES[renderer][row["eye_colour"]]))
    if row["glasses"] != "none":
        withs.append(("glasses", _GLASSES[row["glasses"]]))
    if row["hat"] != "none":
        withs.append(("hat", _HAT[row["hat"]]))
    return adj, withs


def captions(params: FaceParams, domain: str, seed: int = 0) -> list[str]:
    """One caption per face (deterministic in (seed, face, domain); varied templates and attribute subsets)."""
    d = get_domain(domain)
    n = len(params)
    if n == 0:
        return []
    # a domain's place in the fixed order (held-out styles after the domains), so captions never change
    from .styles import HELDOUT_STYLES
    dom_key = list(DOMAINS).index(domain) if domain in DOMAINS else len(DOMAINS) + list(HELDOUT_STYLES).index(domain)
    base = hash_ints(int(seed), face_seeds(params), dom_key)  # [N]
    r = hash_ints(base[:, None], torch.arange(16)[None, :])  # [N, 16] per-face random integers
    rows = params.to_dict()
    smile_words = [ATTRIBUTE_VALUES["smile"][i] for i in bucket_smile(params.smile).tolist()]
    tints = tint_names(face_seeds(params)) if domain == "tinted" else [None] * n
    out = []
    for i in range(n):
        ri = r[i].tolist()
        row = {k: v[i] for k, v in rows.items()}
        row["smile_word"] = smile_words[i]
        adj, withs = _face_parts(row, d.renderer)
        keep_all = ri[0] % 10 == 0           # 10 %: every attribute
        bare = ri[0] % 10 == 1               # 10 %: no attribute at all
        keep = lambda j: keep_all or (not bare and ri[2 + j] % 100 < 55)  # noqa: E731
        adj_w = [p for j, (_, p) in enumerate(adj) if keep(j)]
        with_items = [(ri[8 + (j % 8)] ^ (j * 2654435761 & 0xFFFF), p) for j, (_, p) in enumerate(withs)
                      if keep(len(adj) + j)]
        with_w = [p for _, p in sorted(with_items)]
        noun = d.nouns[ri[1] % len(d.nouns)]
        template = d.phrases[(ri[1] >> 8) % len(d.phrases)]
        out.append(_fill(template, _np(noun, adj_w + list(d.adjectives), with_w), tints[i]))
    return out


def attribute_prompt(attr: str, value: str, domain: str = "photo") -> str:
    """The zero-shot prompt for one attribute value in a domain, e.g. ("glasses", "round", "sketch") ->
    "a pencil sketch of a face with round glasses"."""
    if attr not in ATTRIBUTE_VALUES or value not in ATTRIBUTE_VALUES[attr]:
        raise KeyError(f"unknown attribute value {attr}={value!r}; known: "
                       f"{ {k: v for k, v in ATTRIBUTE_VALUES.items()} }")
    d = get_domain(domain)
    renderer, noun = d.renderer, d.nouns[0]
    adj: list[str] = []
    withs: list[str] = []
    if attr == "smile":
        adj = [value]
    elif attr == "hair_colour":
        if renderer == "cat":
            adj = [_FUR[value]]
        elif renderer == "robot":
            withs = [f"{_PAINT[value]} paint"]
        else:
            withs = [f"{value} hair"]
    elif attr == "hair_style":
        if renderer == "robot":
            withs = [_ROBOT_TOP[value]]
        elif value == "bald":
            adj = ["bald"]
        else:
            withs = [_HAIR_STYLE_ONLY[value]]
    elif attr == "glasses":
        withs = [_GLASSES[value] or "no glasses"]
    elif attr == "eye_colour":
        withs = [_EYES.get(renderer, _EYES["photo"])[value]]
    elif attr == "hat":
        withs = [_HAT[value] or "no hat"]
    elif attr == "beard":
        if value == "none":
            adj = ["clean-shaven"]
        else:
            withs = [_BEARD[value]]
    return _fill(d.phrases[0], _np(noun, adj + list(d.adjectives), withs), None)
