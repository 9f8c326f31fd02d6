"""The study's report: tables (means with 95 % intervals), the paper's claims checked as paired
comparisons against stated margins, plots and sample montages.

Called by ``experiments.study`` after the grid (or alone with ``--report-only`` / ``--from-results``). Every number
comes from the per-cell results; nothing here trains or samples.

Intervals and verdicts come from :mod:`adapt_common.metrics.stats`: a run is one training seed of one domain (and
guidance), its values are the per-latent scores on the evaluation latents, which are the same latents in every cell
of a comparison, so two methods are compared latent by latent (paired) and the bootstrap resamples runs, then
latents. The interval is Student's t around the mean with the bootstrap's standard error (``report.student``; the
percentile interval is too narrow with 3 seeds). Ground-truth "gap closed" per latent is
``(L1_nothing − L1) / mean L1_nothing`` over the run's latents: its mean over the latents is exactly the run's gap
closed ``1 − mean L1 / mean L1_nothing``, and for two methods on the same latents the denominator is shared, so the
difference is paired.
"""
from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np

from adapt_common.metrics import stats

PARAM_NAMES = {"full": "Full", "stylespace": "StyleSpace direction (Δs, toRGB incl.)",
               "direction": "StyleDomain direction (conv Δs)", "dommod": "HyperDomainNet modulation",
               "affine_plus": "Affine+", "affine_light_plus": "AffineLight+", "mapping": "Mapping",
               "affine": "Affine", "syntconv": "SyntConv"}
SHORT = {"full": "Full", "stylespace": "StyleSpace", "direction": "StyleDomain", "dommod": "HyperDomainNet",
         "affine_plus": "Affine+", "affine_light_plus": "AffineLight+", "mapping": "Mapping"}


# -- statistics ----------------------------------------------------------------------------------------------


def mean_sd(values) -> tuple[float, float, int]:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt(values, digits: int = 3) -> str:
    m, s, n = mean_sd(values)
    if n == 0:
        return "–"
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def _known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def interval(runs, cfg=None, bounds=None) -> stats.Interval | None:
    """The bootstrap interval of the mean over ``runs`` (a list of per-run value arrays; a run with one value is a
    cell-level number), or None when there is nothing; ``bounds``: the range the quantity can take."""
    runs = [np.asarray(r, dtype=np.float64).reshape(-1) for r in runs]
    runs = [r[~np.isnan(r)] for r in runs]
    runs = [r for r in runs if r.size]
    if not runs:
        return None
    rep = getattr(cfg, "report", None)
    return stats.bootstrap_interval(runs, level=getattr(rep, "level", 0.95), n_boot=getattr(rep, "n_boot", 2000),
                                    student=getattr(rep, "student", True), bounds=bounds)


#: The range of a probability (the judge CLIP's P(domain)): its intervals are cut to it.
PROBABILITY = (0.0, 1.0)


def ci(runs, digits: int = 3, cfg=None, bounds=None) -> str:
    """Table cell: the mean and its 95 % interval over runs (and latents, when a run has several)."""
    iv = interval(runs, cfg, bounds)
    if iv is None:
        return "–"
    if iv.n_values == 1:
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def cell_runs(rows: list[dict], key: str) -> list[list[float]]:
    """A cell-level number as runs of one value each."""
    return [[float(r[key])] for r in rows if _known(r.get(key))]


def gap_terms(per_latent: dict) -> np.ndarray:
    """Per-latent share of the gap closed, ``(L1_nothing − L1) / mean L1_nothing``: its mean is the gap closed."""
    ident = np.asarray(per_latent["identity_l1"], np.float64)
    return (ident - np.asarray(per_latent["domain_l1"], np.float64)) / ident.mean()


def size_str(n_bytes) -> str:
    if n_bytes is None:
        return "–"
    n = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def regenerate(cfg) -> str:
    """The one command that rebuilds the report (every table) from the committed results file."""
    return f"`python -m experiments.study --config configs/study/{cfg.exp.name}.yaml --from-results`"


def regen_line(cfg) -> str:
    return f"Regenerate from `{Path(cfg.exp.report_dir).as_posix()}/{cfg.exp.name}/results.json`: {regenerate(cfg)}."


# -- parts ---------------------------------------------------------------------------------------------------


