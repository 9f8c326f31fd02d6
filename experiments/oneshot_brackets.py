"""The brackets of a one-shot table: what doing nothing, a trivial recolouring and the reachable best score on a
family of SynthFaces styles, with 95 % intervals, and the one-shot methods scored between them.

    python -m experiments.oneshot_brackets --family validation [--refs 2] [--n 256] [--out reports/brackets_validation]
        [--encoder checkpoints/synthfaces_encoder.safetensors] [--methods encoder_analogy,oracle:1] [--seeds 3]
    python -m experiments.oneshot_brackets --merge a/results.json b/results.json --out reports/x   # side-by-side parts
    python -m experiments.oneshot_brackets --compare a/results.json:ROW b/results.json:ROW        # paired verdicts
    python -m experiments.oneshot_brackets --side-by-side a/results.json:ROW=A b/results.json:ROW=B [--out DIR]

For each style of the family and each reference image (the style's few-shot images 0..refs-1, whose true source
faces SynthFaces knows), on held-out latents (z from seeds 100000.., never used in any training):

- **identity**: the source generator unchanged (0 of the gap by definition; its error is the gap);
- **colour map (user)**: a cubic recolouring fitted on what a user has, the reference and its inversion into the
  source generator (W+, pixel + CLIP loss, as ``python -m gan_adapt invert``), applied to G_s(w);
- **colour map (user, encoder)** (with ``--encoder``): the same, the reference inverted by the style-invariant
  encoder (:mod:`gan_adapt.encoder`) instead;
- **colour map (privileged)**: the same fitted on the reference and its true source face (SynthFaces only).

With ``--methods``, one-shot runs of the one-shot trainer are scored on the same latents, for every reference and
seed (``--seeds``, or ``name:k`` for k seeds of one method): each method is a config with overrides
(:data:`METHODS`): ``encoder_analogy`` (configs/oneshot_encoder.yaml: the encoder's inversion, an image analogy of
the pair, a StyleSpace direction trained on pixels towards it; its analogy applied directly to G_s(w) is reported
too, as a "(direct)" row), ``analogy`` (configs/oneshot_analogy.yaml: the same from a source-domain optimisation
inversion), ``clip`` (the image-guided CLIP direction of configs/oneshot_sketch_image.yaml), ``text`` (the
text-guided direction of configs/oneshot_sketch_text.yaml, prompted with the style's own caption, e.g. "a duotone
print of a face"; it sees no reference, so its seeds run once, not per reference) and ``oracle`` (the
same StyleSpace direction trained on pixels against T(G_s(w)), ``loss.truth_l1``: the reachable best of the
parameterization). Each run's wall time is recorded (``run_seconds``). Gap closed = 1 − error / identity error per
latent set; intervals are hierarchical bootstrap intervals over references (and seeds), then latents
(``adapt_common.metrics.stats``). With ``analogy.shrink`` set, each run's analogy strength is recorded too
(``analogy_strength``).

With ``--ceiling`` (needs ``--encoder``), rows that train nothing and bound what the analogy guide can give: the
one-shot recipe's analogy (``configs/oneshot_encoder.yaml``'s ``analogy`` section) applied directly to G_s(w),
once per reference and seed (the seed of the analogy's fit, as in a run of that seed). A trained direction follows
its analogy closely (compare the "(direct)" rows of ``--methods encoder_analogy``), so these rows say where the
guide's limit lies:

- **one view**: the analogy of the reference alone (strength 1);
- **two views, pulled**: the recipe's analogy as it trains (the mirror view and the pull of ``analogy.shrink``);
- **two views, best strength** (privileged): the same views with the strength x + s·(mean − x) that is best
  against the ground truth (s on a grid 0, 0.1, .., 1): the most any rule for the strength could give;
- **true source face** (privileged): the one-view analogy fitted on the reference and its true source face: the
  most a perfect inversion could give this analogy.

With ``--shots K`` (K > 1) two rows more, for a user with K images of the style instead of one: the recipe's
analogy of the reference and K − 1 further images of the style (``target.more_images``; each with its mirror view,
all 2K views averaged), **pulled** as the recipe pulls (``analogy.shrink``, whose pull weakens as views are added)
and **unpulled** (strength 1). Reference r's further images are the few-shot images refs + r·(K − 1) .. of the
style, so no two references share one and the first image stays the one-shot rows' reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

HELD_OUT_SEED = 100_000

#: name -> (config file, overrides) of the one-shot methods ``--methods`` can run.
METHODS = {
    "analogy": ("configs/oneshot_analogy.yaml", []),
    "encoder_analogy": ("configs/oneshot_encoder.yaml", []),
    # the same guide for the other one-shot parameterizations: conv-only StyleDomain direction, HyperDomainNet's
    # domain modulation
    "encoder_analogy_conv": ("configs/oneshot_encoder.yaml", ["training.parameterization=direction"]),
    "encoder_analogy_dommod": ("configs/oneshot_encoder.yaml", ["training.parameterization=dommod"]),
    "clip": ("configs/oneshot_sketch_image.yaml", []),
    "oracle": ("configs/oneshot_analogy.yaml", ["loss.analogy_l1=0", "loss.truth_l1=1"]),
    "text": ("configs/oneshot_sketch_text.yaml", []),  # StyleGAN-NADA's directional loss, see TEXT_METHODS
}
#: Methods prompted with the style's own caption ("a duotone print of a face") instead of a reference image: their
#: seeds run once per style, not once per reference.
TEXT_METHODS = {"text"}
ROW_NAMES = {"colour_map_user": "colour map (user)", "colour_map_encoder": "colour map (user, encoder)",
             "colour_map_privileged": "colour map (privileged)",
             "analogy_direct": "analogy (direct)", "analogy": "analogy → direction",
             "encoder_analogy_direct": "encoder analogy (direct)", "encoder_analogy": "encoder analogy → direction",
             "encoder_analogy_conv": "encoder analogy → conv direction",
             "encoder_analogy_dommod": "encoder analogy → domain modulation",
             "clip": "CLIP direction", "text": "text-guided direction",
             "ceiling_one_view": "analogy: one view", "ceiling_pulled": "analogy: two views, pulled",
             "ceiling_best_strength": "analogy: two views, best strength (privileged)",
             "ceiling_true_source": "analogy: true source face (privileged)",
             "ceiling_shots": "analogy: K references, pulled",
             "ceiling_shots_unpulled": "analogy: K references, unpulled",
             "oracle": "oracle"}


def per_latent_error(images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image on the 0..1 scale, images clamped as saved ([N])."""
    return ((images.clamp(-1, 1) - truth.clamp(-1, 1)).abs() / 2).mean(dim=(1, 2, 3))


