"""The study (experiments/study.py) on a tiny world: every part of the grid runs, the numbers agree with each
other where they must (a direction file reproduces its training run; a sparse direction keeps its fraction),
results are cached per cell so an interrupted study resumes, and the report checks the claims."""
import json

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
    assert len(cells) == len(study.plan()) == 8 + 4 + 4 + 2 + 4 + 4

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
    # Mixing: probabilities of the three named domains from a softmax over all.
    mixed = cells["mixing/sketch+sepia/s0"]["rows"]["sketch+sepia"]["probs"]
    assert all(0 <= p <= 1 for p in mixed.values()) and sum(mixed.values()) <= 1 + 1e-6

    readme = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert out["readme"].endswith("README.md")
    for text in ("## The claims, checked", "≈ Full on similar domains", "A sparse StyleSpace direction", "DomainStudio + SVDiff",
                 "Mixing sketch + sepia", "transfers to a fine-tuned generator", " ± "):
        assert text in readme, text
    for f in out["plots"]:
        assert (tmp_path / "reports" / "tiny" / "plots" / f).read_bytes()[:4] == b"\x89PNG"
    assert {"oneshot_domain_error.png", "sparsity.png", "oneshot_image_samples.png"} <= set(out["plots"])
    saved = json.loads((tmp_path / "reports" / "tiny" / "results.json").read_text())
    assert len(saved["cells"]) == len(cells)

    # Resume: a finished study reruns nothing; a lost cell result is the only thing rerun.
    ran = []
    for name in ("run_oneshot", "run_fewshot", "run_diffusion", "run_mixing", "run_sparsity", "run_transfer"):
        monkeypatch.setattr(st.Study, name, lambda self, key, *a, name=name: ran.append(key) or cells[key])
    again = _study(tiny_world, tmp_path)
    again.run()
    assert ran == []
    study.cell_path("fewshot/cat/full/s1").unlink()
    _study(tiny_world, tmp_path).run()
    assert ran == ["fewshot/cat/full/s1"]
    assert (tmp_path / "reports" / "tiny" / "README.md").read_text() == readme


def test_training_cells_run_as_local_engine_jobs_and_match_an_inline_run(tiny_world, tmp_path):
    """Two one-shot cells through submitit's local executor (two processes at once) give the results the same
    cells give in this process; the jobs' logs are kept, and a finished study submits nothing."""
    only = ["oneshot.domains=[sketch]", "oneshot.parameterizations=[stylespace]", "fewshot.enabled=false",
            "diffusion.enabled=false", "properties.enabled=false"]

    def run(engine, where):
        study = _study(tiny_world + only + [f"exp.engine={engine}", "exp.jobs=2",
                                            f"exp.work_dir={tmp_path / where}"], tmp_path)
        study.run()
        return study, {r["key"]: r for r in study.results()}

    jobs, by_jobs = run("local", "jobs_work")
    _, inline = run("inline", "inline_work")
    assert sorted(by_jobs) == sorted(inline) == ["oneshot/image/sketch/stylespace/s0",
                                                 "oneshot/image/sketch/stylespace/s1"]
    for key in inline:
        assert by_jobs[key]["domain_l1"] == pytest.approx(inline[key]["domain_l1"], rel=1e-6)
        assert [c["gap_closed"] for c in by_jobs[key]["curve"]] == pytest.approx(
            [c["gap_closed"] for c in inline[key]["curve"]], rel=1e-6)
    logs = list((tmp_path / "jobs_work" / "tiny" / "jobs").rglob("*_log.err"))
    assert len(logs) == 2
    submitted = []
    jobs.executor = lambda: submitted.append(1)  # noqa: E731 - a finished study must not ask for an executor
    jobs.run()
    assert submitted == []


def test_unknown_study_key_is_an_error():
    with pytest.raises(ConfigError, match="oneshot"):
        load_config(st.StudyConfig, [], ["oneshot.iterations=3"])


