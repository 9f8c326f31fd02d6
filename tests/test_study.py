"""The study (experiments/study.py) on a tiny world: every part of the grid runs, the numbers agree with each
other where they must (a direction file reproduces its training run; a sparse direction keeps its fraction),
results are cached per cell so an interrupted study resumes, and the report checks the claims."""
import json
import re
import zlib

import numpy as np
import pytest
import torch

from adapt_common.config import ConfigError, load_config
from experiments import study as st

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_world(tmp_path, tiny_ckpt_clip, monkeypatch):
    from diffusers import UNet2DModel

    from diffusion_adapt.models import new_scheduler, save_model
    from gan_adapt.formats import StyleGANCheckpoint, load_checkpoint, save_checkpoint
    from gan_adapt.networks import Discriminator
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))
    ckpt, clip = tiny_ckpt_clip
    g = load_checkpoint(ckpt).g_ema
    torch.manual_seed(0)
    src = save_checkpoint(StyleGANCheckpoint(g_ema=g, d=Discriminator(32, channel_base=256, channel_max=32)),
                          tmp_path / "source.safetensors")
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                       norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    model = save_model(unet, new_scheduler(), tmp_path / "ddpm")
    return [f"exp.generator={src}", f"exp.clip={clip}", "exp.features=clip", "exp.threads=1", "exp.seeds=[0,1]",
            "exp.engine=inline",
            f"exp.report_dir={tmp_path / 'reports'}", f"exp.work_dir={tmp_path / 'work'}",
            "oneshot.domains=[sketch,sepia]", "oneshot.guidance=[image]", "oneshot.parameterizations=[stylespace,full]",
            "oneshot.iters=4", "oneshot.milestones=2", "oneshot.n_curve=8", "oneshot.n_eval=8",
            "oneshot.extra=[training.block=16,target.source_mean_n=8]",
            "fewshot.domains=[cat]", "fewshot.parameterizations=[affine_light_plus,full]", "fewshot.iters=2",
            "fewshot.n_eval=8", "fewshot.shots=5", "fewshot.extra=[training.block=16,training.batch=2]",
            f"diffusion.model={model}", "diffusion.iters=2", "diffusion.n_eval=8", "diffusion.ddim_steps=2",
            "diffusion.shots=5", "diffusion.extra=[training.batch=2]",
            "properties.mix_pairs=[[sketch,sepia]]", "properties.sparsity=[1.0,0.2]", "properties.n=8"]


def _study(overrides, tmp_path):
    cfg = load_config(st.StudyConfig, [], overrides)
    cfg.exp.name = "tiny"
    cfg.diffusion.variants = {"full": "configs/ddpm_fewshot_sketch_full.yaml",
                              "svdiff_domainstudio": "configs/ddpm_fewshot_sketch_svdiff_domainstudio.yaml"}
    return st.Study(cfg, quiet=True)