def oneshot_variants(cfg, rs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(id, label, cells) per parameterization and its sparse form (the sparse numbers in place of the dense)."""
    g = cfg.oneshot
    out = []
    for n in g.parameterizations:
        sel = [r for r in rs if r["parameterization"] == n]
        if not sel:
            continue
        out.append((n, PARAM_NAMES.get(n, n), sel))
        if any("sparse" in r for r in sel):
            out.append((f"{n}_sparse", f"{PARAM_NAMES.get(n, n)}, sparse {g.sparse_keep:.0%}",
                        [{**r, **r["sparse"]} for r in sel if "sparse" in r]))
    return out


def l1_and_gap_runs(sel: list[dict]) -> tuple[list, list]:
    """Per-run ground-truth L1 and gap-closed values: per latent where the cells have them, else the cell numbers."""
    if sel and all(r.get("per_latent") for r in sel):
        return ([r["per_latent"]["domain_l1"] for r in sel], [gap_terms(r["per_latent"]) for r in sel])
    return cell_runs(sel, "domain_l1"), cell_runs(sel, "gap_closed")


def guides_judging(cfg) -> tuple[list, list]:
    """(the guiding CLIPs of the study's one-shot cells, those of them that are also its judge ``exp.clip``)."""
    from adapt_common.clip_models import same_clip
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import OneShotConfig
    guides = list(load_config(OneShotConfig, [cfg.oneshot.config], list(cfg.oneshot.extra)).loss.clip)
    return guides, [g for g in guides if same_clip(cfg.exp.clip, g)]


def judge_text(cfg) -> str:
    """Whose view the CLIP columns are: a judge apart from the guide, or (results made before the project had one)
    the guide's own."""
    try:
        _, shared = guides_judging(cfg)
    except Exception:  # noqa: BLE001 - a config file gone since: say only which CLIP judged
        return f"CLIP scores and FID are `{cfg.exp.clip}`'s."
    if shared:
        return (f"CLIP scores and FID are `{cfg.exp.clip}`'s, which also guided the cells (these results predate "
                "the separate judge): read them as the guide's own view.")
    return f"CLIP scores and FID are the judge's (`{cfg.exp.clip}`), which guided no cell."


def oneshot_section(cfg, rows: list[dict]) -> list[str]:
    out = []
    g = cfg.oneshot
    for guidance in g.guidance:
        rs = [r for r in rows if r["guidance"] == guidance]
        if not rs:
            continue
        body, body_dom = [], []
        for vid, label, sel in oneshot_variants(cfg, rs):
            l1, gap = l1_and_gap_runs(sel)
            nz = sel[0].get("nonzero")
            trainable = f"{nz:,} kept of {sel[0]['trainable']:,}" if nz is not None else f"{sel[0]['trainable']:,}"
            wall = mean_sd([r.get("wall_s") for r in sel])[0] if "wall_s" in sel[0] else float("nan")
            body.append([label, trainable, size_str(sel[0]["file_bytes"]), "–" if math.isnan(wall) else f"{wall:.0f}",
                         ci(l1, 4, cfg), ci(gap, 3, cfg), ci(cell_runs(sel, "clip_quality"), 3, cfg),
                         ci(cell_runs(sel, "clip_diversity"), 3, cfg),
                         ci(cell_runs(sel, "clip_accuracy"), 2, cfg, PROBABILITY),
                         ci(cell_runs(sel, "fid"), 2, cfg)])
            body_dom.append([label] + [ci(l1_and_gap_runs([r for r in sel if r["domain"] == d])[1], 2, cfg)
                                       for d in g.domains])
        first = list({r["domain"]: r for r in reversed(rs)}.values())  # one cell per domain: doing nothing is the same
        ident = ([r["per_latent"]["identity_l1"] for r in first if r.get("per_latent")]
                 or cell_runs(first, "identity_l1"))
        n_seeds = len({r["seed"] for r in rs})
        refs = sorted({r.get("ref") or 0 for r in rs})
        per = (f"{n_seeds} seed(s) × {len(refs)} reference images (indices {', '.join(map(str, refs))})"
               if guidance == "image" else f"{n_seeds} seed(s)")
        runs = "domains × seeds × references" if guidance == "image" else "domains × seeds"
        out += [f"### One-shot, similar domains, {guidance}-guided",
                f"{len(g.domains)} domains ({', '.join(g.domains)}), {g.iters} iterations, {per}; "
                f"metrics on {g.n_eval} latents (the same for every row). Each entry: mean over the runs ({runs}) "
                "and its 95 % interval (Student's, with the bootstrap's standard error: runs resampled, then "
                "latents; the CLIP scores and FID are one number per run). Domain L1: mean |G_t(w) − T(G_s(w))| "
                "on the 0..1 scale, clamped images (doing "
                f"nothing: {ci(ident, 4, cfg)}); gap closed: 1 − L1 / L1(doing nothing), 1 is the ground truth. "
                + judge_text(cfg) + " " + regen_line(cfg), "",
                table(["parameterization", "trainable", "file", "wall s", "domain L1", "gap closed", "CLIP quality",
                       "CLIP diversity", "CLIP acc", "FID"], body), "",
                "Gap closed per domain (interval over seeds and latents):", "",
                table(["parameterization"] + list(g.domains), body_dom), ""]
    return out


def floor_text(floors: list[dict], domain: str, n: int) -> str:
    """The real-vs-real FID/KID at the tables' sample size, or a note that it was not measured."""
    f = next((r for r in floors if r["domain"] == domain and r["n"] == n), None)
    if f is None:
        return f"FID floor at n = {n}: not measured in these results."
    return (f"FID floor (real {domain} against other real {domain}, n = {n}, {f['size']} px, same features): "
            f"**{f['fid']:.2f}**, KID {f['kid']:.4f} (sd over subsets {f['kid_std']:.4f}); a perfect generator scores "
            "about this, so FIDs closer to each other than the floor is to 0 are not told apart."
            + (" KID is an unbiased estimate of a squared distance: where two sets are alike it scatters around 0 "
               "and can fall below it, as here; read a negative KID as 0 within its sd." if f["kid"] < 0 else ""))


def fewshot_section(cfg, rows: list[dict], floors: list[dict] = ()) -> list[str]:
    out = []
    g = cfg.fewshot
    for domain in g.domains:
        rs = [r for r in rows if r["domain"] == domain]
        if not rs:
            continue
        with_truth = [r for r in rs if r.get("per_latent")]
        src_l1 = [with_truth[0]["per_latent"]["identity_l1"]] if with_truth else cell_runs(rs[:1], "identity_l1")
        body = [["unadapted source", "0", "–", "–", ci(src_l1, 4, cfg), ci(cell_runs(rs[:1], "source_fid"), 2, cfg),
                 "–", "–"]]
        for n in g.parameterizations:
            sel = [r for r in rs if r["parameterization"] == n]
            if not sel:
                continue
            l1 = l1_and_gap_runs(sel)[0]
            body.append([PARAM_NAMES.get(n, n), f"{sel[0]['trainable']:,}", size_str(sel[0]["file_bytes"]),
                         f"{mean_sd([r.get('wall_s') for r in sel])[0]:.0f}", ci(l1, 4, cfg),
                         ci(cell_runs(sel, "fid"), 2, cfg), ci(cell_runs(sel, "kid"), 4, cfg),
                         ci(cell_runs(sel, "intra_lpips"), 3, cfg)])
        metric = next((r.get("diversity_metric") for r in rs if r.get("diversity_metric")), "?")
        truth = ("the renderer's image of the face parameters each latent encodes" if with_truth else
                 "none recorded in these results")
        out += [f"### Few-shot, dissimilar domain: {domain} ({g.shots} shots)",
                f"{g.iters} iterations, {len({r['seed'] for r in rs})} seed(s); mean and 95 % interval over "
                f"seeds (and, for the domain L1, the {g.n_eval} evaluation latents, the same for every row). Domain "
                f"L1: ground truth ({truth}), 0..1 scale. FID/KID against {domain}'s held-out eval set "
                f"({g.n_eval} samples, {cfg.exp.features} features); intra-cluster diversity: {metric}. "
                + floor_text(floors, domain, g.n_eval) + " " + regen_line(cfg), "",
                table(["parameterization", "trainable", "file", "wall s", "domain L1 (truth)", "FID", "KID",
                       "intra-cluster div."], body), ""]
    return out


def diffusion_section(cfg, rows: list[dict], floors: list[dict] = ()) -> list[str]:
    g = cfg.diffusion
    body = [["unadapted DDPM", "0", "–", "–", ci(cell_runs(rows[:1], "source_fid"), 2, cfg), "–", "–", "–"]]
    for v in g.variants:
        sel = [r for r in rows if r["variant"] == v]
        if not sel:
            continue
        l1, gap = l1_and_gap_runs(sel)
        body.append([v, f"{sel[0]['trainable']:,}", size_str(sel[0]["file_bytes"]),
                     f"{mean_sd([r.get('wall_s') for r in sel])[0]:.0f}", ci(cell_runs(sel, "fid"), 2, cfg),
                     ci(cell_runs(sel, "intra_lpips"), 3, cfg), ci(l1, 4, cfg), ci(gap, 3, cfg)])
    return [f"### Diffusion, {g.shots} shots of {g.domain}",
            f"The bundled DDPM, {g.iters} iterations, {len({r['seed'] for r in rows})} seed(s); {g.n_eval} samples by "
            f"DDIM in {g.ddim_steps} steps from the same noises for every row; domain error against T(source sample). "
            + ("Mean and 95 % interval over seeds (and, for the domain error, the samples, the same noises in every "
               "row). " if rows and all(r.get("per_latent") for r in rows) else
               "Mean and 95 % interval over seeds (one number per seed). ")
            + floor_text(floors, g.domain, g.n_eval) + " "
            + regen_line(cfg), "",
            table(["variant", "trainable", "file", "wall s", "FID", "intra-cluster div.", "domain L1", "gap closed"],
                  body), ""]


def mixing_pairs(mixing: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(tuple(r["pair"]) for r in mixing))


def properties_section(cfg, mixing, transfer, sparsity) -> list[str]:
    out = []
    if mixing:
        out += ["### Mixing directions",
                "Images of the source with one direction each and with their sum: the judge CLIP's mean probability "
                "of each domain (softmax over photo and the similar domains), and the gap closed towards the "
                "composed ground truth T_b(T_a(G_s(w))); mean and 95 % interval over seeds and the "
                f"{cfg.properties.n} latents. " + regen_line(cfg), ""]
        for a, b in mixing_pairs(mixing):
            rs = [r for r in mixing if tuple(r["pair"]) == (a, b)]
            body = []
            for label in ("source", a, b, f"{a}+{b}"):
                rows = [r["rows"][label] for r in rs]

                def probs(name):
                    if all("per_latent_probs" in x for x in rows):
                        return [x["per_latent_probs"][name] for x in rows]
                    return [[x["probs"][name]] for x in rows]
                if all("per_latent_l1" in x for x in rows):
                    src = [r["rows"]["source"]["per_latent_l1"] for r in rs]
                    gap = [gap_terms({"identity_l1": s, "domain_l1": x["per_latent_l1"]}) for s, x in zip(src, rows)]
                else:
                    gap = [[x["error_vs_composed"]["gap_closed"]] for x in rows]
                body.append([label, ci([[x["probs"]["photo"]] for x in rows], 2, cfg, PROBABILITY),
                             ci(probs(a), 2, cfg, PROBABILITY), ci(probs(b), 2, cfg, PROBABILITY), ci(gap, 2, cfg)])
            out += [table(["directions", "P(photo)", f"P({a})", f"P({b})", f"gap closed to {b}∘{a}"], body), ""]
    if transfer:
        body = []
        for domain in dict.fromkeys(r["domain"] for r in transfer):
            rs = [r for r in transfer if r["domain"] == domain]

            def gaps(where):
                if all("per_latent" in r[where] for r in rs):
                    return [gap_terms(r[where]["per_latent"]) for r in rs]
                return [[r[where]["gap_closed"]] for r in rs]
            body.append([domain, rs[0]["to"], ci(gaps("on_source"), 2, cfg), ci(gaps("on_target"), 2, cfg)])
        out += ["### Transfer",
                "A direction trained on the source, applied unchanged to a generator fine-tuned from the same "
                "source; ground truth: T applied to that generator's own images. Mean and 95 % interval "
                "over seeds and latents. " + regen_line(cfg), "",
                table(["direction", "applied to", "gap closed on the source", "gap closed on the fine-tuned G"],
                      body), ""]
    if sparsity:
        body = []
        for k in cfg.properties.sparsity:
            vals = [[row["gap_closed"]] for r in sparsity for row in r["rows"] if row["keep"] == k]
            body.append([f"{k:.0%}", ci(vals, 3, cfg)])
        out += ["### Sparsity sweep",
                f"Largest |Δs| kept, the rest zeroed, no retraining; gap closed, mean and 95 % interval over "
                f"the runs ({len({r['domain'] for r in sparsity})} domains × seeds). " + regen_line(cfg), "",
                table(["kept", "gap closed"], body), ""]
    return out


# -- the claims ----------------------------------------------------------------------------------------------


def _diff_str(iv: stats.Interval, digits: int = 3) -> str:
    return f"{iv.mean:+.{digits}f} [{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]"


def _n_str(iv: stats.Interval) -> str:
    per = iv.n_values // max(1, iv.n_runs)
    return f"{iv.n_runs} run{'s' if iv.n_runs != 1 else ''}" + (f" × {per} latents" if per > 1 else "")


def combine(verdicts: list[str]) -> str:
    """All parts must hold: any part that does not hold decides; else any that cannot tell."""
    if any(v == stats.FAILS for v in verdicts):
        return stats.FAILS
    if all(v == stats.HOLDS for v in verdicts):
        return stats.HOLDS
    return stats.CANNOT_TELL


def paired(a: dict, b: dict) -> tuple[list, list]:
    """The runs (keys) both sides have, in one order, as lists of per-run arrays; a pair whose latents differ in
    number is an error (the cells were not scored on the same latents)."""
    keys = sorted(set(a) & set(b), key=str)
    return [np.asarray(a[k], np.float64) for k in keys], [np.asarray(b[k], np.float64) for k in keys]


class Judge:
    """Paired comparisons with the config's margins, written as claim lines."""

    def __init__(self, cfg):
        self.cfg = cfg
        rep = cfg.report
        self.m = dict(rep.margins)
        self.kw = {"level": rep.level, "n_boot": rep.n_boot, "student": rep.student}

    def diff(self, a: dict, b: dict, bounds=None) -> stats.Interval | None:
        """A − B over their paired runs; ``bounds``: the range of A and of B (e.g. :data:`PROBABILITY`)."""
        xa, xb = paired(a, b)
        return stats.paired_difference(xa, xb, bounds=bounds, **self.kw) if xa else None

    def part(self, what: str, iv: stats.Interval | None, margin: float, kind: str, digits: int = 3
             ) -> tuple[str, str]:
        """(description, verdict) of one comparison: ``kind`` better (the difference is above ``margin``),
        equivalent (inside ±margin) or noninferior (above −margin)."""
        if iv is None:
            return f"{what}: no paired runs in these results", stats.CANNOT_TELL
        if kind == "better":
            v, m = stats.verdict_better(iv, margin), f"margin {margin:g}"
        elif kind == "equivalent":
            v, m = stats.verdict_equivalent(iv, margin), f"margin ±{margin:g}"
        else:
            v, m = stats.verdict_better(iv, -margin), f"margin −{margin:g}"
        return f"{what} {_diff_str(iv, digits)}, {m} ({_n_str(iv)})", v


def _oneshot_runs(rows: list[dict], name: str, sparse: bool = False) -> dict:
    out = {}
    for r in rows:
        if r["parameterization"] != name:
            continue
        pl = (r.get("sparse") or {}).get("per_latent") if sparse else r.get("per_latent")
        if pl:
            out[(r["domain"], r["seed"], r.get("ref") or 0)] = gap_terms(pl)  # a run: domain, seed, reference
    return out


def claims(cfg, parts: dict) -> list[str]:
    """The papers' claims, each a paired comparison with a 95 % interval read against a stated margin
    (``cfg.report.margins``) as holds / does not hold / cannot tell at this n."""
    j = Judge(cfg)
    m = j.m
    lines = ["## The claims, checked", "",
             f"Each claim is a paired difference between two methods scored on the same evaluation latents, with its "
             f"{cfg.report.level:.0%} interval over runs (seeds × domains, × reference images when image-guided) "
             "and latents (hierarchical bootstrap; "
             f"{'Student' + chr(39) + 's t with its standard error' if cfg.report.student else 'percentile'}), "
             "read against a margin "
             f"set in the config (`report.margins`: gap closed {m['gap_closed']:g}, ground-truth L1 {m['l1']:g}, CLIP "
             f"probability {m['presence']:g}, diversity {m['diversity']:g}): **holds** when the whole interval is on "
             "the "
             "claim's side of the margin, **does not hold** when it is wholly on the other side, else **cannot tell "
             "at this n**. Ground truth decides; FID is shown after it as a number only. " + regen_line(cfg), ""]

    def line(claim: str, texts: list[tuple[str, str]], extra: str = "") -> str:
        """One claim: its comparison and verdict, or each part's with the verdict of all (every part must hold)."""
        tail = f" ({extra})" if extra else ""
        if len(texts) == 1:
            return f"- {claim}: {texts[0][0]}: **{texts[0][1]}**{tail}."
        v = combine([t[1] for t in texts])
        return f"- {claim}: " + "; ".join(f"{t[0]}: {t[1]}" for t in texts) + f" → **{v}**{tail}."

    one = parts.get("oneshot", [])
    for guidance in cfg.oneshot.guidance:
        rs = [r for r in one if r["guidance"] == guidance]
        if rs and not any(r.get("per_latent") for r in rs):
            lines.append(f"- One-shot claims ({guidance}-guided): no per-latent scores in these results (written before "
                         f"the cells stored them) → **{stats.CANNOT_TELL}**.")
            continue
        full = _oneshot_runs(rs, "full")
        for n in ("stylespace", "direction"):  # with and without the toRGB styles
            s = _oneshot_runs(rs, n)
            if full and s:
                lines.append(line(f"{PARAM_NAMES[n]} ≈ Full on similar domains ({guidance}-guided)",
                                  [j.part(f"{SHORT[n]} − Full gap closed", j.diff(s, full), m["gap_closed"],
                                          "equivalent")]))
        for n in ("stylespace", "direction", "dommod"):
            dense, sp = _oneshot_runs(rs, n), _oneshot_runs(rs, n, sparse=True)
            if not (dense and sp):
                continue
            claim = (f"A sparse {PARAM_NAMES[n]} ({cfg.oneshot.sparse_keep:.0%} kept) loses little "
                     f"({guidance}-guided)")
            pre = j.part("the dense one's gap closed", interval(list(dense.values()), cfg), m["gap_closed"], "better")
            if pre[1] != stats.HOLDS:  # nothing to lose: the claim says nothing
                lines.append(f"- {claim}: {pre[0]}: the dense one is not shown to close more than the margin, so "
                             f"there is nothing shown to keep → **{stats.CANNOT_TELL}** (precondition).")
                continue
            lines.append(line(claim, [j.part("sparse − dense gap closed", j.diff(sp, dense), m["gap_closed"],
                                             "noninferior")]))
    few = parts.get("fewshot", [])
    for domain in cfg.fewshot.domains:
        rs = [r for r in few if r["domain"] == domain]

        def l1(name, which="domain_l1"):
            return {r["seed"]: r["per_latent"][which] for r in rs if r["parameterization"] == name
                    and r.get("per_latent")}

        def fid(name):
            return mean_sd([r.get("fid") for r in rs if r["parameterization"] == name])[0]
        src_fid = mean_sd([r.get("source_fid") for r in rs])[0]
        for n in ("affine_plus", "affine_light_plus"):
            if not any(r["parameterization"] == n for r in rs):
                continue
            if any(r["parameterization"] == "stylespace" for r in rs):
                lines.append(line(f"{PARAM_NAMES[n]} beats StyleSpace on dissimilar few-shot ({domain})",
                                  [j.part(f"ground-truth L1 StyleSpace − {SHORT[n]}", j.diff(l1("stylespace"), l1(n)),
                                          m["l1"], "better", 4)],
                                  f"FID {fid(n):.2f} vs {fid('stylespace'):.2f}"))
            lines.append(line(f"{PARAM_NAMES[n]} adapts at all ({domain})",
                              [j.part(f"ground-truth L1 unadapted − {SHORT[n]}", j.diff(l1(n, "identity_l1"), l1(n)),
                                      m["l1"], "better", 4)],
                              f"FID {fid(n):.2f} vs {src_fid:.2f} unadapted"))
    diff = parts.get("diffusion", [])
    full = {r["seed"]: r for r in diff if r["variant"] == "full"}
    ds = {r["seed"]: r for r in diff if r["variant"] == "svdiff_domainstudio"}
    if full and ds:
        claim = "DomainStudio + SVDiff is more diverse than full fine-tuning at a comparable ground-truth error"

        def per_seed(rows, key):
            return {s: [r[key]] for s, r in rows.items() if _known(r.get(key))}
        f_fid, src_fid = mean_sd([r.get("fid") for r in full.values()])[0], mean_sd(
            [r.get("source_fid") for r in full.values()])[0]
        fids = f"FID {mean_sd([r.get('fid') for r in ds.values()])[0]:.2f} vs {f_fid:.2f}"
        if _known(src_fid) and f_fid > 0.8 * src_fid:
            # diversity only means something once the model has moved: before, both are the source's
            lines.append(f"- {claim}: full fine-tuning has not left the source yet (FID {f_fid:.2f} vs "
                         f"{src_fid:.2f} unadapted, above 0.8 of it) → **{stats.CANNOT_TELL}** (precondition; the "
                         "diffusion sweep in experiments/diffusion_fewshot_sweep.py tests it along training).")
        else:
            lines.append(line(claim, [
                j.part("intra-cluster diversity DomainStudio − full", j.diff(per_seed(ds, "intra_lpips"),
                                                                               per_seed(full, "intra_lpips")),
                       m["diversity"], "better"),
                j.part("gap closed DomainStudio − full", j.diff(per_seed(ds, "gap_closed"),
                                                                per_seed(full, "gap_closed")),
                       m["gap_closed"], "equivalent")], fids + "; one number per seed"))
    for a, b in mixing_pairs(parts.get("mixing", [])):
        rs = [r for r in parts["mixing"] if tuple(r["pair"]) == (a, b)]
        if not all("per_latent_l1" in r["rows"]["source"] for r in rs):
            lines.append(f"- Mixing {a} + {b}: no per-latent scores in these results → **{stats.CANNOT_TELL}**.")
            continue
        rows = {r["seed"]: r["rows"] for r in rs}

        def get(label, f):
            return {s: f(x[label]) for s, x in rows.items()}
        mix = f"{a}+{b}"
        lines.append(line(f"Mixing {a} + {b} moves towards the composed ground truth {b}∘{a} and shows both styles", [
            j.part("ground-truth L1 nothing − mixed", j.diff(get("source", lambda x: x["per_latent_l1"]),
                                                             get(mix, lambda x: x["per_latent_l1"])), m["l1"],
                   "better", 4),
            j.part(f"P({a}) mixed − {b} alone", j.diff(get(mix, lambda x: x["per_latent_probs"][a]),
                                                       get(b, lambda x: x["per_latent_probs"][a]), PROBABILITY),
                   m["presence"],
                   "better"),
            j.part(f"P({b}) mixed − {a} alone", j.diff(get(mix, lambda x: x["per_latent_probs"][b]),
                                                       get(a, lambda x: x["per_latent_probs"][b]), PROBABILITY),
                   m["presence"],
                   "better")]))
    transfer = parts.get("transfer", [])
    for domain in dict.fromkeys(r["domain"] for r in transfer):
        rs = [r for r in transfer if r["domain"] == domain and "per_latent" in r["on_source"]]
        claim = f"A direction transfers to a fine-tuned generator ({domain} → {transfer[0]['to']})"
        if not rs:
            lines.append(f"- {claim}: no per-latent scores in these results → **{stats.CANNOT_TELL}**.")
            continue
        src = {r["seed"]: gap_terms(r["on_source"]["per_latent"]) for r in rs}
        tgt = {r["seed"]: gap_terms(r["on_target"]["per_latent"]) for r in rs}
        pre = j.part("gap closed on the source", interval(list(src.values()), cfg), m["gap_closed"], "better")
        if pre[1] != stats.HOLDS:
            lines.append(f"- {claim}: {pre[0]}: the direction is not shown to close more than the margin on the "
                         f"source, so there is nothing shown to transfer → **{stats.CANNOT_TELL}** (precondition).")
            continue
        lines.append(line(claim, [j.part("gap closed on the fine-tuned G − on the source", j.diff(tgt, src),
                                         m["gap_closed"], "noninferior")]))
    lines.append("")
    return lines


# -- plots ---------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_oneshot(cfg, rows, plots: Path) -> list[str]:
    plt = _plt()
    files = []
    guid = [g for g in cfg.oneshot.guidance if any(r["guidance"] == g for r in rows)]
    if not guid:
        return files
    for what, ylabel, fname in (("curve", "gap closed (ground truth)", "oneshot_domain_error.png"),
                                ("loss", "training loss", "oneshot_loss.png")):
        fig, axes = plt.subplots(1, len(guid), figsize=(5.5 * len(guid), 4), squeeze=False)
        for ax, g in zip(axes[0], guid):
            for n in cfg.oneshot.parameterizations:
                sel = [r for r in rows if r["guidance"] == g and r["parameterization"] == n]
                if not sel:
                    continue
                if what == "curve":
                    steps = [p["step"] for p in sel[0]["curve"]]
                    ys = np.array([[p["gap_closed"] for p in r["curve"]] for r in sel])
                else:
                    steps = sel[0]["loss"]["step"]
                    m = min(len(r["loss"]["loss"]) for r in sel)
                    steps, ys = steps[:m], np.array([r["loss"]["loss"][:m] for r in sel])
                mean, lo, hi = ys.mean(0), ys.min(0), ys.max(0)
                line, = ax.plot(steps, mean, label=PARAM_NAMES.get(n, n), marker="o" if what == "curve" else None)
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
            ax.set_title(f"one-shot, {g}-guided (mean over domains and seeds; band: min–max)", fontsize=9)
            ax.set_xlabel("iteration")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / fname, dpi=110)
        plt.close(fig)
        files.append(fname)
    return files


def plot_sparsity(cfg, sparsity, plots: Path) -> list[str]:
    if not sparsity:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for domain in dict.fromkeys(r["domain"] for r in sparsity):
        rs = [r for r in sparsity if r["domain"] == domain]
        keeps = [row["keep"] for row in rs[0]["rows"]]
        ys = np.array([[row["gap_closed"] for row in r["rows"]] for r in rs]).mean(0)
        ax.plot(keeps, ys, marker="o", label=domain)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of Δs kept (largest |Δs|)")
    ax.set_ylabel("gap closed (ground truth)")
    ax.set_title("sparsity sweep (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "sparsity.png", dpi=110)
    plt.close(fig)
    return ["sparsity.png"]


def plot_fewshot_loss(cfg, rows, plots: Path) -> list[str]:
    if not rows:
        return []
    plt = _plt()
    doms = [d for d in cfg.fewshot.domains if any(r["domain"] == d for r in rows)]
    fig, axes = plt.subplots(1, len(doms), figsize=(5.5 * len(doms), 4), squeeze=False)
    for ax, d in zip(axes[0], doms):
        for n in cfg.fewshot.parameterizations:
            sel = [r for r in rows if r["domain"] == d and r["parameterization"] == n and r["loss"]["step"]]
            if sel:
                m = min(len(r["loss"]["g_loss"]) for r in sel)
                ax.plot(sel[0]["loss"]["step"][:m], np.mean([r["loss"]["g_loss"][:m] for r in sel], 0),
                        label=PARAM_NAMES.get(n, n))
        ax.set_title(f"few-shot {d}: generator loss (mean over seeds)", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "fewshot_loss.png", dpi=110)
    plt.close(fig)
    return ["fewshot_loss.png"]


def montage(title: str, cells: dict, row_labels: list[str], col_labels: list[str], path: Path) -> Path | None:
    """A labelled montage of cell sample grids: ``cells[(row, col)] = image path`` (first seed)."""
    if not any(p and Path(p).exists() for p in cells.values()):
        # e.g. a report rebuilt from results.json alone: the committed montage stays as it is, and stays shown
        return path if path.exists() else None
    from PIL import Image
    plt = _plt()
    fig, axes = plt.subplots(len(row_labels), len(col_labels), figsize=(3.2 * len(col_labels),
                                                                      1.1 * len(row_labels) + 0.6), squeeze=False)
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            ax = axes[i][j]
            ax.axis("off")
            p = cells.get((r, c))
            if p and Path(p).exists():
                ax.imshow(np.asarray(Image.open(p).convert("RGB")))
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.text(-0.02, 0.5, r, transform=ax.transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the report ----------------------------------------------------------------------------------------------


def write_report(cfg, results: list[dict], out_dir: Path) -> dict:
    from adapt_common.config import to_dict
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    parts = defaultdict(list)
    for r in results:
        parts[r["part"]].append(r)
    threads = sorted({r["threads"] for r in results if "threads" in r}) or [cfg.exp.threads]
    lines = [f"# Study `{cfg.exp.name}`", "",
             f"Generator `{cfg.exp.generator}`, judge CLIP `{cfg.exp.clip}`, seeds "
             f"{sorted({r['seed'] for r in results if 'seed' in r}) or list(cfg.exp.seeds)}, "
             f"{'/'.join(map(str, threads))} CPU thread(s) per cell on {platform.machine()} ({len(results)} cells; "
             f"{sum(r.get('cell_s', 0) for r in results) / 60:.0f} min of cell time). Every number is measured on the "
             f"test split: latents and noises from seed {cfg.exp.eval_seed:,} and SynthFaces eval images from index "
             f"{cfg.exp.eval_seed:,}, which no config, learning rate or step count was chosen on (choices use the "
             "validation split from 0). Reproduce (trains every cell): "
             f"`python -m experiments.study --config configs/study/{cfg.exp.name}.yaml`. This page, every table and "
             f"claim, is generated from `results.json` beside it: {regenerate(cfg)}.", ""]
    one_lines = oneshot_section(cfg, parts["oneshot"]) if parts["oneshot"] else []
    few_lines = fewshot_section(cfg, parts["fewshot"], parts["floor"]) if parts["fewshot"] else []
    diff_lines = diffusion_section(cfg, parts["diffusion"], parts["floor"]) if parts["diffusion"] else []
    prop_lines = properties_section(cfg, parts["mixing"], parts["transfer"], parts["sparsity"])
    lines += claims(cfg, parts)
    lines += ["## Tables", ""] + one_lines + few_lines + diff_lines + prop_lines
    figs = plot_oneshot(cfg, parts["oneshot"], plots) + plot_fewshot_loss(cfg, parts["fewshot"], plots)
    figs += plot_sparsity(cfg, parts["sparsity"], plots)
    seed0 = cfg.exp.seeds[0] if len(cfg.exp.seeds) else 0
    for g in cfg.oneshot.guidance:
        cells = {(r["domain"], PARAM_NAMES.get(r["parameterization"], r["parameterization"])): r["grid"]
                 for r in parts["oneshot"] if r["guidance"] == g and r["seed"] == seed0 and not r.get("ref")}
        title = f"one-shot, {g}-guided: per cell, source row over adapted row (seed {seed0}, first reference)"
        if montage(title, cells, list(cfg.oneshot.domains),
                   [PARAM_NAMES.get(n, n) for n in cfg.oneshot.parameterizations],
                   plots / f"oneshot_{g}_samples.png"):
            figs.append(f"oneshot_{g}_samples.png")
    cells = {(r["domain"], PARAM_NAMES.get(r["parameterization"], r["parameterization"])): r["grid"]
             for r in parts["fewshot"] if r["seed"] == seed0}
    if montage(f"few-shot: source row over adapted row (seed {seed0})", cells, list(cfg.fewshot.domains),
               [PARAM_NAMES.get(n, n) for n in cfg.fewshot.parameterizations], plots / "fewshot_samples.png"):
        figs.append("fewshot_samples.png")
    cells = {("samples", r["variant"]): r["grid"] for r in parts["diffusion"] if r["seed"] == seed0}
    if montage(f"diffusion: adapted / source / T(source) rows (seed {seed0})", cells, ["samples"],
               list(cfg.diffusion.variants), plots / "diffusion_samples.png"):
        figs.append("diffusion_samples.png")
    if figs:
        lines += ["## Plots", ""] + [f"![{f}](plots/{f})" for f in figs] + [""]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines))
    # one cell a line: the per-latent lists make an indented file long without making it easier to read
    (out_dir / "results.json").write_text('{"config": ' + json.dumps(to_dict(cfg), indent=2) + ',\n"cells": [\n'
                                          + ",\n".join(json.dumps(r) for r in results) + "\n]}\n")
    return {"readme": str(readme), "results": str(out_dir / "results.json"), "plots": figs}
