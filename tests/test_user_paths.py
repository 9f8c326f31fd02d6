"""User paths of issue 15: one-shot from the user's own image (its name, its direction file whatever the evaluation
does, CLIP-only numbers and a note), `evaluate --direction/--adapter`, folder domains in the evaluation cache, and
thread counts that follow OMP_NUM_THREADS unless a config sets them."""
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adapt_common.clip_models import load_clip
from adapt_common.config import load_config
from gan_adapt.cli import main
from gan_adapt.directions import Direction, DomainEdit
from gan_adapt.seeds import z_from_seeds
from gan_adapt.training.clip_guided import OneShotConfig, reference_image, target_domain

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CONFIG = str(ROOT / "configs" / "oneshot_sketch_image.yaml")


def _write_png(path: Path, colour, seed: int = 0, size: int = 40) -> Path:
    """A noisy image around one colour (a 'style' that is no SynthFaces domain)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _oneshot_args(tiny_ckpt_clip, run, image, *extra):
    """The README's custom-image command on the tiny world: a few steps, a small evaluation."""
    ckpt, clip_path = tiny_ckpt_clip
    return ["train", "--config", IMAGE_CONFIG, f"target.image={image}", f"base={ckpt}",
            f"loss.clip=[{clip_path}]", f"evaluation.clip={clip_path}", "evaluation.features=clip",
            "evaluation.n=4", "training.iters=3", "training.batch=2", "target.source_mean_n=4",
            f"exp.run_dir={run}", "logging.sample_every=100", *extra]


# -- 1. one-shot from the user's own image -----------------------------------------------------------------------


def test_oneshot_from_a_user_image_writes_its_direction_named_by_the_stem(tiny_ckpt_clip, tmp_path, capsys):
    image = _write_png(tmp_path / "my_style.png", (40, 120, 220))
    run = tmp_path / "run"
    assert main(_oneshot_args(tiny_ckpt_clip, run, image)) == 0
    d = Direction.from_pretrained(run / "direction.safetensors")
    assert d.meta["domain"] == "my_style"
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["domain"]["name"] == "my_style"
    # No ground truth, no real images: none of those numbers, but a note that says so.
    assert report["domain_error"] is None and report["fid"] is None and report["kid"] is None
    assert "domain_accuracy" not in report
    assert "ground-truth domain error" in report["skipped"] and "not a SynthFaces domain" in report["skipped"]
    assert "note: skipped ground-truth domain error" in capsys.readouterr().out
    assert d.meta["metrics"]["domain_error"] is None and d.meta["metrics"]["skipped"] == report["skipped"]

    # CLIP quality is the mean cosine to the reference image's embedding, computed here by hand: the direction
    # applied to the base generator at the report's seeds, against the reference as the trainer loads it.
    ckpt, clip_path = tiny_ckpt_clip
    from gan_adapt.formats import load_generator
    g = load_generator(ckpt)
    clip = load_clip(str(clip_path))
    z = z_from_seeds(list(range(4)), g.style_dim)
    with torch.no_grad():
        images = DomainEdit(g, [(d, 1.0)]).generate(z).clamp(-1, 1)
        ref, _ = reference_image(str(image), g.size)
        emb = torch.nn.functional.normalize(clip.encode_images(images).double(), dim=-1)
        ref_emb = torch.nn.functional.normalize(clip.encode_images(ref).double(), dim=-1)
    assert report["clip_quality"] == pytest.approx(float((emb @ ref_emb.T).mean()), abs=1e-5)
    assert report["clip_quality_target"] == "reference image"


def test_oneshot_from_a_user_prompt_is_named_by_it_and_scored_against_it(tiny_ckpt_clip, tmp_path):
    ckpt, clip_path = tiny_ckpt_clip
    run = tmp_path / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "oneshot_sketch_text.yaml"),
                 "target.text=an oil painting of a face", f"base={ckpt}", f"loss.clip=[{clip_path}]",
                 f"evaluation.clip={clip_path}", "evaluation.features=clip", "evaluation.n=4", "training.iters=2",
                 "training.batch=2", f"exp.run_dir={run}", "logging.sample_every=100"]) == 0
    d = Direction.from_pretrained(run / "direction.safetensors")
    assert d.meta["domain"] == "an_oil_painting_of_a_face" and d.meta["prompt"] == "an oil painting of a face"
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["domain_error"] is None and report["fid"] is None and "not a SynthFaces domain" in report["skipped"]
    from gan_adapt.formats import load_generator
    g, clip = load_generator(ckpt), load_clip(str(clip_path))
    with torch.no_grad():
        images = DomainEdit(g, [(d, 1.0)]).generate(z_from_seeds(list(range(4)), g.style_dim)).clamp(-1, 1)
        emb = torch.nn.functional.normalize(clip.encode_images(images).double(), dim=-1)
        text = torch.nn.functional.normalize(clip.encode_texts(["an oil painting of a face"]).double(), dim=-1)
    assert report["clip_quality"] == pytest.approx(float((emb @ text.T).mean()), abs=1e-5)
    assert report["clip_quality_target"] == "prompt"


