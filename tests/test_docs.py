"""The README and the documentation site (issue 19).

- The README stays short and opens with the two commands.
- `mkdocs build --strict` succeeds, and its strictness is real: a broken link, a broken anchor, a nav entry to a
  missing page, a page missing from the nav or an unknown results table planted in a copy of the docs fails it.
- The speed page is generated from the committed benchmark files: every row of each file is on it.
- Every concrete `python -m gan_adapt|diffusion_adapt|experiments.study|tools.train_clip` command in the README and
  on the site parses with the real argument parser, and the configs it names load with its `key=value` overrides
  (without a renamed-key warning), so a renamed flag, config file or key fails here instead of in a reader's
  terminal.

The site tests need MkDocs (the `dev` extra); without it they skip, except under CI (`CI=1`, set by .ci/run), where
they fail.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


# ---- the README -------------------------------------------------------------------------------------------------

def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the limit is 200 (move detail to docs/)"
    assert lines[0].startswith("# ")
    opening = [line for line in lines[1:] if line.strip()][:4]
    assert opening[0] == "```bash" and opening[3] == "```", opening
    assert opening[1].startswith("make demo ") and opening[2].startswith("make test "), opening


def test_readme_has_no_status_table_keyed_by_issue_numbers():
    text = README.read_text()
    assert not re.search(r"\(#\d+\)|\| done", text), "issue numbers and status belong in the tracker, not the README"


def test_readme_links_point_at_files_that_exist():
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README should link into the documentation"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_clip_losses_are_used_by_the_gan_trainers_only_as_the_readme_says():
    """The README and the docs say the CLIP guidance losses are the GAN trainers' and the diffusion side has none
    (issue 19: they used to say the losses were shared with the diffusion side)."""
    users = {p.relative_to(ROOT).as_posix() for pkg in ("gan_adapt", "diffusion_adapt", "adapt_common", "app.py")
             for p in ([ROOT / pkg] if pkg.endswith(".py") else (ROOT / pkg).rglob("*.py"))
             if re.search(r"^\s*from adapt_common(\.clip_guidance import|\s+import clip_guidance)|"
                          r"^\s*import adapt_common\.clip_guidance", p.read_text(), re.MULTILINE)}
    assert users, "nobody imports adapt_common.clip_guidance any more: update the README and docs/usage/oneshot.md"
    assert all(u.startswith("gan_adapt/") for u in users), (
        f"{sorted(users)} import the CLIP losses: the README ('What is where') and the docs say only the GAN trainers "
        "do; update them")
    assert "which only the GAN trainers use" in README.read_text()


# ---- the site -----------------------------------------------------------------------------------------------------

def _need_mkdocs():
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("CI"):
            pytest.fail("MkDocs with the Material theme is not installed; CI installs it with '.[dev]'")
        pytest.skip("MkDocs is not installed (pip install -e '.[dev]')")


def _build(config: Path, site: Path, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", *flags, "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _need_mkdocs()
    out = tmp_path_factory.mktemp("site")
    run = _build(ROOT / "mkdocs.yml", out, "--strict")  # as CI and `make docs-build` run it
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_the_site_builds_in_strict_mode_with_every_page(site):
    nav_pages = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert len(nav_pages) >= 25
    for page in nav_pages:
        rel = Path(page).with_suffix("")
        built = site / (rel.parent if rel.name in ("README", "index") else rel) / "index.html"
        assert built.is_file(), f"{page} was not built ({built})"


def _table_rows(html: str, heading: str) -> list[str]:
    """The body rows of the first table after the section ``heading`` of a built page."""
    section = html.split(f">{heading}<", 1)[1]
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def test_the_speed_tables_are_the_committed_results(site):
    html = (site / "results" / "speed" / "index.html").read_text()
    cpu = json.loads((RESULTS / "generator_speed.json").read_text())["rows"]
    rows = [_cells(r) for r in _table_rows(html, "StyleGAN2 generator on the CPU")]
    assert len(rows) == len(cpu)
    for cells, r in zip(rows, cpu):
        assert cells[:3] == [str(r["size"]), str(r["batch"]), r["mode"]]
        assert float(cells[3]) == pytest.approx(r["reference"]["median_s"], abs=0.005)
        assert float(cells[4]) == pytest.approx(r["optimised"]["median_s"], abs=0.005)
        assert float(cells[5].rstrip("x")) == pytest.approx(r["speedup"], abs=0.005)
    gpu = json.loads((RESULTS / "generator_speed_cuda.json").read_text())["rows"]
    rows = [_cells(r) for r in _table_rows(html, "StyleGAN2 generator on a GPU")]
    assert len(rows) == len(gpu)
    for cells, r in zip(rows, gpu):
        assert [float(c.split()[0]) for c in cells[3:6]] == pytest.approx(
            [1000 * r[k]["median_s"] for k in ("ref", "torch", "cuda")], abs=0.05)
        assert float(cells[6].rstrip("×")) == pytest.approx(r["speedup_cuda_vs_ref"], abs=0.005)
    ros = json.loads((RESULTS / "generator_speed_rosinality.json").read_text())
    rows = [_cells(r) for r in _table_rows(html, "StyleGAN2 generator against rosinality/stylegan2-pytorch")]
    assert len(rows) == len(ros["rows"]) > 0
    for cells, r in zip(rows, ros["rows"]):
        assert cells[:3] == [str(r["size"]), str(r["batch"]), r["mode"]]
        assert [float(c) for c in cells[3:6]] == pytest.approx(
            [r[k]["median_s"] for k in ("rosinality", "reference", "optimised")], abs=0.005)
        assert float(cells[6].rstrip("×")) == pytest.approx(r["speedup_vs_rosinality"], abs=0.005)
        assert float(cells[7].rstrip("×")) == pytest.approx(r["speedup_vs_reference"], abs=0.005)
        assert float(cells[8]) == pytest.approx(r["image_rel_diff_to_rosinality"]["optimised"], rel=0.05)
    assert f"{ros['load_avg_start'][0]:.2f}" in html and f"{ros['load_avg_end'][0]:.2f}" in html
    prof = json.loads((RESULTS / "generator_profile.json").read_text())["rows"]
    rows = [_cells(r) for r in _table_rows(html, "Where the CPU generator spends its time")]
    assert len(rows) == len(prof) > 0
    for cells, r in zip(rows, prof):
        assert cells[:2] == [str(r["batch"]), r["mode"]]
        assert [float(c.rstrip(" %")) for c in cells[2:7]] == pytest.approx(
            [100 * r["share"][k] for k in ("conv", "upfirdn", "activation", "modulation", "other")], abs=0.51)
        assert [float(c.rstrip("×")) for c in cells[7:10]] == pytest.approx(
            [r["step_median_s"], r["conv_only_median_s"], r["step_over_conv_only"]], abs=0.005)
    for name in ("parameterization_speed_64", "parameterization_speed_256"):
        steps = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
        assert all(f"{s['trainable']:,}" in html for s in steps), name
    assert "Generated from <code>benchmarks/results/diffusion_speed.json</code>" in html


def test_the_backed_single_run_tables_are_their_results_files(site):
    """The 10-shot cat and hypernetwork tables on the results page come from the committed results files (through
    the generated reports), not from numbers copied by hand."""
    html = (site / "results" / "index.html").read_text()
    cat = json.loads((ROOT / "reports" / "fewshot_cat" / "results.json").read_text())
    for row in cat["rows"].values():
        assert f"<td>{row['fid']:.3f}</td>" in html and f"<td>{row['domain_l1']:.4f}</td>" in html, row["label"]
    hyper = json.loads((ROOT / "reports" / "hyper_synthfaces" / "results.json").read_text())
    for run in hyper["rows"].values():
        for e in run["eval"].values():
            assert e["prompt"] in html


# ---- strictness: planted errors fail the build ------------------------------------------------------------------

def _copy_site_config(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of docs/ and a config that builds it with the real hook (so only the planted change differs)."""
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    cfg.update(docs_dir=str(tmp_path / "docs"), hooks=[str(ROOT / "tools" / "docs_site.py")])
    cfg.pop("watch", None)
    return tmp_path / "mkdocs.yml", cfg