def held_out_latents(g, n: int) -> torch.Tensor:
    from gan_adapt.seeds import z_from_seeds
    return z_from_seeds(list(range(HELD_OUT_SEED, HELD_OUT_SEED + n)), g.style_dim)


@torch.no_grad()
def render(g, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.generate(z[i:i + 64]) for i in range(0, z.shape[0], 64)]).clamp(-1, 1)


def held_out_source(g, n: int) -> torch.Tensor:
    """G_s(w) for the n held-out latents (the same for every style: computed once)."""
    return render(g, held_out_latents(g, n))


def run_method(method: str, style: str, ref: int, seed: int, generator: str, work_dir: Path, z: torch.Tensor,
               source: torch.Tensor, truth: torch.Tensor, overrides: list[str] = ()) -> dict:
    """One one-shot run of ``method`` for reference ``ref`` of ``style``: per-latent errors of its generator on latents
    ``z`` (and of its analogy applied directly to ``source`` = G_s(z), for the analogy methods), and the run's
    wall time in seconds, set-up (inversion, analogy) and training together (``seconds``)."""
    import tempfile

    from adapt_common import synthfaces as sf
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    config = METHODS[method][0]
    target = (f"target.text={sf.domain_prompt(style)}" if method in TEXT_METHODS
              else f"target.image=synthfaces:{style}/{ref}")
    with tempfile.TemporaryDirectory(dir=work_dir) as run:
        cfg = load_config(OneShotConfig, [config], [*METHODS[method][1], *overrides, f"base={generator}",
                                                     target, f"exp.seed={seed}",
                                                     f"exp.run_dir={run}", "evaluation.n=0", "exp.threads=1",
                                                     f"target.domain={style}"])
        t0 = time.time()
        tr = ClipTrainer(cfg, quiet=True)  # the inversion and the analogy's fit happen here
        tr.fit()
        seconds = time.time() - t0
        out = {method: per_latent_error(render(tr.param.generator.eval(), z), truth).tolist(), "seconds": seconds}
        if tr.analogy is not None and f"{method}_direct" in ROW_NAMES:  # the variants fit the same analogy
            with torch.no_grad():
                out[f"{method}_direct"] = per_latent_error(tr.analogy(source), truth).tolist()
        if tr.analogy_shrinkage is not None:  # analogy.shrink: how far the run trusted its analogy
            out["strength"] = round(tr.analogy_shrinkage.strength, 4)
    return out