def test_the_whole_grid_on_a_tiny_world(tiny_world, tmp_path, monkeypatch):
    study = _study(tiny_world, tmp_path)
    out = study.run()
    cells = {r["key"]: r for r in study.results()}
    assert len(cells) == len(study.plan()) == 8 + 4 + 4 + 2 + 4 + 4 + 2  # + FID floors: cat at 32 px, sketch (DDPM)
    # Reported on the test split (latents, noises and eval images from TEST_START), never the validation one that
    # trainers' own reports and sweeps use: each cell's evaluation report says so.
    from adapt_common.metrics.evaluate import TEST_START
    assert study.cfg.exp.eval_seed == TEST_START
    for run in ("oneshot/image/sketch/full/s0", "fewshot/cat/full/s0", "diffusion/full/s0"):
        settings = json.loads((study.work / "runs" / run / "eval" / "report.json").read_text())["settings"]
        assert settings["seed"] == TEST_START and settings["eval_offset"] == TEST_START, run
    # FID floors at the sizes the tables used (the tiny generator draws 32 px, the DDPM 32 px): real images against
    # other real images is above 0 (two sets) and is printed in the sections whose FIDs it bounds.
    floors = {k: c for k, c in cells.items() if c["part"] == "floor"}
    assert sorted(floors) == ["floor/cat/n8/32px", "floor/sketch/n8/32px"]
    assert all(c["fid"] > 0 and c["kid"] is not None for c in floors.values())

    # A direction file applied with DomainEdit reproduces what its training run generated (same latents).
    for domain in ("sketch", "sepia"):
        for seed in (0, 1):
            trained = cells[f"oneshot/image/{domain}/stylespace/s{seed}"]
            swept = cells[f"sparsity/{domain}/s{seed}"]["rows"]
            assert swept[0]["keep"] == 1.0
            assert swept[0]["gap_closed"] == pytest.approx(trained["curve"][-1]["gap_closed"], abs=1e-5)
            sparse = trained["sparse"]
            assert 0 < sparse["nonzero"] <= 0.2 * trained["trainable"] + 1
            assert sparse["file_bytes"] < trained["file_bytes"]
            assert [p["step"] for p in trained["curve"]] == [2, 4]
    # Seeds differ, and the report shows the spread.
    a, b = cells["oneshot/image/sketch/full/s0"], cells["oneshot/image/sketch/full/s1"]
    assert a["domain_l1"] != b["domain_l1"]
    # Few-shot: the unadapted FID is recorded, the full run's generator serves the transfer.
    few = cells["fewshot/cat/full/s0"]
    assert few["source_fid"] is not None and few["generator"]
    tr = cells["transfer/sketch/s0"]
    assert tr["on_target"]["identity_l1"] != tr["on_source"]["identity_l1"]  # judged on the fine-tuned G's images
    # Diffusion: SVDiff trains and stores far less than full fine-tuning.
    full, ds = cells["diffusion/full/s0"], cells["diffusion/svdiff_domainstudio/s0"]
    assert ds["trainable"] < full["trainable"] / 5 and ds["file_bytes"] < full["file_bytes"] / 5
    assert full["domain_l1"] is not None  # the source is sampled even without DomainStudio's frozen copy
    # ... and scored per sample: the same noises in every row (doing nothing is one list), means are the cell's
    assert full["per_latent"]["identity_l1"] == ds["per_latent"]["identity_l1"]
    assert len(full["per_latent"]["domain_l1"]) == 8
    assert np.mean(full["per_latent"]["domain_l1"]) == pytest.approx(full["domain_l1"], abs=1e-5)
    # Mixing: probabilities of the three named domains from a softmax over all.
    mixed = cells["mixing/sketch+sepia/s0"]["rows"]["sketch+sepia"]["probs"]
    assert all(0 <= p <= 1 for p in mixed.values()) and sum(mixed.values()) <= 1 + 1e-6

    # Per-latent scores are paired: every cell of a comparison scored the same latents, so doing nothing (the
    # source against the truth) is the same list in each, and each list's mean is the cell's own number.
    for domain in ("sketch", "sepia"):
        same = [c for c in cells.values() if c["part"] == "oneshot" and c["domain"] == domain]
        ident = same[0]["per_latent"]["identity_l1"]
        assert len(ident) == 8 and ident[0] != ident[1]
        for c in same:
            for scored in ([c] + ([{**c["sparse"]}] if "sparse" in c else [])):
                pl = scored["per_latent"]
                assert pl["identity_l1"] == ident and len(pl["domain_l1"]) == 8
                assert np.mean(pl["domain_l1"]) == pytest.approx(scored["domain_l1"], rel=1e-4)
                assert np.mean(pl["identity_l1"]) == pytest.approx(scored["identity_l1"], rel=1e-4)
        # the transfer cell's "on the source" uses the same latents (its own code path): the same doing-nothing list
        for s in (0, 1):
            on_src = cells[f"transfer/{domain}/s{s}"]["on_source"]
            assert on_src["per_latent"]["identity_l1"] == pytest.approx(ident, rel=1e-4)
            assert np.mean(on_src["per_latent"]["domain_l1"]) == pytest.approx(on_src["domain_l1"], rel=1e-4)
    for s in (0, 1):
        rows = cells[f"mixing/sketch+sepia/s{s}"]["rows"]
        for label, row in rows.items():
            assert len(row["per_latent_l1"]) == 8 and len(row["per_latent_probs"]["sepia"]) == 8
            assert np.mean(row["per_latent_l1"]) == pytest.approx(row["error_vs_composed"]["domain_l1"], rel=1e-4)
            assert np.mean(row["per_latent_probs"]["sketch"]) == pytest.approx(row["probs"]["sketch"], rel=1e-3,
                                                                               abs=1e-6)
    # few-shot: per-latent scores exactly when evaluate found a ground truth for the latents (the tiny generator
    # does not draw the renderer's faces, so neither is there)
    for c in cells.values():
        if c["part"] == "fewshot":
            assert (c["per_latent"] is None) == (c["domain_l1"] is None)

    readme = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert out["readme"].endswith("README.md")
    for text in ("## The claims, checked", "≈ Full on similar domains", "A sparse StyleSpace direction", "DomainStudio + SVDiff",
                 "Mixing sketch + sepia", "transfers to a fine-tuned generator",
                 "`python -m experiments.study --config configs/study/tiny.yaml --from-results`"):
        assert text in readme, text
    for c in floors.values():
        assert f"n = 8, 32 px, same features): **{c['fid']:.2f}**" in readme
    claim_lines = [line for line in readme.split("## Tables")[0].splitlines() if line.startswith("- ")]
    assert claim_lines and all(line.endswith(("**holds**.", "**does not hold**.", "**cannot tell at this n**."))
                               or "**holds** (" in line or "**does not hold** (" in line
                               or "**cannot tell at this n** (" in line for line in claim_lines), claim_lines
    for f in out["plots"]:
        assert (tmp_path / "reports" / "tiny" / "plots" / f).read_bytes()[:4] == b"\x89PNG"
    assert {"oneshot_domain_error.png", "sparsity.png", "oneshot_image_samples.png"} <= set(out["plots"])
    saved = json.loads((tmp_path / "reports" / "tiny" / "results.json").read_text())
    assert len(saved["cells"]) == len(cells)

    # Resume: a finished study reruns nothing; a lost cell result is the only thing rerun.
    ran = []
    for name in ("run_oneshot", "run_fewshot", "run_diffusion", "run_mixing", "run_sparsity", "run_transfer",
                 "run_floor"):
        monkeypatch.setattr(st.Study, name, lambda self, key, *a, name=name: ran.append(key) or cells[key])
    again = _study(tiny_world, tmp_path)
    again.run()
    assert ran == []
    study.cell_path("fewshot/cat/full/s1").unlink()
    _study(tiny_world, tmp_path).run()
    assert ran == ["fewshot/cat/full/s1"]
    # the same page, but for the header's total cell time (the rerun cell's own time replaces the lost one's)
    def untimed(text):
        return re.sub(r"\d+ min of cell time", "N min of cell time", text)
    assert untimed((tmp_path / "reports" / "tiny" / "README.md").read_text()) == untimed(readme)