def _write(config: Path, cfg: dict) -> Path:
    config.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return config


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


PLANTS = {
    "a link to a missing page": (lambda d, cfg: _append(d / "index.md", "\n[gone](no-such-page.md)\n"),
                                 "no-such-page.md"),
    "a link to a missing anchor": (lambda d, cfg: _append(d / "index.md", "\n[gone](formats.md#no-such-anchor)\n"),
                                   "no-such-anchor"),
    "a nav entry to a missing page": (lambda d, cfg: cfg["nav"].append({"Gone": "no-such-page.md"}),
                                      "no-such-page.md"),
    "a page missing from the nav": (lambda d, cfg: (d / "orphan.md").write_text("# Orphan\n"), "orphan.md"),
    "an unknown results table": (lambda d, cfg: _append(d / "results" / "speed.md",
                                                        "\n<!-- results-table: no_such_benchmark -->\n"),
                                 "no_such_benchmark"),
    "a missing report table": (lambda d, cfg: _append(d / "results" / "index.md",
                                                      "\n<!-- report-table: reports/no_such_table/README.md -->\n"),
                               "reports/no_such_table/README.md"),
}


def test_an_unchanged_copy_of_the_docs_builds(tmp_path):
    """The control of the planted-error tests: the copy and its config build as the real site does."""
    _need_mkdocs()
    config, cfg = _copy_site_config(tmp_path)
    run = _build(_write(config, cfg), tmp_path / "site")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_error_fails_the_build(tmp_path, plant):
    """Built without --strict on the command line: mkdocs.yml itself must make these errors fatal (so that
    `mkdocs serve` and a plain `mkdocs build` report them as CI does)."""
    _need_mkdocs()
    config, cfg = _copy_site_config(tmp_path)
    change, named = PLANTS[plant]
    change(tmp_path / "docs", cfg)
    run = _build(_write(config, cfg), tmp_path / "site")
    assert run.returncode != 0, f"{plant} did not fail the strict build:\n{run.stdout}\n{run.stderr}"
    assert named in run.stdout + run.stderr, f"the build failed without naming {named}:\n{run.stderr}"