def test_a_failing_evaluation_still_leaves_the_direction(tiny_ckpt_clip, tmp_path, monkeypatch, capsys):
    ev = importlib.import_module("adapt_common.metrics.evaluate")  # the package exports a function of that name

    def broken(*args, **kwargs):
        raise RuntimeError("metrics exploded")
    monkeypatch.setattr(ev, "evaluate", broken)
    image = _write_png(tmp_path / "ink.png", (20, 20, 20))
    run = tmp_path / "run"
    assert main(_oneshot_args(tiny_ckpt_clip, run, image)) == 1
    err = capsys.readouterr().err
    assert "metrics exploded" in err and "direction.safetensors is written" in err
    d = Direction.from_pretrained(run / "direction.safetensors")
    assert d.meta["domain"] == "ink" and d.meta["steps"] == 3 and "metrics" not in d.meta


def test_a_failing_evaluation_still_leaves_the_adversarial_adapter(tiny_generator, tmp_path, monkeypatch, capsys):
    ev = importlib.import_module("adapt_common.metrics.evaluate")
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint

    def broken(*args, **kwargs):
        raise RuntimeError("metrics exploded")
    monkeypatch.setattr(ev, "evaluate", broken)
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    run = tmp_path / "gan"
    assert main(["train", f"base={ckpt}", "data.source=synthfaces:sketch@5",
                 "training.parameterization=affine_plus", "training.block=16", "training.iters=1", "training.batch=2",
                 "evaluation.n=4", f"exp.run_dir={run}", "logging.sample_every=100"]) == 1
    assert "metrics exploded" in capsys.readouterr().err
    manifest = Adapter.from_pretrained(run / "adapter.safetensors").manifest
    assert manifest["steps"] == 1


def test_target_names():
    cfg = lambda *o: load_config(OneShotConfig, [], list(o)).target  # noqa: E731
    assert target_domain(cfg("target.image=/photos/My Style.v2.png")) == "My Style.v2"
    assert target_domain(cfg("target.image=synthfaces:sepia/3")) == "sepia"
    assert target_domain(cfg("target.image=x.png", "target.domain=sketch")) == "sketch"  # explicit wins
    assert target_domain(cfg("target.text=A  Pencil sketch of a face")) == "sketch"  # SynthFaces' own prompt
    assert target_domain(cfg("target.text=an oil painting of a face, by Rembrandt!")) == \
        "an_oil_painting_of_a_face_by_rembrandt"
    # The shipped one-shot configs keep their SynthFaces names, and a user's image or prompt replaces them.
    for name, domain in [("oneshot_sketch_image", "sketch"), ("oneshot_sketch_text", "sketch"),
                         ("oneshot_popart_dommod", "popart")]:
        path = ROOT / "configs" / f"{name}.yaml"
        assert target_domain(load_config(OneShotConfig, [path]).target) == domain
        over = ["target.image=mine.png", "target.text=''"]
        assert target_domain(load_config(OneShotConfig, [path], over).target) == "mine"


# -- 3. evaluate --direction / --adapter ------------------------------------------------------------------------


def _sketch_error_by_hand(images: torch.Tensor, source: torch.Tensor) -> float:
    """Mean |G_t(z) − T(G_s(z))| on the 0..1 scale, T = SynthFaces' sketch transform."""
    from adapt_common import synthfaces as sf
    truth = sf.apply_domain(source.clamp(-1, 1), "sketch").clamp(-1, 1)
    return float(((images.clamp(-1, 1).double() - truth.double()).abs() / 2).mean())


def _evaluate(ckpt, clip_path, out, *extra):
    assert main(["evaluate", "--ckpt", str(ckpt), "--domain", "sketch", "--n", "4", "--clip", str(clip_path),
                 "--features", "clip", "--out", str(out), *extra]) == 0
    return json.loads((out / "report.json").read_text())