def test_training_cells_run_as_local_engine_jobs_and_match_an_inline_run(tiny_world, tmp_path):
    """Two one-shot cells through submitit's local executor (two processes at once) give the results the same
    cells give in this process; the jobs' logs are kept, and a finished study submits nothing."""
    only = ["oneshot.domains=[sketch]", "oneshot.parameterizations=[stylespace]", "fewshot.enabled=false",
            "diffusion.enabled=false", "properties.enabled=false"]

    def run(engine, where, *extra):
        study = _study(tiny_world + only + [f"exp.engine={engine}", "exp.jobs=2",
                                            f"exp.work_dir={tmp_path / where}", *extra], tmp_path)
        study.run()
        return study, {r["key"]: r for r in study.results()}

    jobs, by_jobs = run("local", "jobs_work")
    _, inline = run("inline", "inline_work")
    # both cells in one job (exp.cells_per_job): the second runs after the first in the same process, as inline does
    _, chunked = run("local", "chunk_work", "exp.cells_per_job=2")
    assert sorted(by_jobs) == sorted(inline) == sorted(chunked) == ["oneshot/image/sketch/stylespace/s0",
                                                                    "oneshot/image/sketch/stylespace/s1"]
    for key in inline:
        for other in (by_jobs, chunked):
            assert other[key]["domain_l1"] == pytest.approx(inline[key]["domain_l1"], rel=1e-6)
            assert [c["gap_closed"] for c in other[key]["curve"]] == pytest.approx(
                [c["gap_closed"] for c in inline[key]["curve"]], rel=1e-6)
    logs = list((tmp_path / "jobs_work" / "tiny" / "jobs").rglob("*_log.err"))
    assert len(logs) == 2
    assert len(list((tmp_path / "chunk_work" / "tiny" / "jobs").rglob("*_log.err"))) == 1
    submitted = []
    jobs.executor = lambda: submitted.append(1)  # noqa: E731 - a finished study must not ask for an executor
    jobs.run()
    assert submitted == []


def test_unknown_study_key_is_an_error():
    with pytest.raises(ConfigError, match="oneshot"):
        load_config(st.StudyConfig, [], ["oneshot.iterations=3"])


def _cfg(*over):
    return load_config(st.StudyConfig, [], ["oneshot.guidance=[image]", "fewshot.domains=[cat]", *over])