# ---- the commands on the pages ----------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"<|\[|\.\.\.|…")  # synopsis lines (`--config configs/<name>.yaml [key=value ...]`)
MODULES = ("gan_adapt", "diffusion_adapt", "experiments.study", "tools.train_clip")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `python -m`) of every concrete command of our CLIs in the README and the pages."""
    found = []
    for page in [README, *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                if "-m" not in tokens or PLACEHOLDER.search(line.split(" #")[0]):
                    continue
                argv = tokens[tokens.index("-m") + 1:]
                if argv and argv[0] in MODULES:
                    found.append((f"{page.relative_to(ROOT)}: {' '.join(tokens)}", argv))
    return found


def _without_gpu(overrides: list[str]) -> list[str]:
    """Device overrides as cpu: whether this machine has a GPU is not what these tests check."""
    return [re.sub(r"^((?:\w+\.)*device)=cuda(:\d+)?$", r"\1=cpu", o) for o in overrides]


def _load(schema, files: list[str], overrides: list[str]) -> None:
    """``load_config`` with a page's overrides, which must not use a key's old name: a warning that loading the
    config files alone does not give comes from the page."""
    from adapt_common.config import load_config
    overrides = _without_gpu(overrides)
    with warnings.catch_warnings(record=True) as alone:
        warnings.simplefilter("always")
        load_config(schema, files, [])
    with warnings.catch_warnings(record=True) as given:
        warnings.simplefilter("always")
        load_config(schema, files, overrides)
    new = {str(w.message) for w in given} - {str(w.message) for w in alone}
    assert not new, f"the overrides {overrides} warn: {sorted(new)}"


def _load_train_config(command: str, files: list[str], overrides: list[str]) -> None:
    """The config of the trainer the files name (the registry picks it, as `train` does), with the overrides."""
    from adapt_common.trainers import trainer_for
    _load(trainer_for(files, overrides, command).config_class(), files, overrides)


def _config_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(config files, overrides) of a `--config FILE ... key=value ...` command line."""
    files = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    values = {i + 1 for i, a in enumerate(args) if a == "--config"}
    return files, [a for i, a in enumerate(args) if i not in values and not a.startswith("--")]


def _check_command(argv: list[str]) -> None:
    module, args = argv[0], argv[1:]
    if module == "experiments.study":
        from experiments.study import StudyConfig
        _load(StudyConfig, *_config_args(args))
        return
    if module == "tools.train_clip":
        _load_train_config("python -m tools.train_clip", *_config_args(args))
        return
    if module == "gan_adapt":
        from gan_adapt.cli import build_parser
    else:
        from diffusion_adapt.cli import build_parser
    if "--help" in args:
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(args)
        assert stop.value.code == 0
        return
    parsed = build_parser().parse_args(args)
    if parsed.command == "train":
        _load_train_config(f"python -m {module} train", parsed.config, parsed.overrides)


COMMANDS = documented_commands()


def test_the_pages_document_commands():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert "README.md" in where and len(COMMANDS) >= 40, (len(COMMANDS), sorted(where))
    assert sum(w.startswith("README.md") for w, _ in COMMANDS) >= 8


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_parses_and_its_config_loads(where, argv, capsys):
    try:
        _check_command(argv)
    except SystemExit as e:  # argparse's verdict on a wrong flag or a missing argument
        pytest.fail(f"{where}\nexits {e.code}: {capsys.readouterr().err.strip()}")