def test_evaluate_scores_a_direction_and_an_adapter(tiny_ckpt_clip, tmp_path):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.directions import Direction
    from gan_adapt.formats import load_generator
    from gan_adapt.parameterizations import Parameterization
    ckpt, clip_path = tiny_ckpt_clip
    g = load_generator(ckpt)
    gen = torch.Generator().manual_seed(3)
    param = Parameterization("stylespace", g)
    affine = Parameterization("affine_plus", g, block=16)
    with torch.no_grad():
        for p in [*param.trainable_parameters(), *affine.trainable_parameters()]:
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    direction = Direction.from_parameterization(param, domain="test").save_pretrained(tmp_path / "d.safetensors")
    adapter = Adapter.from_parameterization(affine).save_pretrained(tmp_path / "a.safetensors")

    z = z_from_seeds(list(range(4)), g.style_dim)
    with torch.no_grad():
        source = g.generate(z)
        edited = DomainEdit(g, [(Direction.from_pretrained(direction), 0.7)]).generate(z)
        adapted = affine.generator.generate(z)
    base = _evaluate(ckpt, clip_path, tmp_path / "base")
    rep = _evaluate(ckpt, clip_path, tmp_path / "dir", "--direction", f"{direction}:0.7")
    assert rep["domain_error"]["pixel_l1"] == pytest.approx(_sketch_error_by_hand(edited, source), rel=1e-5)
    assert rep["domain_error"]["identity_baseline"]["pixel_l1"] == \
        pytest.approx(_sketch_error_by_hand(source, source), rel=1e-5)
    assert rep["domain_error"]["pixel_l1"] != pytest.approx(base["domain_error"]["pixel_l1"], rel=1e-3)
    assert rep["settings"]["directions"] == [f"{direction}:0.7"] and not rep["settings"]["source_is_target"]
    # Weight 0: the unadapted score.
    zero = _evaluate(ckpt, clip_path, tmp_path / "zero", "--direction", f"{direction}:0")
    assert zero["domain_error"]["pixel_l1"] == pytest.approx(base["domain_error"]["pixel_l1"], rel=1e-6)
    assert zero["domain_error"]["gap_closed"]["pixel_l1"] == pytest.approx(0, abs=1e-6)
    assert zero["fid"] == pytest.approx(base["fid"], rel=1e-6)
    # An adapter merged into the checkpoint.
    rep = _evaluate(ckpt, clip_path, tmp_path / "adapter", "--adapter", str(adapter))
    assert rep["domain_error"]["pixel_l1"] == pytest.approx(_sketch_error_by_hand(adapted, source), rel=1e-5)