def _seed(*parts):
    """A random seed from names, the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(repr(parts).encode())


def _oneshot_cells(name, l1_of, domains=("sketch", "sepia"), seeds=(0, 1, 2), n=64, sparse_l1_of=None, refs=(0,)):
    """Synthetic one-shot cells: doing nothing scores 0.2 + small per-latent variation, ``l1_of(ident, rng)`` the
    method's per-latent L1 on the same latents."""
    cells = []
    for d in domains:
        for s in seeds:
            for ref in refs:
                rng = np.random.default_rng(_seed(d, s))
                ident = 0.2 + rng.uniform(-0.05, 0.05, n)
                rng_m = np.random.default_rng(_seed(d, s, ref, name))
                cell = {"part": "oneshot", "guidance": "image", "domain": d, "parameterization": name, "seed": s,
                        "ref": ref, "per_latent": {"domain_l1": list(l1_of(ident, rng_m)), "identity_l1": list(ident)}}
                if sparse_l1_of is not None:
                    cell["sparse"] = {"per_latent": {"domain_l1": list(sparse_l1_of(ident, rng_m)),
                                                     "identity_l1": list(ident)}}
                cells.append(cell)
    return cells


def _claim(lines, start):
    return next(line for line in lines if line.startswith(start))


def test_paired_oneshot_claims_against_independent_arithmetic():
    from experiments.study_report import claims
    cfg = _cfg()
    # Full closes 30 % of every latent's gap, StyleSpace 10 %: StyleSpace − Full = −0.2 exactly, far outside ±0.05.
    full = _oneshot_cells("full", lambda i, r: 0.7 * i)
    ss = _oneshot_cells("stylespace", lambda i, r: 0.9 * i, sparse_l1_of=lambda i, r: 0.9 * i)
    line = _claim(claims(cfg, {"oneshot": full + ss}), "- StyleSpace direction (Δs, toRGB incl.) ≈ Full")
    assert "StyleSpace − Full gap closed -0.200 [-0.2" in line  # the latents' gaps differ: a narrow interval
    assert line.endswith("], margin ±0.05 (6 runs × 64 latents): **does not hold**.")
    # The sparse form equal to the dense one: "loses little" holds (difference exactly 0, non-inferiority -0.05).
    sp = _claim(claims(cfg, {"oneshot": full + ss}), "- A sparse StyleSpace")
    assert "sparse − dense gap closed +0.000 [+0.000, +0.000], margin −0.05" in sp and sp.endswith("**holds**.")
    # Identical per-latent scores: ≈ holds.
    same = _oneshot_cells("stylespace", lambda i, r: 0.7 * i)
    assert _claim(claims(cfg, {"oneshot": full + same}), "- StyleSpace").endswith(": **holds**.")
    # Noisy scores, 1 run of 4 latents: the interval is wide and the verdict cannot tell; its mean is the plain mean
    # of the per-latent gap-closed differences (computed here without the report's code).
    f1 = _oneshot_cells("full", lambda i, r: 0.7 * i, domains=("sketch",), seeds=(0,), n=4)
    s1 = _oneshot_cells("stylespace", lambda i, r: 0.7 * i + r.normal(0, 0.05, i.size), domains=("sketch",),
                        seeds=(0,), n=4)
    line = _claim(claims(cfg, {"oneshot": f1 + s1}), "- StyleSpace")
    ident = np.array(f1[0]["per_latent"]["identity_l1"])
    expect = np.mean((np.array(f1[0]["per_latent"]["domain_l1"]) - np.array(s1[0]["per_latent"]["domain_l1"]))
                     / ident.mean())
    assert f"gap closed {expect:+.3f} [" in line and "(1 run × 4 latents)" in line
    assert line.endswith("**cannot tell at this n**.")
    # A dense direction that closes nothing: the sparse claim is not judged (precondition), whatever the sparse does.
    none = _oneshot_cells("stylespace", lambda i, r: i + 0.0, sparse_l1_of=lambda i, r: i + 0.0)
    sp = _claim(claims(cfg, {"oneshot": full + none}), "- A sparse StyleSpace")
    assert "the dense one is not shown to close more than the margin, so there is nothing shown to keep → " \
        "**cannot tell at this n** (precondition)." in sp


def test_each_reference_image_is_a_run_of_its_own():
    """Image-guided cells of two reference images: the plan has a cell per (reference, seed) and the text-guided
    cells none; the claims pair runs by (domain, seed, reference), so 2 domains × 3 seeds × 2 references = 12 runs.
    Keyed by (domain, seed) only, the second reference would overwrite the first: 6 runs."""
    from experiments.study_report import claims
    cfg = _cfg("oneshot.refs=[0,1]", "oneshot.guidance=[image,text]", "oneshot.domains=[sketch]",
               "oneshot.parameterizations=[stylespace]", "exp.seeds=[0,1,2]")
    keys = [k for k, *_ in st.Study(cfg, quiet=True).oneshot_cells()]
    assert keys == [f"oneshot/image/sketch/stylespace/s{s}" for s in (0, 1, 2)] + \
        [f"oneshot/image/sketch/stylespace/ref1/s{s}" for s in (0, 1, 2)] + \
        [f"oneshot/text/sketch/stylespace/s{s}" for s in (0, 1, 2)]
    refs = [args[-1] for _, *args in st.Study(cfg, quiet=True).oneshot_cells()]
    assert refs == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    full = _oneshot_cells("full", lambda i, r: 0.7 * i + r.normal(0, 0.01, i.size), refs=(0, 1))
    ss = _oneshot_cells("stylespace", lambda i, r: 0.7 * i + r.normal(0, 0.01, i.size), refs=(0, 1))
    line = _claim(claims(_cfg(), {"oneshot": full + ss}), "- StyleSpace direction (Δs, toRGB incl.) ≈ Full")
    assert "(12 runs × 64 latents)" in line


