"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks: [tools/docs_site.py]``).

The site's own pages live in ``docs/``. Two kinds of content come from elsewhere, so that no number is copied by
hand into the site:

- pages committed next to what they describe (the model cards, the study reports, the READMEs of ``configs/``,
  ``checkpoints/`` and the test fixtures) are served from where they are, under their repository paths
  (``checkpoints/synthfaces_ddpm.md`` is the page ``checkpoints/synthfaces_ddpm/``); their links into ``docs/``
  (``../docs/x.png``) are rewritten to the site's layout, every other link is left to MkDocs' strict checks;
- a line ``<!-- results-table: NAME -->`` in a page becomes the table of ``benchmarks/results/NAME.json``;
- a line ``<!-- report-table: reports/NAME/README.md -->`` becomes that generated report's body (its title left
  out): tables written from a committed results file by ``experiments.tables``.

Nothing here fetches anything: the build works offline.
"""
from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Repository files served as they are (globs relative to the repository root).
IMPORTED = ("checkpoints/*.md", "configs/README.md", "reports/*/*.md", "reports/*/*/*.md", "reports/*/*.png",
            "reports/*/plots/*.png", "tests/fixtures/README.md", "tests/fixtures/*/README.md")
IGNORED = ("reports/tmp/",)  # scratch output (.gitignore), never part of the site

LINK = re.compile(r"(\]\()([^)\s]+)(\))")
TABLE_MARK = re.compile(r"^<!-- results-table: ([\w.-]+) -->$", re.MULTILINE)
REPORT_MARK = re.compile(r"^<!-- report-table: (reports/[\w.-]+(?:/[\w.-]+)*/README\.md) -->$", re.MULTILINE)


def imported_paths(root: Path = ROOT) -> list[str]:
    """The repository paths (posix, relative) of every file the site serves from outside ``docs/``."""
    found = {p.relative_to(root).as_posix() for pattern in IMPORTED for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in found if not p.startswith(IGNORED))


def on_files(files: Files, config) -> Files:
    for rel in imported_paths():
        # In the nav where mkdocs.yml lists them; a new study report is served without failing the strict build.
        files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel), inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def site_link(src_uri: str, target: str) -> str:
    """``target`` as written in the repository file ``src_uri``, as a link from the same page on the site."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):  # URLs, anchors, absolute paths: untouched
        return target
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(src_uri), path))
    if not resolved.startswith("docs/"):
        return target  # another served file keeps its repository layout; anything else fails the strict check
    relative = posixpath.relpath(resolved[len("docs/"):], posixpath.dirname(src_uri) or ".")
    return relative + ("#" + anchor if anchor else "")


