"""The trainer registry through the command lines: `train --help` lists every trainer with each key's default and
meaning, `export RUN` writes every file kind of every GAN trainer (and the text-to-image result), and a run folder
whose config.yaml has the old key names resumes and exports, with a warning naming the new key."""
import dataclasses
import re
import shutil

import pytest
import torch
import yaml

from adapt_common.trainers import TRAINERS, trainers_of
from gan_adapt import cli as gan_cli
from gan_adapt.formats import StyleGANCheckpoint, load_checkpoint, load_generator, save_checkpoint
from test_text2image import pipe_dir  # noqa: F401  (the tiny latent text-to-image pipeline, a fixture)

GAN = "python -m gan_adapt train"
DIFFUSION = "python -m diffusion_adapt train"
FAST = ["exp.threads=1", "logging.log_every=1", "logging.sample_every=100", "logging.n_samples=2"]


def _leaf_keys(obj, prefix=""):
    """(dotted key, help) of every key of a config instance, read off the dataclass fields."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.metadata["help"]


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [GAN, DIFFUSION])
def test_train_help_lists_every_trainer_and_every_key_with_its_meaning(command, capsys):
    from diffusion_adapt import cli as diffusion_cli
    out = _help(gan_cli.main if command == GAN else diffusion_cli.main, capsys)
    flat = " ".join(out.split())  # the meanings are wrapped over lines
    specs = trainers_of(command)
    assert {s.name for s in specs} == ({"adversarial", "clip", "hyper", "encoder", "analogy_net"} if command == GAN
                                       else {"ddpm", "t2i"})
    for spec in specs:
        assert re.search(rf"^{spec.name}: ", out, re.M), f"{spec.name} is not listed"
        assert " ".join(spec.summary.split()) in flat
        for key, meaning in _leaf_keys(spec.config_class()()):
            assert re.search(rf"^  {re.escape(key)}: ", out, re.M), f"{spec.name}: {key} is not listed"
            assert " ".join(meaning.split()) in flat, f"{spec.name}: the meaning of {key} is not shown"
    assert "\nexp:\n" not in out  # no bare YAML dump of the schema


def test_help_shows_a_trainers_own_defaults(capsys):
    out = " ".join(_help(gan_cli.main, capsys).split())
    clip = out[out.index("clip: one-shot"):out.index("hyper: HyperDomainNet")]
    assert "exp.trainer=clip" in clip and "logging.sample_every=50" in clip
    assert re.search(r"loss\.clip_direction: 1\.0 weight of the CLIP-space direction loss", clip)


# -- export RUN for every GAN trainer ------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path, tiny_generator):
    from gan_adapt.networks import Discriminator
    d = Discriminator(32, channel_base=256, channel_max=32)
    return save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator, d=d), tmp_path / "base.pt")


def _train(args) -> None:
    assert gan_cli.main(["train", *args]) == 0


def _export(run, capsys, **files) -> None:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in files.items()]
    assert gan_cli.main(["export", str(run), *args]) == 0, capsys.readouterr().err


def _renders_like(generator_file, base_file, direction_file, z):
    """The exported merged generator renders what the base does with the direction applied at run time."""
    from gan_adapt.directions import Direction, DomainEdit
    edit = DomainEdit(load_generator(base_file), [(Direction.from_pretrained(direction_file), 1.0)])
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(generator_file).g_ema.generate(z), edit.generate(z),
                                   rtol=1e-4, atol=1e-4)


def _same_tensors(a: dict, b: dict) -> None:
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_export_adversarial(tmp_path, base, capsys):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.directions import Direction
    run = tmp_path / "run"
    _train([f"base={base}", f"exp.run_dir={run}", "data.source=synthfaces:cat@5", "training.parameterization=stylespace",
            "training.iters=2", "training.batch=2", *FAST])
    _export(run, capsys, adapter=tmp_path / "a.safetensors", direction=tmp_path / "d.safetensors",
            generator=tmp_path / "g.safetensors")
    # from the checkpoint, the very files the run wrote when it finished (its EMA at the last step)
    _same_tensors(Adapter.from_pretrained(tmp_path / "a.safetensors").tensors,
                  Adapter.from_pretrained(run / "adapter.safetensors").tensors)
    assert torch.equal(Direction.from_pretrained(tmp_path / "d.safetensors").delta,
                       Direction.from_pretrained(run / "direction.safetensors").delta)
    _renders_like(tmp_path / "g.safetensors", base, run / "direction.safetensors", torch.randn(2, 32))
    assert load_checkpoint(tmp_path / "g.safetensors").d is not None


def test_export_clip(tmp_path, tiny_ckpt_clip, capsys):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.directions import Direction
    ckpt, clip_path = tiny_ckpt_clip
    run = tmp_path / "run"
    _train(["exp.trainer=clip", f"base={ckpt}", f"loss.clip=[{clip_path}]", f"exp.run_dir={run}",
            "target.text=a sepia photo of a face", "training.parameterization=stylespace", "training.iters=2",
            "training.batch=2", *FAST])
    _export(run, capsys, direction=tmp_path / "d.safetensors", adapter=tmp_path / "a.safetensors",
            generator=tmp_path / "merged.safetensors")  # (the tiny base is g.safetensors)
    written = Direction.from_pretrained(run / "direction.safetensors")
    assert written.delta.abs().max() > 0  # trained: the comparisons below are not of zeros
    assert torch.equal(Direction.from_pretrained(tmp_path / "d.safetensors").delta, written.delta)
    _renders_like(tmp_path / "merged.safetensors", ckpt, run / "direction.safetensors", torch.randn(2, 32))
    # the adapter holds the same trained tensors: applied to the base it renders as the direction does
    g = Adapter.from_pretrained(tmp_path / "a.safetensors").parameterization(load_generator(ckpt)).merged_generator()
    save_checkpoint(StyleGANCheckpoint(g_ema=g), tmp_path / "from_adapter.safetensors")
    _renders_like(tmp_path / "from_adapter.safetensors", ckpt, run / "direction.safetensors", torch.randn(2, 32))


def test_export_hyper(tmp_path, tiny_ckpt_clip, capsys):
    from gan_adapt.hypernetwork import Hypernetwork
    ckpt, clip_path = tiny_ckpt_clip
    run = tmp_path / "run"
    _train(["exp.trainer=hyper", f"base={ckpt}", f"loss.clip=[{clip_path}]", f"exp.run_dir={run}",
            "domains.train=[a pencil sketch of a face,a sepia photo of a face]", "mapper.width=32", "mapper.depth=2",
            "training.iters=2", "training.batch=2", *FAST])
    _export(run, capsys, hypernet=tmp_path / "h.safetensors")
    exported = Hypernetwork.from_pretrained(tmp_path / "h.safetensors").state_dict()
    _same_tensors(exported, Hypernetwork.from_pretrained(run / "hypernet.safetensors").state_dict())
    # a file kind this trainer does not write: refused, naming what it does write
    assert gan_cli.main(["export", str(run), "--adapter", str(tmp_path / "a.safetensors")]) == 2
    assert "--hypernet" in capsys.readouterr().err
    assert not (tmp_path / "a.safetensors").exists()


def test_export_encoder(tmp_path, base, capsys):
    from gan_adapt.encoder import StyleEncoder
    run = tmp_path / "run"
    _train(["exp.trainer=encoder", f"base={base}", f"exp.run_dir={run}", "data.bank=16", "training.batch=4",
            "training.iters=2", "encoder.width=4", "encoder.max_width=8", *FAST])
    _export(run, capsys, encoder=tmp_path / "e.safetensors")
    exported = StyleEncoder.from_pretrained(tmp_path / "e.safetensors")
    _same_tensors(exported.state_dict(), StyleEncoder.from_pretrained(run / "encoder.safetensors").state_dict())
    assert exported.config.input_size == 32  # the tiny generator's size
    assert gan_cli.main(["export", str(run), "--direction", str(tmp_path / "d.safetensors")]) == 2
    assert "--encoder" in capsys.readouterr().err


def test_export_analogy_net(tmp_path, base, capsys):
    from adapt_common.analogy_net import AnalogyNet
    run = tmp_path / "run"
    _train(["exp.trainer=analogy_net", f"base={base}", f"exp.run_dir={run}", "encoder=''", "data.invert=false",
            "data.bank=16", "training.batch=4", "training.iters=2", "net.width=4", "net.style_dim=8", *FAST])
    _export(run, capsys, analogy_net=tmp_path / "a.safetensors")
    exported = AnalogyNet.from_pretrained(tmp_path / "a.safetensors")
    _same_tensors(exported.state_dict(), AnalogyNet.from_pretrained(run / "analogy_net.safetensors").state_dict())
    assert exported.config.size == 32  # the tiny generator's size
    assert gan_cli.main(["export", str(run), "--encoder", str(tmp_path / "e.safetensors")]) == 2
    assert "--analogy-net" in capsys.readouterr().err


def test_every_gan_trainer_has_an_export_test():
    tested = {name[len("test_export_"):] for name in globals() if name.startswith("test_export_")}
    assert {s.name for s in trainers_of(GAN)} <= tested


# -- export RUN for the text-to-image trainer ----------------------------------------------------------------------


def test_export_text_to_image(tmp_path, monkeypatch, pipe_dir):
    from diffusion_adapt import cli as diffusion_cli
    from diffusion_adapt import svdiff
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))
    run = tmp_path / "run"
    assert diffusion_cli.main(["train", "exp.trainer=t2i", f"base={pipe_dir}", f"exp.run_dir={run}", "exp.threads=1",
                               "data.source=synthfaces:sketch@5", "data.num_class_images=2", "logging.sample_steps=2",
                               "logging.n_samples=1", "logging.sample_every=1000", "training.batch=2",
                               "training.iters=2", "training.train_text_encoder=true"]) == 0
    out = tmp_path / "exported" / "shifts.safetensors"
    assert diffusion_cli.main(["export", str(run), "--out", str(out)]) == 0
    for mine, theirs in ((out, run / "spectral_shifts.safetensors"),
                         (out.with_name("shifts_te.safetensors"), run / "spectral_shifts_te.safetensors")):
        _same_tensors(svdiff.SpectralShifts.from_pretrained(mine).tensors,
                      svdiff.SpectralShifts.from_pretrained(theirs).tensors)


# -- a run folder with the old key names ---------------------------------------------------------------------------


def _to_old_layout(config_yaml) -> None:
    """Rewrite a run's saved config.yaml as the code before the renames wrote it."""
    cfg = yaml.safe_load(config_yaml.read_text())
    cfg["generator_args"] = {"ckpt": cfg.pop("base"), **cfg.get("generator_args", {})}
    config_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_a_run_with_old_keys_resumes_as_an_uninterrupted_one_and_exports(tmp_path, base, capsys):
    from gan_adapt.adapter_files import Adapter
    common = [f"base={base}", "data.source=synthfaces:cat@5", "training.parameterization=affine_plus",
              "training.block=16", "training.batch=2", "logging.checkpoint_every=2", *FAST]
    _train([*common, f"exp.run_dir={tmp_path / 'straight'}", "training.iters=4"])
    _train([*common, f"exp.run_dir={tmp_path / 'old'}", "training.iters=2"])
    _to_old_layout(tmp_path / "old" / "config.yaml")
    assert "generator_args:\n  ckpt:" in (tmp_path / "old" / "config.yaml").read_text()
    capsys.readouterr()
    # the user's path: the run's own config.yaml and --resume
    _train(["--config", str(tmp_path / "old" / "config.yaml"), "--resume", "training.iters=4"])
    err = capsys.readouterr().err
    assert re.search(r"^warning: .*config.yaml: config key 'generator_args.ckpt' is now 'base'", err, re.M), err
    _same_tensors(Adapter.from_pretrained(tmp_path / "old" / "adapter.safetensors").tensors,
                  Adapter.from_pretrained(tmp_path / "straight" / "adapter.safetensors").tensors)
    # export of a folder whose config.yaml has the old names
    shutil.copytree(tmp_path / "old", tmp_path / "old2")
    assert "base" in yaml.safe_load((tmp_path / "old2" / "config.yaml").read_text())  # the resume wrote new names
    _to_old_layout(tmp_path / "old2" / "config.yaml")
    _export(tmp_path / "old2", capsys, adapter=tmp_path / "a.safetensors")
    _same_tensors(Adapter.from_pretrained(tmp_path / "a.safetensors").tensors,
                  Adapter.from_pretrained(tmp_path / "straight" / "adapter.safetensors").tensors)


def test_every_registered_trainer_resolves():
    for spec in TRAINERS.values():
        assert dataclasses.is_dataclass(spec.config_class()) and callable(spec.train_function())
        if spec.exports:
            cls = spec.trainer_class()
            assert all(callable(getattr(cls, e.method)) for e in spec.exports)