def test_evaluate_refuses_a_non_finite_direction_weight(tiny_ckpt_clip, tmp_path, capsys):
    ckpt, clip_path = tiny_ckpt_clip
    assert main(["evaluate", "--ckpt", str(ckpt), "--domain", "sketch", "--direction", "d.safetensors:nan",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- 4. folder domains in the evaluation cache ------------------------------------------------------------------


def test_two_folders_of_one_name_are_evaluated_against_their_own_images(tiny_ckpt_clip, tmp_path):
    """Few-shot runs on a/imgs and b/imgs in one process: each report's FID is against its own folder."""
    ev = importlib.import_module("adapt_common.metrics.evaluate")
    from adapt_common.metrics.features import ClipFeatures
    from adapt_common.metrics.fid import fid
    from gan_adapt.training.engine import GanTrainConfig, GanTrainer
    ckpt, clip_path = tiny_ckpt_clip
    for i in range(4):
        _write_png(tmp_path / "a" / "imgs" / f"{i}.png", (230, 60, 40), seed=i, size=32)
        _write_png(tmp_path / "b" / "imgs" / f"{i}.png", (40, 200, 90), seed=10 + i, size=32)
    clip = load_clip(str(clip_path))
    features = ClipFeatures(clip)
    reports, expected = {}, {}
    for name in ("a", "b"):
        cfg = load_config(GanTrainConfig, [], [f"base={ckpt}", f"data.source={tmp_path / name / 'imgs'}",
                                               "training.parameterization=affine_plus", "training.block=16",
                                               "evaluation.n=4",
                                               f"evaluation.clip={clip_path}", "evaluation.features=clip",
                                               f"exp.run_dir={tmp_path / ('run_' + name)}"])
        trainer = GanTrainer(cfg, quiet=True)
        reports[name] = trainer.evaluate()
        # By hand, without the cache: the same seeds' images against this folder's images.
        g = trainer.ema.merged_generator()
        with torch.no_grad():
            fake = g.generate(z_from_seeds(list(range(4)), g.style_dim)).clamp(-1, 1)
        expected[name] = fid(features(fake), features(trainer.data.images))
    assert reports["a"]["domain"]["name"] == reports["b"]["domain"]["name"] == "imgs"
    assert expected["a"] != pytest.approx(expected["b"], rel=0.05)
    for name in ("a", "b"):
        assert reports[name]["fid"] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert len(ev._EVAL_CACHE) >= 2


# -- 5. threads follow the environment unless a config sets them -------------------------------------------------


THREADS_SCRIPT = textwrap.dedent("""
    import sys, torch
    from adapt_common.config import load_config
    ckpt, clip, run, key = sys.argv[1:5]
    extra = [key] if key else []
    out = []

    def report(name):
        out.append(f"{name}={torch.get_num_threads()}")

    from gan_adapt.training.engine import GanTrainConfig, GanTrainer
    GanTrainer(load_config(GanTrainConfig, [], [f"base={ckpt}", f"exp.run_dir={run}/g", *extra]),
               quiet=True)
    report("gan")
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    ClipTrainer(load_config(OneShotConfig, [], [f"base={ckpt}", f"loss.clip=[{clip}]",
                                                "target.text=a sketch", f"exp.run_dir={run}/c", *extra]), quiet=True)
    report("clip")
    from gan_adapt.training.hyper import HyperConfig, HyperTrainer
    HyperTrainer(load_config(HyperConfig, [], [f"base={ckpt}", f"loss.clip=[{clip}]",
                                               "domains.train=[a pencil sketch of a face,a sepia photo of a face]",
                                               "mapper.width=32", "mapper.depth=2", f"exp.run_dir={run}/h", *extra]),
                 quiet=True)
    report("hyper")
    from diffusion_adapt.ddpm_trainer import DiffTrainConfig, DiffusionTrainer
    DiffusionTrainer(load_config(DiffTrainConfig, [], ["base=''", "model.arch.block_out_channels=[16,32]",
                                                       "model.arch.down_block_types=[DownBlock2D,DownBlock2D]",
                                                       "model.arch.up_block_types=[UpBlock2D,UpBlock2D]",
                                                       "model.arch.norm_num_groups=8", "model.arch.layers_per_block=1",
                                                       f"exp.run_dir={run}/d", *extra]), quiet=True)
    report("ddpm")
    # The text-to-image trainer sets its threads before it loads the model: a missing model folder stops it right
    # after (with the key set, a thread count of 1 would show the order changed).
    from diffusion_adapt.text2image import T2IConfig, T2ITrainer
    try:
        T2ITrainer(load_config(T2IConfig, [], [f"base={run}/no_model", f"exp.run_dir={run}/t",
                                               *extra]), quiet=True)
    except Exception:
        pass
    report("t2i")
    # The small CLIP's trainer: its run folder is a file here, so it stops right after setting its threads.
    from tools.train_clip import ClipTrainConfig, train
    open(f"{run}/not_a_folder", "w").close()
    try:
        train(load_config(ClipTrainConfig, [], [f"exp.run_dir={run}/not_a_folder",
                                                *[k.replace("exp.", "") for k in extra]]))
    except FileExistsError:
        pass
    report("train_clip")
    print(" ".join(out))
""")


@pytest.mark.parametrize("key, expected", [("", 1), ("exp.threads=3", 3)])
def test_trainers_keep_omp_num_threads_unless_the_key_is_set(tiny_ckpt_clip, tmp_path, key, expected):
    ckpt, clip_path = tiny_ckpt_clip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DOMAIN_ADAPT_SVD_CACHE": str(tmp_path / "svd")}
    r = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(ckpt), str(clip_path), str(tmp_path), key],
                       capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(item.split("=") for item in r.stdout.split()[-6:])
    assert counts == {name: str(expected) for name in ("gan", "clip", "hyper", "ddpm", "t2i", "train_clip")}, \
        r.stdout


def test_a_thread_count_below_one_is_refused(tiny_ckpt_clip, tmp_path):
    from gan_adapt.training.clip_guided import ClipTrainer
    ckpt, clip_path = tiny_ckpt_clip
    cfg = load_config(OneShotConfig, [], [f"base={ckpt}", f"loss.clip=[{clip_path}]",
                                          "target.text=a sketch", "exp.threads=0", f"exp.run_dir={tmp_path}"])
    with pytest.raises(ValueError, match="exp.threads=0.*OMP_NUM_THREADS"):
        ClipTrainer(cfg, quiet=True)