def test_statistics_and_verdicts():
    from experiments.study_report import claims, fmt, mean_sd
    assert fmt([1.0, 3.0], 1) == f"2.0 ± {2 ** 0.5:.1f}" and fmt([None]) == "–" and fmt([0.5], 2) == "0.50"
    assert mean_sd([1.0, float("nan"), 3.0])[2] == 2
    cfg = load_config(st.StudyConfig, [], ["oneshot.guidance=[image]", "fewshot.domains=[cat]"])
    one = {("image", "full", "by_domain"): {"sketch": 0.6, "sepia": 0.6, "pixelart": -0.8},
           ("image", "stylespace", "by_domain"): {"sketch": 0.3, "sepia": 0.3, "pixelart": 0.05},
           ("image", "stylespace_sparse", "by_domain"): {"sketch": 0.29, "sepia": 0.29, "pixelart": 0.0},
           ("image", "dommod", "by_domain"): {"sketch": 0.05, "sepia": 0.0},
           ("image", "dommod_sparse", "by_domain"): {"sketch": 0.1, "sepia": 0.1}}
    text = "\n".join(claims(cfg, one,
                            {("cat", "stylespace"): (50.0, 1.0), ("cat", "affine_plus"): (30.0, 2.0),
                             ("cat", "affine_light_plus"): (49.5, 2.0), ("cat", "source"): (100.0, 0.0)}, {},
                            {("transfer", "sketch"): (0.5, 0.2), ("transfer", "sepia"): (0.05, -1.0)}))
    # only the domains where the baseline closes >= 10% of the gap count (pixelart's -0.8 would flip the verdict)
    assert ("StyleSpace direction (Δs, toRGB incl.) ≈ Full on similar domains (image-guided): gap closed 0.300 vs "
            "0.600 for Full (ratio 0.50) on the domains where Full closes at least 10% of the gap (sketch, sepia): "
            "**partly holds**") in text
    assert "(ratio 0.97) on the domains where the dense one closes at least 10% of the gap (sketch, sepia): **holds**" in text
    assert "the dense one itself closes under 10% of the gap on every domain (best 0.05), so the claim cannot be tested" in text
    assert "(sketch): gap closed 0.20 there vs 0.50 on the source: **partly holds**" in text
    assert "(sepia): gap closed -1.00 there vs 0.05 on the source; on the source it closes under 10%" in text
    assert "Affine+ beats StyleSpace on dissimilar few-shot (cat): FID 30.00 vs 50.00: **holds**" in text
    assert "FID 49.50 vs 50.00: **partly holds** (within the seed spread)" in text


def test_domainstudio_verdict_needs_a_moved_model_and_a_clear_gain():
    from experiments.study_report import claims
    cfg = load_config(st.StudyConfig, [], ["oneshot.guidance=[image]", "fewshot.domains=[cat]"])

    def verdict(full, ds):
        text = "\n".join(claims(cfg, {}, {}, {"full": full, "svdiff_domainstudio": ds}, {}))
        return next(line for line in text.splitlines() if "DomainStudio + SVDiff" in line)
    unmoved = {"fid": (1.70, 0.02), "intra": (0.45, 0.01), "source_fid": 1.88}
    assert "cannot be tested here" in verdict(unmoved, {"fid": (1.75, 0.0), "intra": (0.60, 0.01)})
    moved = {"fid": (0.90, 0.02), "intra": (0.45, 0.01), "source_fid": 1.88}
    assert verdict(moved, {"fid": (1.0, 0.0), "intra": (0.55, 0.01)}).endswith("**holds**.")
    assert verdict(moved, {"fid": (1.0, 0.0), "intra": (0.40, 0.01)}).endswith("**does not hold on SynthFaces**.")
    assert "(within the seed spread)" in verdict(moved, {"fid": (1.0, 0.0), "intra": (0.46, 0.05)})
    # more diverse but far from the domain: not the claim, and the line says why
    assert "**does not hold on SynthFaces** (more diverse, but its FID is not comparable" in verdict(
        moved, {"fid": (1.6, 0.0), "intra": (0.55, 0.01)})


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