#: The strengths ``--ceiling``'s best-strength row chooses from.
STRENGTH_GRID = tuple(i / 10 for i in range(11))


def ceiling_section(overrides: list[str] = ()):
    """The analogy settings of the ``--ceiling`` rows: ``configs/oneshot_encoder.yaml``'s with ``overrides``."""
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import OneShotConfig
    section = load_config(OneShotConfig, [METHODS["encoder_analogy"][0]], list(overrides)).analogy
    if not section.mirror:
        raise ValueError("--ceiling compares the recipe's two views: its analogy section must set mirror")
    return section


@torch.no_grad()
def ceiling_rows(g, encoder, section, reference: torch.Tensor, true_source: torch.Tensor, source: torch.Tensor,
                 truth: torch.Tensor, seed: int, more: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-latent errors of the ``--ceiling`` rows (see the module doc) for one reference and one seed, with the
    analogy settings ``section`` (:func:`ceiling_section`); with ``more`` (further images of the style, [K − 1, 3,
    H, W]) the ``--shots`` rows too."""

    def invert(image):
        return encoder.invert(g, image).image.clamp(-1, 1)
    face = invert(reference)
    with torch.enable_grad():  # the analogies train their residual nets
        pulled, _, _ = section.fit(face, reference, seed=seed, invert=invert, source=g)
        one_view = dataclasses.replace(section, mirror=False, shrink=0.0)
        privileged, _, _ = one_view.fit(true_source, reference, seed=seed)
    change = pulled.mean_analogy(source) - source
    best = min((per_latent_error((source + s * change).clamp(-1, 1), truth) for s in STRENGTH_GRID),
               key=lambda e: float(e.mean()))
    rows = {"ceiling_one_view": per_latent_error(pulled.members[0](source), truth),
            "ceiling_pulled": per_latent_error(pulled(source), truth),
            "ceiling_best_strength": best,
            "ceiling_true_source": per_latent_error(privileged(source), truth)}
    if more is not None and len(more):
        with torch.enable_grad():
            several, _, _ = section.fit(face, reference, seed=seed, invert=invert, source=g,
                                        more_references=list(more.split(1)))
        rows["ceiling_shots"] = per_latent_error(several(source), truth)
        rows["ceiling_shots_unpulled"] = per_latent_error(several.mean_analogy(source), truth)
    return rows


def brackets(style: str, refs: int, g, guide, source: torch.Tensor, seed: int = 0, invert_steps: int = 300,
             methods: tuple[str, ...] | dict[str, int] = (), seeds: int = 1, generator: str = "", z: torch.Tensor | None = None,
             work_dir: Path | None = None, overrides: list[str] = (), encoder=None, ceiling: bool = False,
             shots: int = 1) -> dict:
    """The brackets of one style for generator ``g``, inversion CLIP ``guide`` and ``source`` =
    :func:`held_out_source` (rendered from latents ``z``), and the one-shot ``methods`` (``seeds`` runs per
    reference, of the generator file ``generator``; a dict gives each method its own count); with a style
    ``encoder``, also the colour map fitted on the reference and the encoder's source face, and with ``ceiling``
    the rows of :func:`ceiling_rows` (``seeds`` per reference; ``shots`` > 1: with its rows of several references)."""
    from adapt_common import synthfaces as sf
    from adapt_common.colour_map import ColourMap
    from gan_adapt.inversion import invert
    n = source.shape[0]
    truth = sf.apply_domain(source, style).clamp(-1, 1)
    identity = per_latent_error(source, truth)
    references, _ = sf.fewshot_set(style, refs * shots, size=g.size)
    true_sources, _ = sf.fewshot_set("photo", refs, size=g.size)
    rows = {"identity": [], "colour_map_user": [], "colour_map_privileged": []}
    seconds: dict[str, list[float]] = {}  # wall time of each trained run
    strengths: dict[str, list[float]] = {}  # the analogy's strength of each run (analogy.shrink)
    if encoder is not None:
        rows["colour_map_encoder"] = []
    section = ceiling_section(overrides) if ceiling else None  # read once for every reference and seed
    for r in range(refs):
        ref = references[r:r + 1]
        inv = invert(g, ref, clip=guide, seed=seed, steps=invert_steps)
        pairs = [("colour_map_user", inv.image.clamp(-1, 1)), ("colour_map_privileged", true_sources[r:r + 1])]
        if encoder is not None:
            pairs.append(("colour_map_encoder", encoder.invert(g, ref).image.clamp(-1, 1)))
        for key, src in pairs:
            cmap = ColourMap.fit(src, ref)
            rows[key].append(per_latent_error(cmap(source), truth))
        rows["identity"].append(identity)
        for s in range(seeds if ceiling else 0):
            more = references[refs + r * (shots - 1):refs + (r + 1) * (shots - 1)]  # empty for one shot
            for key, errs in ceiling_rows(g, encoder, section, ref, true_sources[r:r + 1], source, truth,
                                          s, more).items():
                rows.setdefault(key, []).append(errs)
        counts = methods if isinstance(methods, dict) else {m: seeds for m in methods}
        for method, k in counts.items():
            if method in TEXT_METHODS and r > 0:  # a text run does not depend on the reference image
                continue
            for s in range(k):
                out = run_method(method, style, r, s, generator, work_dir, z, source, truth, overrides)
                seconds.setdefault(method, []).append(round(out.pop("seconds"), 1))
                if "strength" in out:
                    strengths.setdefault(method, []).append(out.pop("strength"))
                for key, errs in out.items():
                    rows.setdefault(key, []).append(torch.tensor(errs))
    return {"style": style, "family": sf.family_of(style), "kind": sf.STYLE_KIND.get(style, "train"), "refs": refs,
            "n": n, "identity_error": [r.tolist() for r in rows["identity"]],
            "errors": {k: [r.tolist() for r in v] for k, v in rows.items() if k != "identity"},
            "run_seconds": seconds, **({"analogy_strength": strengths} if strengths else {})}


def gap_interval(errors: list[list[float]], identity: list[list[float]]) -> dict:
    """Interval of the gap closed: per latent 1 − e / mean(e_identity), whose mean over latents is the usual
    1 − mean(e) / mean(e_identity); runs are the reference images."""
    import numpy as np

    from adapt_common.metrics.stats import bootstrap_interval
    runs = [1 - np.asarray(e) / np.asarray(i).mean() for e, i in zip(errors, identity)]
    return bootstrap_interval(runs).as_dict()


def write_report(results: list[dict], out: Path, command: str) -> Path:
    keys = [k for k in ROW_NAMES if k in results[0]["errors"]]
    lines = ["# One-shot brackets", "", f"Generated by `{command}` from `results.json`.", "",
             "Gap closed towards the ground truth T(G_s(w)) on held-out latents (1 = the true style, 0 = the source "
             "unchanged), mean [95 % interval] over reference images (and seeds, for trained methods) and latents. "
             "The colour map (privileged) and the oracle use SynthFaces' knowledge of the true source or style; "
             "the other rows have only what a user has.", "",
             "| style | kind | identity error | " + " | ".join(ROW_NAMES[k] for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    means = {k: [] for k in keys}
    for r in results:
        ident = sum(sum(x) / len(x) for x in r["identity_error"]) / len(r["identity_error"])
        cells = []
        for key in keys:
            errors = r["errors"][key]
            # the identity error is a property of the style and the latents, the same for every reference and run
            iv = gap_interval(errors, [r["identity_error"][0]] * len(errors))
            means[key].append(iv["mean"])
            cells.append(f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]")
        lines.append(f"| {r['style']} | {r['kind']} | {ident:.4f} | " + " | ".join(cells) + " |")
    lines.append("| **mean over styles** | | | " + " | ".join(f"{sum(v) / len(v):.3f}" for v in means.values()) + " |")
    times: dict[str, list[float]] = {}
    for r in results:
        for method, secs in r.get("run_seconds", {}).items():
            times.setdefault(method, []).extend(secs)
    if times:
        lines += ["", "Wall time of one run (set-up: inversion and analogy fit, then training; one thread per run): " +
                  "; ".join(f"{ROW_NAMES.get(m, m)} {sum(t) / len(t):.0f} s (max {max(t):.0f} s, {len(t)} runs)"
                            for m, t in times.items()) + "."]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


#: What runs merged into one table must share.
SAME_SETTINGS = ("generator", "family", "refs", "n", "methods", "seeds", "runs_per_reference", "overrides", "encoder",
                 "held_out_seed", "ceiling", "shots")


def merge(paths: list[Path]) -> dict:
    """One results dict from runs of the same settings over disjoint styles, styles in the family's order; the
    command records each part's command and the merge."""
    from adapt_common import synthfaces as sf
    parts = [json.loads(p.read_text()) for p in paths]
    first = parts[0]
    for p, r in zip(paths[1:], parts[1:]):
        differ = [k for k in SAME_SETTINGS if r.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"{p} was run with other settings than {paths[0]} ({', '.join(differ)}): only runs of "
                             "the same settings over different styles merge into one table")
    styles = [s for r in parts for s in r["styles"]]
    names = [s["style"] for s in styles]
    if len(set(names)) != len(names):
        raise ValueError(f"the runs overlap: {sorted(n for n in set(names) if names.count(n) > 1)} appear twice")
    order = sf.styles_of_family(first["family"])
    styles.sort(key=lambda s: order.index(s["style"]) if s["style"] in order else len(order))
    command = "; ".join(r.get("command", str(p)) for p, r in zip(paths, parts))
    merged = {k: first.get(k) for k in SAME_SETTINGS}
    merged.update(seconds=round(sum(r.get("seconds", 0) for r in parts), 1), styles=styles,
                  command=f"{command}; python -m experiments.oneshot_brackets --merge " +
                          " ".join(str(p) for p in paths))
    return merged


def per_reference(runs: list, refs: int) -> list:
    """A row's runs, one per reference image: a row of k seeds per reference (runs in reference-major order, as
    :func:`brackets` appends them) is averaged over its seeds per latent, so that it pairs with a row of one run per
    reference (a colour map, a one-seed method)."""
    import numpy as np
    if len(runs) == refs:
        return runs
    if refs < 1 or len(runs) % refs:
        raise ValueError(f"{len(runs)} runs are not a whole number of seeds for each of {refs} references")
    k = len(runs) // refs
    return [np.mean(runs[i * k:(i + 1) * k], axis=0) for i in range(refs)]


def same_styles_and_latents(a: dict, b: dict) -> bool:
    """Whether two results dicts scored the same styles, in the same order, on the same held-out latents."""
    return ([s["style"] for s in a["styles"]] == [s["style"] for s in b["styles"]] and a["n"] == b["n"]
            and a.get("held_out_seed") == b.get("held_out_seed"))


def compare(first: tuple[Path, str], second: tuple[Path, str], margin: float) -> list[str]:
    """Paired verdicts "first beats second by more than ``margin`` of the gap", per style and pooled over styles,
    from two results files (or one) of the same family, references and latents (rows ``key`` of each). Runs pair by
    reference image: a row with several seeds per reference is averaged over them (:func:`per_reference`)."""
    import numpy as np

    from adapt_common.metrics.stats import paired_difference, verdict_better
    (fa, ka), (fb, kb) = first, second
    ra, rb = json.loads(Path(fa).read_text()), json.loads(Path(fb).read_text())
    if not same_styles_and_latents(ra, rb):
        raise ValueError(f"{fa} and {fb} are not paired: other styles or latents")
    lines = [f"| style | {ROW_NAMES.get(ka, ka)} − {ROW_NAMES.get(kb, kb)} (gap closed) | verdict at margin "
             f"{margin:g} |", "|---|---|---|"]
    pooled_a, pooled_b = [], []
    for sa, sb in zip(ra["styles"], rb["styles"]):
        ident = float(np.mean(sa["identity_error"][0]))
        a, b = ([1 - np.asarray(e) / ident for e in s["errors"][k]] for s, k in ((sa, ka), (sb, kb)))
        a, b = per_reference(a, sa.get("refs", len(a))), per_reference(b, sb.get("refs", len(b)))
        d = paired_difference(a, b)
        lines.append(f"| {sa['style']} | {d} | {verdict_better(d, margin)} |")
        pooled_a += a
        pooled_b += b
    d = paired_difference(pooled_a, pooled_b)
    lines.append(f"| **pooled** ({len(pooled_a)} runs) | {d} | {verdict_better(d, margin)} |")
    return lines


def side_by_side(columns: list[tuple[Path, str, str]]) -> list[str]:
    """A table of gap closed (mean over references, seeds and latents) per style, one column per (results file,
    row, label), from runs of the same family, references and latents, with the mean over styles."""
    import numpy as np
    runs = [(json.loads(Path(f).read_text()), key, label) for f, key, label in columns]
    first = runs[0][0]
    for (r, _, _), (f, _, _) in zip(runs[1:], columns[1:]):
        if not same_styles_and_latents(r, first):
            raise ValueError(f"{f} and {columns[0][0]} are not side by side: other styles or latents")
    lines = ["| style | " + " | ".join(label for _, _, label in runs) + " |", "|---|" + "---|" * len(runs)]
    means = [[] for _ in runs]
    for i, style in enumerate(s["style"] for s in first["styles"]):
        cells = []
        for j, (r, key, _) in enumerate(runs):
            st = r["styles"][i]
            ident = float(np.mean(st["identity_error"][0]))
            gap = float(np.mean([1 - np.mean(e) / ident for e in st["errors"][key]]))
            means[j].append(gap)
            cells.append(f"{gap:.3f}")
        lines.append(f"| {style} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean(m):.3f}**" for m in means) + " |")
    return lines