def _fewshot_cells(name, l1_of, seeds=(0, 1, 2), n=64, fid=1.5):
    cells = []
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        truth_err = 0.3 + rng.uniform(-0.1, 0.1, n)  # the unadapted source against the truth, same latents
        cells.append({"part": "fewshot", "domain": "cat", "parameterization": name, "seed": s, "fid": fid,
                      "source_fid": 2.0, "per_latent": {"domain_l1": list(l1_of(truth_err, np.random.default_rng(
                          _seed(name, s)))), "identity_l1": list(truth_err)}})
    return cells


def test_fewshot_claims_are_judged_on_ground_truth_with_fid_second():
    from experiments.study_report import claims
    cfg = _cfg()
    # Affine+ is 0.02 better than StyleSpace on every latent, with a little noise: holds by more than 0.005.
    ss = _fewshot_cells("stylespace", lambda e, r: e - 0.05 + r.normal(0, 0.002, e.size), fid=1.4)
    ap = _fewshot_cells("affine_plus", lambda e, r: e - 0.07 + r.normal(0, 0.002, e.size), fid=1.6)
    lines = claims(cfg, {"fewshot": ss + ap})
    beats = _claim(lines, "- Affine+ beats StyleSpace on dissimilar few-shot (cat)")
    expect = np.mean([np.mean(np.subtract(a["per_latent"]["domain_l1"], b["per_latent"]["domain_l1"]))
                      for a, b in zip(ss, ap)])
    assert f"ground-truth L1 StyleSpace − Affine+ {expect:+.4f} [" in beats and abs(expect - 0.02) < 0.002
    # FID disagrees (Affine+ worse) and is shown, but does not decide
    assert beats.endswith(": **holds** (FID 1.60 vs 1.40).")
    adapts = _claim(lines, "- Affine+ adapts at all (cat)")
    expect = np.mean([np.mean(np.subtract(a["per_latent"]["identity_l1"], a["per_latent"]["domain_l1"])) for a in ap])
    assert f"unadapted − Affine+ {expect:+.4f} [" in adapts and abs(expect - 0.07) < 0.002
    assert adapts.endswith(": **holds** (FID 1.60 vs 2.00 unadapted).")
    # StyleSpace 0.02 better: does not hold; equal: cannot tell or does not hold, never holds
    worse = claims(cfg, {"fewshot": _fewshot_cells("stylespace", lambda e, r: e - 0.09) + ap})
    assert _claim(worse, "- Affine+ beats").endswith(": **does not hold** (FID 1.60 vs 1.50).")
    equal = claims(cfg, {"fewshot": _fewshot_cells("stylespace", lambda e, r: e - 0.07) + ap})
    assert "**holds**" not in _claim(equal, "- Affine+ beats")


def test_mixing_needs_the_composed_truth_and_both_styles():
    from experiments.study_report import claims
    cfg = _cfg()
    n = 32

    def cells(p_a_mixed, l1_mixed):
        out = []
        for s in (0, 1, 2):
            def row(pa, pb, l1):
                return {"probs": {"photo": 0.1, "negative": pa, "pixelart": pb}, "error_vs_composed": {},
                        "per_latent_probs": {"negative": [pa] * n, "pixelart": [pb] * n}, "per_latent_l1": [l1] * n}
            out.append({"part": "mixing", "pair": ["negative", "pixelart"], "seed": s, "rows": {
                "source": row(0.0, 0.0, 0.30), "negative": row(0.9, 0.0, 0.25), "pixelart": row(1e-27, 0.8, 0.28),
                "negative+pixelart": row(p_a_mixed, 0.7, l1_mixed)}})
        return out
    # the case: P = 1e-20 against 4e-27 is "above" but not present, and the mix is further from the truth
    bad = _claim(claims(cfg, {"mixing": cells(1e-20, 0.75)}), "- Mixing negative + pixelart")
    assert "ground-truth L1 nothing − mixed -0.4500 [-0.4500, -0.4500], margin 0.005" in bad
    assert bad.endswith("→ **does not hold**.")
    good = _claim(claims(cfg, {"mixing": cells(0.3, 0.2)}), "- Mixing negative + pixelart")
    assert "P(negative) mixed − pixelart alone +0.300" in good and good.endswith("→ **holds**.")