def rewrite_links(markdown: str, src_uri: str) -> str:
    return LINK.sub(lambda m: m.group(1) + site_link(src_uri, m.group(2)) + m.group(3), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.abs_src_path and not Path(page.file.abs_src_path).resolve().is_relative_to(
            Path(config.docs_dir).resolve()):
        markdown = rewrite_links(markdown, page.file.src_uri)
    markdown = REPORT_MARK.sub(lambda m: report_table(m.group(1), page.file.src_uri), markdown)
    return TABLE_MARK.sub(lambda m: results_table(m.group(1), page.file.src_uri), markdown)


def report_table(rel: str, where: str) -> str:
    """The body of a generated report (``reports/<name>/README.md`` without its title), for a page that shows it:
    the numbers come from the committed results file that wrote it, never copied by hand."""
    path = ROOT / rel
    if not path.is_file():
        raise PluginError(f"{where}: {rel} does not exist; write it with the command its marker's section names")
    lines = path.read_text().splitlines()
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    if LINK.search("\n".join(body)):  # its links are relative to its own folder, not to the page showing it
        raise PluginError(f"{where}: {rel} has links; a report shown inside a page must have none")
    link = posixpath.relpath(rel, posixpath.dirname(where) or ".")
    return "\n".join(body).strip() + f"\n\n*Shown from [{rel}]({link}).*"


# ---- tables of benchmarks/results/*.json -----------------------------------------------------------------------

def _g(x: float) -> str:
    return f"{x:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _generator_speed(d: dict) -> str:
    rows = [[str(r["size"]), str(r["batch"]), r["mode"], f"{r['reference']['median_s']:.2f}",
             f"{r['optimised']['median_s']:.2f}", f"**{r['speedup']:.2f}x**", f"{r['reference']['peak_rss_gb']:.1f}",
             f"{r['optimised']['peak_rss_gb']:.1f}", f"{r['max_abs_diff']:.1e}"] for r in d["rows"]]
    return (f"{d['threads']} threads, {d['machine']}, Python {d['python']}; medians.\n\n"
            + _table(["size", "batch", "pass", "reference (s)", "optimised (s)", "speed-up", "reference peak RSS (GB)",
                      "optimised peak RSS (GB)", "max abs diff"], rows))


def _generator_speed_cuda(d: dict) -> str:
    def ms(cell):
        return f"{1000 * cell['median_s']:.1f} ms"
    rows = [[str(r["size"]), str(r["batch"]), r["mode"], ms(r["ref"]), ms(r["torch"]), ms(r["cuda"]),
             f"{r['speedup_cuda_vs_ref']:.2f}×", f"{r['max_abs_diff']['cuda']:.1e}",
             " / ".join(f"{r[k]['peak_gpu_gb']:.1f}" for k in ("ref", "torch", "cuda"))] for r in d["rows"]]
    return (f"{d['device']}, torch {d['torch']}, CUDA {d['cuda']}, TF32 {'on' if d['tf32'] else 'off'}; medians of "
            f"{d['repeats']}.\n\n"
            + _table(["size", "batch", "pass", "`ref`", "`torch`", "`cuda` (ours)", "cuda vs ref",
                      "max \\|diff\\| cuda to ref", "peak GPU GB ref / torch / cuda"], rows))


def _parameterization_speed(d: dict) -> str:
    rows = [[f"`{r['parameterization']}`", f"{r['trainable']:,}", _g(r["median_s"]), f"{r['peak_rss_gb']:.2f}"]
            for r in d["rows"]]
    size, batch = d["rows"][0]["size"], d["rows"][0]["batch"]
    return (f"{size} px, batch {batch}, {d['threads']} threads, {d['machine']}, Python {d['python']}; median "
            f"seconds per training step.\n\n" + _table(["parameterization", "trainable", "s / step", "peak RSS (GB)"],
                                                        rows))


def _diffusion_speed(d: dict) -> str:
    names = {"bundled": "bundled DDPM (32 px)", "sd": "SD 1.x size"}
    modes = {"full": "full", "svdiff": "SVDiff shifts"}
    rows = [[names.get(r["model"], r["model"]), modes.get(r["mode"], r["mode"]), f"{r['trainable']:,}",
             _g(r["setup_s"]), _g(r["median_s"]), _g(r["peak_rss_gb"])] for r in d["rows"]]
    return (f"{d['threads']} threads, {d['machine']}; batch 1. One CPU SVD of a 1280×11520 kernel: "
            f"{d['svd_1280x11520_s']:.1f} s.\n\n"
            + _table(["UNet", "trained", "trainable", "setup s", "step s", "peak GB"], rows))


def _synthfaces_speed(d: dict) -> str:
    domains = list(dict.fromkeys(r["domain"] for r in d["results"]))
    cells = {(r["threads"], r["size"], r["batch"], r["domain"]): r["images_per_second"] for r in d["results"]}
    keys = sorted({k[:3] for k in cells})
    rows = [[str(t), str(s), str(b)] + [f"{cells[(t, s, b, dom)]:,.0f}" if (t, s, b, dom) in cells else "–"
                                        for dom in domains] for t, s, b in keys]
    return (f"torch {d['torch']}, {d['machine']}, {d['cpu_count']} CPUs; images per second, median of "
            f"{d['repeats']}.\n\n" + _table(["threads", "size", "batch"] + domains, rows))


def _load_avg(d: dict) -> str:
    def load(x):
        return " / ".join(f"{v:.2f}" for v in x)
    return (f"load average (1 / 5 / 15 min) {load(d['load_avg_start'])} at the start, {load(d['load_avg_end'])} at "
            "the end")


def _oneshot_speed(d: dict) -> str:
    names = {"reference": "reference (the step as first written)", "optimised": "optimised",
             "fast_math": "optimised + `training.fast_math`"}
    rows = [[names.get(k, k), f"{r['ms_per_step_wall']:.0f}", f"{r['ms_per_step_cpu']:.0f}",
             f"{r['setup_wall_s']:.0f}", f"{r['demo_300_steps_wall_s']:.0f}", f"{r['speedup_wall']:.2f}×", f"{r['speedup_cpu']:.2f}×",
             f"{r['direction_rel_diff']:.1e}" if r["direction_rel_diff"] else "0 (identical)"]
            for k, r in d["paths"].items()]
    loaded = max(d["load_avg_start"][0], d["load_avg_end"][0]) > 0.5 * d["cpus"]
    return (f"{d['steps']} steps per path on {d['threads']} thread (`{d['config']}`), "
            f"torch {d['torch']}, {d['machine']}, {d['cpus']} CPUs. "
            + (f"Measured on a loaded machine: {_load_avg(d)}, so wall times are what a user waits beside other jobs "
               "and CPU times are closer to a quiet core.\n\n" if loaded else f"Load: {_load_avg(d)}.\n\n")
            + _table(["step", "ms / step (wall)", "ms / step (CPU)", "setup, wall s", "300 steps + outputs, wall s",
                      "speed-up (wall)",
                      "speed-up (CPU)", "direction vs reference (rel. diff.)"], rows))


def _generator_speed_rosinality(d: dict) -> str:
    def rel(x):
        return "–" if x is None else f"{x:.1e}"
    rows = [[str(r["size"]), str(r["batch"]), r["mode"], f"{r['rosinality']['median_s']:.2f}",
             f"{r['reference']['median_s']:.2f}", f"{r['optimised']['median_s']:.2f}",
             f"**{r['speedup_vs_rosinality']:.2f}×**", f"{r['speedup_vs_reference']:.2f}×",
             rel(r["image_rel_diff_to_rosinality"]["optimised"]),
             rel((r["grad_rel_diff_to_rosinality"] or {}).get("optimised"))] for r in d["rows"]]
    return (f"{d['threads']} threads, {d['machine']}, torch {d['torch']}, rosinality/stylegan2-pytorch@"
            f"{d['rosinality_revision'][:7]}; one process, the three paths in alternating turns, medians of "
            f"{d['repeats']}. Measured on a loaded machine: {_load_avg(d)}.\n\n"
            + _table(["size", "batch", "pass", "rosinality (s)", "reference (s)", "optimised (s)",
                      "optimised vs rosinality", "optimised vs reference", "image rel. diff. to rosinality",
                      "max grad rel. diff. to rosinality"], rows))


def _generator_profile(d: dict) -> str:
    cats = ("conv", "upfirdn", "activation", "modulation", "other")
    rows = [[str(r["batch"]), r["mode"]] + [f"{100 * r['share'][c]:.0f} %" for c in cats]
            + [f"{r['step_median_s']:.2f}", f"{r['conv_only_median_s']:.2f}", f"{r['step_over_conv_only']:.2f}×"]
            for r in d["rows"]]
    size = d["rows"][0]["size"]
    return (f"config-f {size} px, optimised path, {d['threads']} threads, {d['machine']}, torch {d['torch']}; shares "
            f"of the profiled self time; step and conv-only seconds are medians of {d['repeats']} alternating turns "
            f"without the profiler. Measured on a loaded machine: {_load_avg(d)}.\n\n"
            + _table(["batch", "pass"] + list(cats) + ["step (s)", "conv only (s)", "step / conv only"], rows))


TABLES = {"generator_speed": _generator_speed, "generator_speed_cuda": _generator_speed_cuda,
          "parameterization_speed_64": _parameterization_speed, "parameterization_speed_256": _parameterization_speed,
          "diffusion_speed": _diffusion_speed, "synthfaces_speed": _synthfaces_speed, "oneshot_speed": _oneshot_speed,
          "oneshot_speed_clip": _oneshot_speed,
          "generator_speed_rosinality": _generator_speed_rosinality, "generator_profile": _generator_profile}


def results_table(name: str, where: str) -> str:
    """The markdown table of ``benchmarks/results/<name>.json`` (``where``: the page asking, for errors)."""
    if name not in TABLES:
        raise PluginError(f"{where}: no results table '{name}'; known: {', '.join(sorted(TABLES))} "
                          f"(add a formatter to TABLES in tools/docs_site.py)")
    path = RESULTS / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PluginError(f"{where}: cannot read {path.relative_to(ROOT)} ({e}); rerun the benchmark that writes it")
    try:
        body = TABLES[name](data)
    except (KeyError, TypeError, IndexError) as e:
        raise PluginError(f"{where}: {path.relative_to(ROOT)} lacks a field the table needs ({e!r})")
    return f"{body}\n\n*Generated from `{path.relative_to(ROOT).as_posix()}` when the site is built.*"