def main(argv=None) -> int:
    from adapt_common import synthfaces as sf
    from adapt_common.files import atomic_path
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["train", "validation", "test"])
    ap.add_argument("--compare", nargs=2, metavar="RESULTS.json:ROW",
                    help="instead of running: paired verdicts of the first row over the second (e.g. "
                         "reports/a/results.json:analogy reports/b/results.json:clip), printed as a table")
    ap.add_argument("--merge", nargs="+", metavar="RESULTS.json",
                    help="instead of running: one results file and table from several runs of the same family, "
                         "settings and latents over different --styles (run side by side), written to --out")
    ap.add_argument("--side-by-side", nargs="+", metavar="RESULTS.json:ROW=LABEL",
                    help="instead of running: one table of the gap closed per style, a column per row of a results "
                         "file (runs of the same styles and latents with other settings), printed, or with --out "
                         "written to OUT/README.md")
    ap.add_argument("--margin", type=float, default=0.05, help="--compare: the margin of gap closed")
    ap.add_argument("--refs", type=int, default=2)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--generator", default="checkpoints/synthfaces_stylegan2.safetensors")
    ap.add_argument("--clip", default="synthfaces", help="the CLIP of the inversion (the guide's, as a user has)")
    ap.add_argument("--invert-steps", type=int, default=300)
    ap.add_argument("--encoder", default="", help="a style encoder file: adds the colour map fitted on the reference "
                                                  "and the encoder's source face")
    ap.add_argument("--methods", default="", help="comma-separated one-shot methods to run and score (name:k: k "
                                                    "seeds for that one instead of --seeds): "
                                                    + ", ".join(METHODS))
    ap.add_argument("--seeds", type=int, default=1, help="runs of each method per reference image")
    ap.add_argument("--ceiling", action="store_true",
                    help="add the rows that bound the analogy guide (needs --encoder; see above), --seeds per "
                         "reference")
    ap.add_argument("--shots", type=int, default=1,
                    help="with --ceiling: also the rows of the analogy of K reference images of the style (K > 1)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every method's runs (e.g. training.iters=100)")
    ap.add_argument("--styles", default="", help="comma-separated subset of the family's styles (default: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.compare:
        pairs = [tuple(c.rsplit(":", 1)) for c in args.compare]
        if any(len(p) != 2 for p in pairs):
            ap.error("--compare takes RESULTS.json:ROW twice")
        print("\n".join(compare(pairs[0], pairs[1], args.margin)))
        return 0
    if args.side_by_side:
        columns = []
        for c in args.side_by_side:
            spec, _, label = c.partition("=")
            path, sep, key = spec.rpartition(":")
            if not sep:
                ap.error("--side-by-side takes RESULTS.json:ROW=LABEL")
            columns.append((Path(path), key, label or key))
        lines = side_by_side(columns)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            import shlex
            command = "python -m experiments.oneshot_brackets " + shlex.join(argv if argv is not None else sys.argv[1:])
            (out / "README.md").write_text("\n".join(
                ["# Side by side", "", f"Generated by `{command.strip()}` from the results files it names.", "",
                 "Gap closed towards the ground truth T(G_s(w)) on held-out latents, mean over reference images, "
                 "seeds and latents.", "", *lines]) + "\n")
        print("\n".join(lines))
        return 0
    if args.merge:
        if not args.out:
            ap.error("--merge needs --out")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        merged = merge([Path(p) for p in args.merge])
        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(json.dumps(merged, indent=1))
        command = merged["command"]
        print(f"wrote {write_report(merged['styles'], out, command)} and results.json")
        return 0
    if not args.family:
        ap.error("--family is required (or --compare, --merge)")
    methods = {}  # name -> runs per reference ("oracle:1" gives a method its own count)
    for item in (m for m in args.methods.split(",") if m):
        name, _, k = item.partition(":")
        if k and (not k.isdigit() or int(k) < 1):
            ap.error(f"--methods {item}: the count after ':' must be a whole number >= 1")
        methods[name] = int(k) if k else args.seeds
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    styles = sf.styles_of_family(args.family)
    if args.styles:
        chosen = args.styles.split(",")
        if not set(chosen) <= set(styles):
            ap.error(f"--styles {sorted(set(chosen) - set(styles))} are not {args.family} styles ({styles})")
        styles = [s for s in styles if s in chosen]
    if args.ceiling and not args.encoder:
        ap.error("--ceiling inverts the references with the style encoder: give --encoder")
    if args.shots < 1 or (args.shots > 1 and not args.ceiling):
        ap.error("--shots must be >= 1, and K > 1 adds --ceiling rows: give --ceiling")
    if args.refs < 1 or args.n < 2:
        ap.error("--refs must be >= 1 and --n >= 2")
    out = Path(args.out or f"reports/oneshot_brackets_{args.family}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    from adapt_common.clip_models import load_clip
    from gan_adapt.formats import load_generator
    g = load_generator(args.generator).eval().requires_grad_(False)
    guide = load_clip(args.clip)
    encoder = None
    if args.encoder:
        from gan_adapt.encoder import StyleEncoder
        encoder = StyleEncoder.from_pretrained(args.encoder)
    z = held_out_latents(g, args.n)
    source = render(g, z)
    results = []
    from tqdm import tqdm
    for s in tqdm(styles, desc="styles"):
        results.append(brackets(s, args.refs, g, guide, source, invert_steps=args.invert_steps, methods=methods,
                                seeds=args.seeds, generator=args.generator, z=z, work_dir=out, overrides=args.set,
                                encoder=encoder, ceiling=args.ceiling, shots=args.shots))
    command = "python -m experiments.oneshot_brackets " + " ".join(argv if argv is not None else sys.argv[1:])
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"generator": args.generator, "family": args.family, "refs": args.refs, "n": args.n,
                                   "methods": {m: METHODS[m] for m in methods}, "seeds": args.seeds,
                                   "runs_per_reference": methods,
                                   "overrides": args.set, "encoder": args.encoder, "ceiling": args.ceiling,
                                   "shots": args.shots,
                                   "held_out_seed": HELD_OUT_SEED, "seconds": round(time.time() - t0, 1),
                                   "command": command.strip(), "styles": results}, indent=1))
    print(f"wrote {write_report(results, out, command.strip())} and results.json ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