def test_transfer_and_diffusion_preconditions():
    from experiments.study_report import claims
    cfg = _cfg()

    def tr(gap_src, gap_tgt):
        out = []
        for s in (0, 1, 2):
            ident = np.linspace(0.2, 0.3, 16)
            out.append({"part": "transfer", "domain": "sketch", "to": "fewshot:cat", "seed": s, "on_source": {
                "per_latent": {"identity_l1": list(ident), "domain_l1": list((1 - gap_src) * ident)}},
                "on_target": {"per_latent": {"identity_l1": list(ident), "domain_l1": list((1 - gap_tgt) * ident)}}})
        return out
    nothing = _claim(claims(cfg, {"transfer": tr(0.01, 0.3)}), "- A direction transfers")
    assert "so there is nothing shown to transfer → **cannot tell at this n** (precondition)." in nothing
    # old results without per-latent scores: every one-shot claim says so instead of disappearing
    old = [{k: v for k, v in c.items() if k != "per_latent"} for c in _oneshot_cells("full", lambda i, r: 0.7 * i)]
    assert _claim(claims(cfg, {"oneshot": old}), "- One-shot claims (image-guided)").endswith(
        "no per-latent scores in these results (written before the cells stored them) → **cannot tell at this n**.")
    assert _claim(claims(cfg, {"transfer": tr(0.3, 0.29)}), "- A direction transfers").endswith(": **holds**.")
    assert _claim(claims(cfg, {"transfer": tr(0.3, 0.1)}), "- A direction transfers").endswith(
        ": **does not hold**.")

    def diff(full_fid, ds_intra):
        out = []
        for s in (0, 1, 2):
            out.append({"part": "diffusion", "variant": "full", "seed": s, "fid": full_fid, "source_fid": 1.88,
                        "intra_lpips": 0.45 + 0.001 * s, "gap_closed": 0.3 + 0.001 * s})
            out.append({"part": "diffusion", "variant": "svdiff_domainstudio", "seed": s, "fid": 1.0,
                        "source_fid": 1.88, "intra_lpips": ds_intra + 0.002 * s, "gap_closed": 0.3 - 0.001 * s})
        return out
    assert "has not left the source yet" in _claim(claims(cfg, {"diffusion": diff(1.7, 0.6)}), "- DomainStudio")
    assert _claim(claims(cfg, {"diffusion": diff(0.9, 0.6)}), "- DomainStudio").endswith(
        "→ **holds** (FID 1.00 vs 0.90; one number per seed).")
    assert "→ **does not hold**" in _claim(claims(cfg, {"diffusion": diff(0.9, 0.40)}), "- DomainStudio")


def test_margins_come_from_the_config():
    from experiments.study_report import claims
    cfg = _cfg("report.margins.gap_closed=0.25")
    full = _oneshot_cells("full", lambda i, r: 0.7 * i)
    ss = _oneshot_cells("stylespace", lambda i, r: 0.9 * i)
    line = _claim(claims(cfg, {"oneshot": full + ss}), "- StyleSpace")
    assert "margin ±0.25" in line and line.endswith(": **holds**.")  # −0.2 is within ±0.25


