"""The study's report: tables (mean ± spread over seeds), the paper's claims checked, plots and sample montages.

Called by ``experiments.study`` after the grid (or alone with ``--report-only``). Every number comes from the
per-cell results; nothing here trains or samples.
"""
from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np

PARAM_NAMES = {"full": "Full", "stylespace": "StyleSpace direction (Δs, toRGB incl.)",
               "direction": "StyleDomain direction (conv Δs)", "dommod": "HyperDomainNet modulation",
               "affine_plus": "Affine+", "affine_light_plus": "AffineLight+", "mapping": "Mapping",
               "affine": "Affine", "syntconv": "SyntConv"}


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


def size_str(n_bytes) -> str:
    if n_bytes is None:
        return "–"
    n = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def per_seed_over(rows: list[dict], group, value) -> dict:
    """{group key: [per-seed value averaged over the other cells of the group]}: the spread is over seeds."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = value(r)
        if v is not None:
            acc[group(r)][r["seed"]].append(v)
    return {k: [float(np.mean(vs)) for vs in by_seed.values()] for k, by_seed in acc.items()}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -- parts ---------------------------------------------------------------------------------------------------


def oneshot_section(cfg, rows: list[dict]) -> tuple[list[str], dict]:
    out, facts = [], {}
    g = cfg.oneshot
    n_seeds = len(cfg.exp.seeds)
    for guidance in g.guidance:
        rs = [r for r in rows if r["guidance"] == guidance]
        if not rs:
            continue
        names = [n for n in g.parameterizations if any(r["parameterization"] == n for r in rs)]
        variants = []  # (label, row filter, value getter)
        for n in names:
            variants.append((n, PARAM_NAMES.get(n, n), lambda r, n=n: r if r["parameterization"] == n else None))
            if any(r["parameterization"] == n and "sparse" in r for r in rs):
                variants.append((f"{n}_sparse", f"{PARAM_NAMES.get(n, n)}, sparse {g.sparse_keep:.0%}",
                                 lambda r, n=n: {**r, **r["sparse"]} if r["parameterization"] == n else None))
        body, body_dom = [], []
        for vid, label, get in variants:
            sel = [x for x in (get(r) for r in rs) if x is not None]

            def col(k):
                return per_seed_over(sel, lambda r: 0, lambda r: r.get(k)).get(0, [])
            gap = col("gap_closed")
            facts[(guidance, vid)] = mean_sd(gap)[0]
            nz = sel[0].get("nonzero")
            trainable = f"{nz:,} kept of {sel[0]['trainable']:,}" if nz is not None else f"{sel[0]['trainable']:,}"
            body.append([label, trainable, size_str(sel[0]["file_bytes"]),
                         fmt(col("wall_s"), 0) if "wall_s" in sel[0] else "–", fmt(col("domain_l1"), 4),
                         fmt(gap), fmt(col("clip_quality")), fmt(col("clip_diversity")), fmt(col("clip_accuracy"), 2),
                         fmt(col("fid"), 2)])
            by_dom = per_seed_over(sel, lambda r: r["domain"], lambda r: r.get("gap_closed"))
            facts[(guidance, vid, "by_domain")] = {d: mean_sd(v)[0] for d, v in by_dom.items()}
            body_dom.append([label] + [fmt(by_dom.get(d, []), 2) for d in g.domains])
        ident = per_seed_over(rs, lambda r: 0, lambda r: r.get("identity_l1")).get(0, [])
        out += [f"### One-shot, similar domains, {guidance}-guided",
                f"{len(g.domains)} domains ({', '.join(g.domains)}), {g.iters} iterations, {n_seeds} seed(s); "
                f"metrics on {g.n_eval} samples, averaged over the domains (± sd over seeds). Domain L1: mean |G_t(w) − "
                f"T(G_s(w))| on the 0..1 scale (doing nothing: {fmt(ident, 4)}); gap closed: 1 − L1 / L1(doing nothing), "
                "1 is the ground truth. CLIP scores and FID are the small CLIP's.", "",
                table(["parameterization", "trainable", "file", "wall s", "domain L1", "gap closed", "CLIP quality",
                       "CLIP diversity", "CLIP acc", "FID"], body), "",
                "Gap closed per domain:", "",
                table(["parameterization"] + list(g.domains), body_dom), ""]
    return out, facts


def fewshot_section(cfg, rows: list[dict]) -> tuple[list[str], dict]:
    out, facts = [], {}
    g = cfg.fewshot
    for domain in g.domains:
        rs = [r for r in rows if r["domain"] == domain]
        if not rs:
            continue
        body = []
        src = per_seed_over(rs, lambda r: 0, lambda r: r.get("source_fid")).get(0, [])
        body.append(["unadapted source", "0", "–", "–", fmt(src, 2), "–", "–"])
        for n in g.parameterizations:
            sel = [r for r in rs if r["parameterization"] == n]
            if not sel:
                continue

            def col(k):
                return [r.get(k) for r in sel]
            facts[(domain, n)] = mean_sd(col("fid"))
            facts[(domain, "source")] = mean_sd(src)
            body.append([PARAM_NAMES.get(n, n), f"{sel[0]['trainable']:,}", size_str(sel[0]["file_bytes"]),
                         fmt(col("wall_s"), 0), fmt(col("fid"), 2), fmt(col("kid"), 4), fmt(col("intra_lpips"), 3)])
        metric = next((r.get("diversity_metric") for r in rs if r.get("diversity_metric")), "?")
        out += [f"### Few-shot, dissimilar domain: {domain} ({g.shots} shots)",
                f"{g.iters} iterations, {len(cfg.exp.seeds)} seed(s); FID/KID against {domain}'s held-out eval set "
                f"({g.n_eval} samples, {cfg.exp.features} features); intra-cluster diversity: {metric}.", "",
                table(["parameterization", "trainable", "file", "wall s", "FID", "KID", "intra-cluster div."], body),
                ""]
    return out, facts


def diffusion_section(cfg, rows: list[dict]) -> tuple[list[str], dict]:
    g = cfg.diffusion
    facts, body = {}, []
    src = per_seed_over(rows, lambda r: 0, lambda r: r.get("source_fid")).get(0, [])
    body.append(["unadapted DDPM", "0", "–", "–", fmt(src, 2), "–", "–", "–"])
    for v in g.variants:
        sel = [r for r in rows if r["variant"] == v]
        if not sel:
            continue

        def col(k):
            return [r.get(k) for r in sel]
        facts[v] = {"fid": mean_sd(col("fid")), "intra": mean_sd(col("intra_lpips")),
                    "source_fid": mean_sd(src)[0] if src else float("nan")}
        body.append([v, f"{sel[0]['trainable']:,}", size_str(sel[0]["file_bytes"]), fmt(col("wall_s"), 0),
                     fmt(col("fid"), 2), fmt(col("intra_lpips"), 3), fmt(col("domain_l1"), 4), fmt(col("gap_closed"))])
    out = [f"### Diffusion, {g.shots} shots of {g.domain}",
           f"The bundled DDPM, {g.iters} iterations, {len(cfg.exp.seeds)} seed(s); {g.n_eval} samples by DDIM in "
           f"{g.ddim_steps} steps from the same noises for every row; domain error against T(source sample).", "",
           table(["variant", "trainable", "file", "wall s", "FID", "intra-cluster div.", "domain L1", "gap closed"],
                 body), ""]
    return out, facts


def properties_section(cfg, mixing, transfer, sparsity) -> tuple[list[str], dict]:
    out, facts = [], {}
    if mixing:
        out += ["### Mixing directions",
                "Images of the source with one direction each and with their sum: the small CLIP's mean probability "
                "of each domain (softmax over photo and the similar domains), and the gap closed towards the "
                "composed ground truth T_b(T_a(G_s(w))).", ""]
        for pair in {tuple(r["pair"]) for r in mixing}:
            a, b = pair
            rs = [r for r in mixing if tuple(r["pair"]) == pair]
            body = []
            for label in ("source", a, b, f"{a}+{b}"):
                def col(f):
                    return [f(r["rows"][label]) for r in rs]
                body.append([label, fmt(col(lambda x: x["probs"]["photo"]), 2), fmt(col(lambda x: x["probs"][a]), 2),
                             fmt(col(lambda x: x["probs"][b]), 2),
                             fmt(col(lambda x: x["error_vs_composed"]["gap_closed"]), 2)])
            mixed = [r["rows"][f"{a}+{b}"]["probs"] for r in rs]
            only_a = [r["rows"][a]["probs"] for r in rs]
            only_b = [r["rows"][b]["probs"] for r in rs]
            facts[pair] = (np.mean([m[a] for m in mixed]) > np.mean([x[a] for x in only_b]) and
                           np.mean([m[b] for m in mixed]) > np.mean([x[b] for x in only_a]))
            out += [table(["directions", "P(photo)", f"P({a})", f"P({b})", f"gap closed to {b}∘{a}"], body), ""]
    if transfer:
        body = []
        for domain in dict.fromkeys(r["domain"] for r in transfer):
            rs = [r for r in transfer if r["domain"] == domain]
            src = [r["on_source"]["gap_closed"] for r in rs]
            tgt = [r["on_target"]["gap_closed"] for r in rs]
            facts[("transfer", domain)] = (mean_sd(src)[0], mean_sd(tgt)[0])
            body.append([domain, rs[0]["to"], fmt(src, 2), fmt(tgt, 2)])
        out += ["### Transfer",
                "A direction trained on the source, applied unchanged to a generator fine-tuned from the same "
                "source; ground truth: T applied to that generator's own images.", "",
                table(["direction", "applied to", "gap closed on the source", "gap closed on the fine-tuned G"],
                      body), ""]
    if sparsity:
        keeps = cfg.properties.sparsity
        body = []
        for k in keeps:
            vals = per_seed_over([{**row, "seed": r["seed"]} for r in sparsity for row in r["rows"]
                                  if row["keep"] == k], lambda r: 0, lambda r: r["gap_closed"]).get(0, [])
            facts[("sparsity", k)] = mean_sd(vals)[0]
            body.append([f"{k:.0%}", fmt(vals, 3)])
        out += ["### Sparsity sweep",
                f"Largest |Δs| kept, the rest zeroed, no retraining; gap closed averaged over "
                f"{len({r['domain'] for r in sparsity})} domains.", "", table(["kept", "gap closed"], body), ""]
    return out, facts


def claims(cfg, one, few, diff, props) -> list[str]:
    """The papers' qualitative claims, each checked against this run's numbers with a plain verdict."""
    lines = ["## The claims, checked", ""]

    def verdict(ok, partly=False):
        return "**holds**" if ok else ("**partly holds**" if partly else "**does not hold on SynthFaces**")
    def known(*xs):
        return all(x is not None and not math.isnan(x) for x in xs)
    def compare(what, base_name, mine, base, good, partly):
        """``mine`` against ``base`` (per-domain gap closed), on the domains where ``base`` closes >= 10% of the gap:
        elsewhere the baseline itself moves away from the ground truth and a ratio says nothing."""
        doms = [d for d, v in base.items() if known(v, mine.get(d)) and v >= 0.1]
        if not doms:
            best = max((v for v in base.values() if known(v)), default=float("nan"))
            return (f"- {what}: {base_name} itself closes under 10% of the gap on every domain (best {best:.2f}), so "
                    "the claim cannot be tested here.")
        m = sum(mine[d] for d in doms) / len(doms)
        b = sum(base[d] for d in doms) / len(doms)
        r = m / b
        return (f"- {what}: gap closed {m:.3f} vs {b:.3f} for {base_name} (ratio {r:.2f}) on the domains where "
                f"{base_name} closes at least 10% of the gap ({', '.join(doms)}): {verdict(r >= good, r >= partly)}.")
    for guidance in cfg.oneshot.guidance:
        f = one.get((guidance, "full", "by_domain"))
        for n in ("stylespace", "direction"):  # with and without the toRGB styles
            s = one.get((guidance, n, "by_domain"))
            if f and s:
                lines.append(compare(f"{PARAM_NAMES[n]} ≈ Full on similar domains ({guidance}-guided)", "Full", s, f,
                                     0.8, 0.5))
        for n in ("stylespace", "direction", "dommod"):
            d, sp = one.get((guidance, n, "by_domain")), one.get((guidance, f"{n}_sparse", "by_domain"))
            if d and sp:
                lines.append(compare(f"A sparse {PARAM_NAMES[n]} ({cfg.oneshot.sparse_keep:.0%} kept) loses little "
                                     f"({guidance}-guided)", "the dense one", sp, d, 0.9, 0.7))
    for domain in cfg.fewshot.domains:
        ss = few.get((domain, "stylespace"))
        for n in ("affine_plus", "affine_light_plus"):
            a = few.get((domain, n))
            if ss is None or a is None:
                continue
            better = a[0] < ss[0]
            clear = a[0] + a[1] < ss[0] - ss[1]
            lines.append(f"- {PARAM_NAMES[n]} beats StyleSpace on dissimilar few-shot ({domain}): FID {a[0]:.2f} vs "
                         f"{ss[0]:.2f}: {verdict(clear, better)}" + ("" if clear or not better else
                                                                    " (within the seed spread)") + ".")
        src = few.get((domain, "source"))
        for n in ("affine_plus", "affine_light_plus"):
            a = few.get((domain, n))
            if src is not None and a is not None and not math.isnan(src[0]):
                lines.append(f"- {PARAM_NAMES[n]} adapts at all ({domain}): FID {a[0]:.2f} vs {src[0]:.2f} "
                             f"unadapted: {verdict(a[0] < 0.7 * src[0], a[0] < src[0])}.")
    if "full" in diff and "svdiff_domainstudio" in diff:
        f, d = diff["full"], diff["svdiff_domainstudio"]
        more_diverse = d["intra"][0] > f["intra"][0]
        clear = d["intra"][0] - d["intra"][1] > f["intra"][0] + f["intra"][1]
        comparable = d["fid"][0] <= 1.25 * f["fid"][0]
        head = (f"- DomainStudio + SVDiff is more diverse than full fine-tuning at a comparable FID: intra-cluster "
                f"{d['intra'][0]:.3f} vs {f['intra'][0]:.3f}, FID {d['fid'][0]:.2f} vs {f['fid'][0]:.2f}")
        src_fid = f.get("source_fid", float("nan"))
        if known(src_fid) and f["fid"][0] > 0.8 * src_fid:
            # diversity only means something once the model has moved: before, both are the source's
            lines.append(f"{head}; full fine-tuning has not left the source yet (FID {src_fid:.2f} unadapted), so "
                         "the claim cannot be tested here (the diffusion sweep in experiments/diffusion_fewshot_sweep.py tests it along training).")
        else:
            note = (" (within the seed spread)" if more_diverse and comparable and not clear else
                    " (more diverse, but its FID is not comparable: it stays further from the domain)"
                    if more_diverse and not comparable else "")
            lines.append(f"{head}: {verdict(more_diverse and comparable and clear, more_diverse and comparable)}{note}.")
    for key, ok in props.items():
        if isinstance(key, tuple) and len(key) == 2 and key[0] not in ("transfer", "sparsity"):
            lines.append(f"- Mixing {key[0]} + {key[1]} shows both styles (each domain's probability above what the "
                         f"other direction alone gives): {verdict(bool(ok))}.")
    for key, val in props.items():
        if isinstance(key, tuple) and key[0] == "transfer":
            src, tgt = val
            head = f"- A direction transfers to a fine-tuned generator ({key[1]}): gap closed {tgt:.2f} there vs {src:.2f} on the source"
            if not src >= 0.1:
                lines.append(f"{head}; on the source it closes under 10% of the gap, so there is nothing to transfer "
                             "and the claim cannot be tested here.")
            else:
                lines.append(f"{head}: {verdict(tgt >= 0.7 * src, tgt >= 0.3 * src)}.")
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
    if not cells:
        return None
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
             f"Generator `{cfg.exp.generator}`, judge CLIP `{cfg.exp.clip}`, seeds {list(cfg.exp.seeds)}, "
             f"{'/'.join(map(str, threads))} CPU thread(s) per cell on {platform.machine()} ({len(results)} cells; "
             f"{sum(r.get('cell_s', 0) for r in results) / 60:.0f} min of cell time). Reproduce: "
             f"`python -m experiments.study --config configs/study/{cfg.exp.name}.yaml`.", ""]
    one_lines, one = oneshot_section(cfg, parts["oneshot"]) if parts["oneshot"] else ([], {})
    few_lines, few = fewshot_section(cfg, parts["fewshot"]) if parts["fewshot"] else ([], {})
    diff_lines, diff = diffusion_section(cfg, parts["diffusion"]) if parts["diffusion"] else ([], {})
    prop_lines, props = properties_section(cfg, parts["mixing"], parts["transfer"], parts["sparsity"])
    lines += claims(cfg, one, few, diff, props)
    lines += ["## Tables", ""] + one_lines + few_lines + diff_lines + prop_lines
    figs = plot_oneshot(cfg, parts["oneshot"], plots) + plot_fewshot_loss(cfg, parts["fewshot"], plots)
    figs += plot_sparsity(cfg, parts["sparsity"], plots)
    seed0 = cfg.exp.seeds[0] if len(cfg.exp.seeds) else 0
    for g in cfg.oneshot.guidance:
        cells = {(r["domain"], PARAM_NAMES.get(r["parameterization"], r["parameterization"])): r["grid"]
                 for r in parts["oneshot"] if r["guidance"] == g and r["seed"] == seed0}
        if montage(f"one-shot, {g}-guided: per cell, source row over adapted row (seed {seed0})", cells,
                   list(cfg.oneshot.domains), [PARAM_NAMES.get(n, n) for n in cfg.oneshot.parameterizations],
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
    (out_dir / "results.json").write_text(json.dumps({"config": to_dict(cfg), "cells": results}, indent=2))
    return {"readme": str(readme), "results": str(out_dir / "results.json"), "plots": figs}