def test_tables_show_bootstrap_intervals_and_the_regenerate_command(tmp_path):
    from adapt_common.metrics.stats import bootstrap_interval
    from experiments.study_report import write_report
    cfg = _cfg(f"exp.report_dir={tmp_path}", "exp.name=quick", "oneshot.parameterizations=[full,stylespace]")
    cells = _oneshot_cells("full", lambda i, r: 0.7 * i + r.normal(0, 0.01, i.size))
    cells += _oneshot_cells("stylespace", lambda i, r: 0.9 * i)
    for c in cells:
        c.update({"trainable": 10, "file_bytes": 100, "wall_s": 1.0, "fid": 1.0, "grid": "missing.png",
                  "curve": [{"step": 1, "gap_closed": 0.1}], "loss": {"step": [1], "loss": [1.0]}})
    write_report(cfg, cells, tmp_path / "quick")
    readme = (tmp_path / "quick" / "README.md").read_text()
    cmd = "`python -m experiments.study --config configs/study/quick.yaml --from-results`"
    assert readme.count(cmd) >= 3  # the header, the claims and each table
    full = [c for c in cells if c["parameterization"] == "full"]
    iv = bootstrap_interval([c["per_latent"]["domain_l1"] for c in full], student=True)
    row = next(line for line in readme.splitlines() if line.startswith("| Full |"))
    assert f"| {iv.mean:.4f} [{iv.low:.4f}, {iv.high:.4f}] |" in row and " ± " not in row
    # the results file holds the cells, one a line, and rebuilding from it alone gives the same page
    saved = json.loads((tmp_path / "quick" / "results.json").read_text())
    assert saved["cells"] == json.loads(json.dumps(cells))
    study = st.Study(cfg, quiet=True)
    study.write_report_from_results()
    assert (tmp_path / "quick" / "README.md").read_text() == readme
    # a sample montage committed with the report stays shown when the cells' grids are gone (rebuilt from results)
    assert "oneshot_image_samples.png" not in readme
    (tmp_path / "quick" / "plots" / "oneshot_image_samples.png").write_bytes(b"\x89PNG committed montage")
    study.write_report_from_results()
    assert "![oneshot_image_samples.png](plots/oneshot_image_samples.png)" in \
        (tmp_path / "quick" / "README.md").read_text()


class _Stop(Exception):
    pass


def test_cells_get_the_learning_rates_used_before_the_specs(tmp_path, monkeypatch):
    """What each one-shot and few-shot cell passes to its trainer: the lr / betas / overrides the study's own dicts
    held before the parameterization specs replaced them (79883b4, written out here), overridable per name by a
    config; a parameterization with no recorded lr is refused with the key to set."""
    old_lr = {"direction": 0.08, "stylespace": 0.08, "dommod": 0.02, "full": 0.002, "affine_plus": 0.002,
              "affine": 0.002}
    old_betas = {"full": [0.0, 0.999], "affine_plus": [0.0, 0.999], "affine": [0.0, 0.999]}
    old_lr_g = {"full": 0.002, "affine_plus": 0.02, "affine_light_plus": 0.008, "stylespace": 0.02, "mapping": 0.002,
                "affine": 0.02}
    seen = []

    def recording_load_config(schema, files, overrides):
        seen.append(overrides)
        raise _Stop

    def cell_overrides(study, part, name):
        seen.clear()
        with pytest.raises(_Stop):
            if part == "oneshot":
                study.run_oneshot(f"oneshot/image/sketch/{name}/s0", "image", "sketch", name, 0)
            else:
                study.run_fewshot(f"fewshot/cat/{name}/s0", "cat", name, 0)
        return seen[0]

    base = ["exp.threads=1", f"exp.work_dir={tmp_path / 'work'}", f"exp.report_dir={tmp_path / 'reports'}"]
    study = st.Study(load_config(st.StudyConfig, [], base), quiet=True)
    monkeypatch.setattr(st, "load_config", recording_load_config)
    for name, lr in old_lr.items():
        over = cell_overrides(study, "oneshot", name)
        beta1, beta2 = old_betas.get(name, [0.9, 0.999])
        assert f"training.lr={lr}" in over and f"training.betas=[{beta1},{beta2}]" in over, name
    for name, lr_g in old_lr_g.items():
        over = cell_overrides(study, "fewshot", name)
        assert f"training.lr_g={lr_g}" in over, name
        assert ("training.mapping_lr_mult=1.0" in over) == (name == "mapping"), name
    for name in ("mapping", "syntconv", "affine_light_plus"):  # none recorded for one-shot training
        with pytest.raises(ValueError, match=f"oneshot.lr: no value for parameterization '{name}'.*"
                                             f"set oneshot.lr.{name}=<value>"):
            study.run_oneshot(f"oneshot/image/sketch/{name}/s0", "image", "sketch", name, 0)
    with pytest.raises(ValueError, match="unknown parameterization 'lora'"):
        study.run_fewshot("fewshot/cat/lora/s0", "cat", "lora", 0)

    monkeypatch.undo()
    over_cfg = load_config(st.StudyConfig, [], base + ["oneshot.lr.mapping=0.01", "fewshot.lr_g.full=0.001"])
    study = st.Study(over_cfg, quiet=True)
    monkeypatch.setattr(st, "load_config", recording_load_config)
    assert "training.lr=0.01" in cell_overrides(study, "oneshot", "mapping")
    assert "training.lr_g=0.001" in cell_overrides(study, "fewshot", "full")
    assert "training.lr=0.08" in cell_overrides(study, "oneshot", "stylespace")  # the others keep the spec's


def test_the_study_refuses_a_judge_that_guides_its_cells(tmp_path, capsys):
    # the guide of every one-shot cell (configs/oneshot_sketch_image.yaml: loss.clip [synthfaces]) named as judge,
    # once by its name and once by its file's path: refused before any cell runs
    from adapt_common.clip_models import BUNDLED
    for judge in ("synthfaces", str(BUNDLED["synthfaces"])):
        with pytest.raises(SystemExit) as e:
            st.main(["--config", "configs/study/quick.yaml", f"exp.clip={judge}", f"exp.work_dir={tmp_path}/w",
                     f"exp.report_dir={tmp_path}/r"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "also a guiding CLIP of the one-shot cells" in err and "synthfaces_judge" in err
        assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
    # a study without one-shot cells has no guide to clash with
    st.Study(load_config(st.StudyConfig, [], ["exp.clip=synthfaces", "oneshot.domains=[]"])).check_judge()


def test_the_study_refuses_a_transfer_to_a_fine_tune_it_does_not_train(tmp_path, capsys):
    # the transfer property reads the full fine-tune of properties.transfer_to: a grid without that cell is refused
    # before any cell runs (it used to fail after every training cell had run)
    base = ["--config", "configs/study/quick.yaml", f"exp.work_dir={tmp_path}/w", f"exp.report_dir={tmp_path}/r"]
    for bad, lacks in ((["fewshot.parameterizations=[affine_plus]"], "full in fewshot.parameterizations"),
                       (["properties.transfer_to=fewshot:dog"], "'dog' in fewshot.domains"),
                       (["properties.transfer_to=oneshot:sepia", "oneshot.guidance=[text]"],
                        "image in oneshot.guidance")):
        with pytest.raises(SystemExit) as e:
            st.main(base + bad)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "needs the full fine-tune" in err and lacks in err, err
        assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
    # the committed grids name a fine-tune they train
    for name in ("quick", "full", "oneshot"):
        st.Study(load_config(st.StudyConfig, [f"configs/study/{name}.yaml"], [])).check_transfer()


def test_long_cells_go_to_the_jobs_first_and_the_properties_take_the_free_cores(tmp_path):
    # a chunk of long cells started last keeps one process busy while the others idle: the jobs get the diffusion
    # and few-shot cells first, then the short one-shot ones; the property cells run here after the local jobs,
    # on as many threads as the jobs had, and the process's thread count is put back afterwards
    keys = ["oneshot/image/sketch/full/s0", "fewshot/cat/full/s0", "oneshot/image/sepia/full/s0",
            "diffusion/full/s0", "fewshot/cat/stylespace/s1"]
    expected = ["diffusion/full/s0", "fewshot/cat/full/s0", "fewshot/cat/stylespace/s1",
                "oneshot/image/sketch/full/s0", "oneshot/image/sepia/full/s0"]
    assert st.longest_first(keys) == expected
    study = st.Study(load_config(st.StudyConfig, [], [
        "exp.engine=local", "exp.jobs=2", "exp.threads=1", f"exp.work_dir={tmp_path}/w",
        f"exp.report_dir={tmp_path}/r"]), quiet=True)
    part = {"oneshot": study.run_oneshot, "fewshot": study.run_fewshot, "diffusion": study.run_diffusion}
    submitted, threads = [], []
    study.check = lambda: None
    study.plan = lambda: [(k, part[k.split("/")[0]], ()) for k in keys] + [("mixing/a+b/s0", study.run_mixing, ())]
    study.done = lambda key: None
    study.run_jobs = lambda ks, label: submitted.extend(ks)
    study.run_cell = lambda key: threads.append((key, torch.get_num_threads()))
    study.write_report = lambda: {}
    before = torch.get_num_threads()
    study.run()
    assert submitted == expected
    assert threads == [("mixing/a+b/s0", 2)]
    assert torch.get_num_threads() == before


def test_a_resumed_run_names_the_done_cells_of_another_thread_count(tmp_path):
    """Cells done at 2 threads, resumed at exp.threads=1: those cells, and only those, are reported as not
    comparable (cells recorded by this thread count and cells not done are not)."""
    def study(threads):
        return st.Study(load_config(st.StudyConfig, [], [f"exp.work_dir={tmp_path}", f"exp.threads={threads}",
                                                          "exp.name=resumed"]), quiet=True)
    old = study(2)
    old.record("oneshot/a", {"x": 1})
    old.record("oneshot/b", {"x": 2})
    new = study(1)
    new.record("oneshot/c", {"x": 3})
    assert new.other_threads(["oneshot/a", "oneshot/b", "oneshot/c", "oneshot/never"]) == ["oneshot/a", "oneshot/b"]
    assert old.other_threads(["oneshot/a", "oneshot/c"]) == ["oneshot/c"]
