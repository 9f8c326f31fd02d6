"""One load/save shape for every small file kind (issue 19): ``Kind.from_pretrained(path)`` and
``obj.save_pretrained(path)`` for directions, adapters, hypernetworks and spectral shifts, ``path`` being the file or
a folder holding the kind's canonical file name (what a run folder holds); through the CLIs with folders; the old
calls kept for one release warn, name the new call and give the same objects."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TINY
from diffusion_adapt import svdiff
from gan_adapt.adapter_files import Adapter
from gan_adapt.directions import Direction, DomainEdit, conv_layers
from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
from gan_adapt.hypernetwork import Hypernetwork
from gan_adapt.parameterizations import Parameterization
from gan_adapt.seeds import z_from_seeds

#: The names the trainers write into a run folder (clip_guided/engine, hyper, the diffusion trainers), so a run
#: folder can be given wherever a file of the kind is read.
RUN_FOLDER_NAMES = {"direction": "direction.safetensors", "adapter": "adapter.safetensors",
                    "hypernetwork": "hypernet.safetensors", "shifts": "spectral_shifts.safetensors"}
KIND_CLASSES = {"direction": Direction, "adapter": Adapter, "hypernetwork": Hypernetwork,
                "shifts": svdiff.SpectralShifts}


def _seeded(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _direction(g, seed=1):
    layers = [(layer.name, layer.channels) for layer in conv_layers(g)]
    return Direction("s_delta", layers, 0.3 * _seeded(sum(c for _, c in layers), seed), {"domain": "test"})


def _affine(g, seed=2):
    p = Parameterization("affine", g)
    with torch.no_grad():
        for i, q in enumerate(p.trainable_parameters()):
            q.add_(0.05 * _seeded(q.shape, seed + i))
    return p


def _hypernetwork(g, input_dim=16, seed=3):
    net = Hypernetwork.for_generator(g, input_dim=input_dim, width=8, depth=2)
    with torch.no_grad():
        for i, q in enumerate(net.parameters()):
            q.add_(0.1 * _seeded(q.shape, seed + i))
    return net.eval()


def _shifted_model(seed=4):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8, 5))
    svdiff.add_spectral_shifts(model)
    with torch.no_grad():
        for i, shift in enumerate(svdiff.shifts_of(model).values()):
            shift.delta.copy_(0.1 * _seeded(shift.delta.shape, seed + i))
    return model


def _make(kind, g):
    if kind == "direction":
        return _direction(g)
    if kind == "adapter":
        return Adapter.from_parameterization(_affine(g), domain="test")
    if kind == "hypernetwork":
        return _hypernetwork(g)
    return svdiff.SpectralShifts.from_model(_shifted_model(), base_hash="abc")


def _tensors(obj):
    if isinstance(obj, Direction):
        return {"delta": obj.delta}
    if isinstance(obj, Hypernetwork):
        return obj.state_dict()
    return obj.tensors


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def _svd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))


@pytest.mark.parametrize("kind", list(KIND_CLASSES))
def test_a_file_or_a_folder_round_trips(kind, tmp_path, tiny_generator):
    cls, obj = KIND_CLASSES[kind], _make(kind, tiny_generator)
    assert cls.FILE_NAME == RUN_FOLDER_NAMES[kind]
    file = obj.save_pretrained(tmp_path / "mine.safetensors")
    (tmp_path / "run").mkdir()
    in_folder = obj.save_pretrained(tmp_path / "run")  # an existing folder
    new_folder = obj.save_pretrained(f"{tmp_path / 'new'}/")  # a trailing slash: a folder, created
    assert file == tmp_path / "mine.safetensors" and file.is_file()
    assert in_folder == tmp_path / "run" / RUN_FOLDER_NAMES[kind] and in_folder.is_file()
    assert new_folder == tmp_path / "new" / RUN_FOLDER_NAMES[kind] and new_folder.is_file()
    for given in (file, tmp_path / "run", str(tmp_path / "new")):
        back = cls.from_pretrained(given)
        assert type(back) is cls and _same_tensors(_tensors(back), _tensors(obj)), given
    other = obj.save_pretrained(tmp_path / "run", weight_name="other.safetensors")
    assert other == tmp_path / "run" / "other.safetensors"
    assert _same_tensors(_tensors(cls.from_pretrained(tmp_path / "run", weight_name="other.safetensors")),
                         _tensors(obj))

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"empty: a folder without {RUN_FOLDER_NAMES[kind]}; give the"):
        cls.from_pretrained(tmp_path / "empty")
    (tmp_path / "run" / RUN_FOLDER_NAMES[kind]).unlink()
    with pytest.raises(FileNotFoundError, match=r"it holds other\.safetensors: give one of them, or weight_name="):
        cls.from_pretrained(tmp_path / "run")


def test_what_a_file_holds_survives_the_round_trip(tmp_path, tiny_generator):
    """Beyond the tensors: a direction's kind, layers and metadata; an adapter's manifest and the generator it
    gives; a hypernetwork's config and predictions; the shifts' manifest with its norm convention."""
    d = _direction(tiny_generator)
    back = Direction.from_pretrained(d.save_pretrained(tmp_path / "d.safetensors"))
    assert (back.kind, back.layers, back.meta["domain"]) == (d.kind, d.layers, "test")

    p = _affine(tiny_generator)
    path = Adapter.from_parameterization(p, domain="cat", extra={"steps": 3}).save_pretrained(tmp_path / "a")
    adapter = Adapter.from_pretrained(path)
    assert adapter.manifest["parameterization"] == "affine" and adapter.manifest["steps"] == 3
    assert adapter.manifest["num_parameters"] == p.num_trainable()
    z = _seeded((2, TINY["style_dim"]), 0)
    torch.testing.assert_close(adapter.parameterization(tiny_generator).generator.generate(z),
                               p.generator.generate(z))

    net = _hypernetwork(tiny_generator)
    again = Hypernetwork.from_pretrained(net.save_pretrained(tmp_path / "h.safetensors", clip="tiny"))
    emb = _seeded((16,), 5)
    assert again.manifest["clip"] == "tiny" and again.config == net.config
    torch.testing.assert_close(again.direction(emb).delta, net.direction(emb).delta)

    model = _shifted_model()
    shifts = svdiff.SpectralShifts.from_pretrained(
        svdiff.SpectralShifts.from_model(model, base_hash="abc").save_pretrained(tmp_path / "s.safetensors",
                                                                                half=True))
    assert shifts.manifest["base_model_hash"] == "abc" and shifts.manifest["dtype"] == "float16"
    assert shifts.convention == "public" and shifts.manifest["norm_modules"] == 1
    expected = {f"{name}.delta": s.delta.detach().half().float() for name, s in svdiff.shifts_of(model).items()}
    assert _same_tensors(shifts.tensors, expected)


def test_a_public_svdiff_file_written_again_stays_public(tmp_path):
    """svdiff-pytorch's files have no manifest (their norm convention is one value per norm); read here and written
    again, the file says so, rather than taking the default of our old unlabelled files (per channel)."""
    from safetensors.torch import save_file
    state = {"0.delta": torch.rand(3), "1.delta": torch.rand(1)}
    save_file(state, str(tmp_path / "theirs.safetensors"))
    theirs = svdiff.SpectralShifts.from_pretrained(tmp_path / "theirs.safetensors")
    assert theirs.manifest == {} and theirs.convention == "public"
    ours = svdiff.SpectralShifts.from_pretrained(theirs.save_pretrained(tmp_path / "ours.safetensors"))
    assert ours.convention == "public" and _same_tensors(ours.tensors, state)


def test_the_old_calls_warn_and_give_the_same_objects(tmp_path, tiny_generator):
    from gan_adapt.adapter_files import load_adapter, read_adapter, save_adapter
    from gan_adapt.directions import load_direction
    d = _direction(tiny_generator)
    with pytest.warns(DeprecationWarning, match=r"Direction\.save\(path\) is deprecated .*use "
                                                r"Direction\.save_pretrained\(path\)"):
        old_file = d.save(tmp_path / "d_old.safetensors")
    new_file = d.save_pretrained(tmp_path / "d_new.safetensors")
    with pytest.warns(DeprecationWarning, match=r"use Direction\.from_pretrained\(path\)"):
        old = load_direction(old_file)
    new = Direction.from_pretrained(new_file)
    assert (old.kind, old.layers, old.meta) == (new.kind, new.layers, new.meta)
    assert torch.equal(old.delta, new.delta)

    p = _affine(tiny_generator)
    with pytest.warns(DeprecationWarning, match=r"use Adapter\.from_parameterization\(param, \.\.\.\)"
                                                r"\.save_pretrained\(path\)"):
        old_file = save_adapter(p, tmp_path / "a_old.safetensors", domain="x", extra={"steps": 1})
    new_file = Adapter.from_parameterization(p, domain="x", extra={"steps": 1}).save_pretrained(tmp_path / "a_new")
    with pytest.warns(DeprecationWarning, match=r"use Adapter\.from_pretrained\(path\)"):
        manifest, tensors = read_adapter(old_file)
    new = Adapter.from_pretrained(new_file)
    drop = ("created",)
    assert {k: v for k, v in manifest.items() if k not in drop} == {k: v for k, v in new.manifest.items()
                                                                     if k not in drop}
    assert _same_tensors(tensors, new.tensors)
    with pytest.warns(DeprecationWarning, match=r"use Adapter\.from_pretrained\(path\)\.parameterization"):
        old_param = load_adapter(old_file, tiny_generator)
    new_param = new.parameterization(tiny_generator)
    assert old_param.name == new_param.name == "affine"
    assert _same_tensors(old_param.trained_state_dict(), new_param.trained_state_dict())

    net = _hypernetwork(tiny_generator)
    with pytest.warns(DeprecationWarning, match=r"use Hypernetwork\.save_pretrained\(path\)"):
        old_file = net.save(tmp_path / "h_old.safetensors", clip="tiny")
    with pytest.warns(DeprecationWarning, match=r"use Hypernetwork\.from_pretrained\(path\)"):
        old = Hypernetwork.load(old_file)
    new = Hypernetwork.from_pretrained(net.save_pretrained(tmp_path / "h_new.safetensors", clip="tiny"))
    assert old.config == new.config and _same_tensors(old.state_dict(), new.state_dict())

    model = _shifted_model()
    with pytest.warns(DeprecationWarning, match=r"use SpectralShifts\.from_model\(model, \.\.\.\)"
                                                r"\.save_pretrained\(path\)"):
        old_file = svdiff.save_shifts(model, tmp_path / "s_old.safetensors", base_hash="abc")
    new_file = svdiff.SpectralShifts.from_model(model, base_hash="abc").save_pretrained(tmp_path / "s_new.safetensors")
    with pytest.warns(DeprecationWarning, match=r"use SpectralShifts\.from_pretrained\(path\)"):
        tensors, manifest = svdiff.read_shifts(old_file)
    new = svdiff.SpectralShifts.from_pretrained(new_file)
    assert _same_tensors(tensors, new.tensors)
    assert {k: v for k, v in manifest.items() if k not in drop} == {k: v for k, v in new.manifest.items()
                                                                     if k not in drop}


# -- through the command lines -----------------------------------------------------------------------------------


def _gan(capsys, *argv):
    from gan_adapt.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def native(tmp_path, tiny_generator):
    return save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")


def test_direction_files_and_run_folders_through_the_cli(tmp_path, tiny_generator, native, capsys):
    d = _direction(tiny_generator)
    d.save_pretrained(tmp_path / "d.safetensors")
    rc, out, _ = _gan(capsys, "direction", "sparse", tmp_path / "d.safetensors", "--keep", "0.5", "--out",
                      f"{tmp_path / 'sparse'}/")
    assert rc == 0 and f"wrote {tmp_path / 'sparse' / 'direction.safetensors'}" in out
    rc, out, _ = _gan(capsys, "direction", "info", tmp_path / "sparse")
    assert rc == 0 and json.loads(out)["nonzero"] == round(0.5 * d.size)
    raw = {}
    for name, given in (("file", tmp_path / "sparse" / "direction.safetensors"), ("folder", tmp_path / "sparse")):
        rc, _, err = _gan(capsys, "generate", "--ckpt", native, "--seeds", "0-1", "--outdir", tmp_path / name,
                          "--direction", f"{given}:0.7", "--save-raw", tmp_path / f"{name}.npy")
        assert rc == 0, err
        raw[name] = np.load(tmp_path / f"{name}.npy")
    with torch.no_grad():  # the sparse direction made here, applied in this process
        expected = DomainEdit(tiny_generator, [(d.sparse(0.5), 0.7)]).generate(z_from_seeds([0, 1], TINY["style_dim"]))
    np.testing.assert_array_equal(raw["file"], raw["folder"])
    np.testing.assert_allclose(raw["folder"], expected.numpy(), atol=1e-5)

    (tmp_path / "empty").mkdir()
    rc, _, err = _gan(capsys, "generate", "--ckpt", native, "--seeds", "0", "--outdir", tmp_path / "e",
                      "--direction", tmp_path / "empty")
    assert rc == 2 and f"{tmp_path / 'empty'}: a folder without direction.safetensors" in err
    assert "Traceback" not in err


def test_adapter_files_and_run_folders_through_the_cli(tmp_path, tiny_generator, native, capsys):
    p = _affine(tiny_generator)
    Adapter.from_parameterization(p).save_pretrained(f"{tmp_path / 'run'}/")
    grids = {}
    for name, row in (("file", f"a={tmp_path / 'run' / 'adapter.safetensors'}"), ("folder", f"a={tmp_path / 'run'}"),
                      ("base", "")):
        rc, _, err = _gan(capsys, "compare", "--ckpt", native, "--row", row, "--seeds", "0-1", "--out",
                          tmp_path / f"{name}.png")
        assert rc == 0, err
        grids[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    np.testing.assert_array_equal(grids["file"], grids["folder"])
    assert not np.array_equal(grids["folder"], grids["base"])  # the adapter was applied


def test_hypernetwork_files_and_run_folders_through_the_cli(tmp_path, tiny_generator, tiny_ckpt_clip, capsys):
    from adapt_common.clip_models import load_clip
    _, clip_path = tiny_ckpt_clip
    clip = load_clip(str(clip_path))
    net = _hypernetwork(tiny_generator, input_dim=clip.encode_texts(["x"]).shape[-1])
    net.save_pretrained(f"{tmp_path / 'run'}/", clip=str(clip_path))
    rc, out, err = _gan(capsys, "hyper", tmp_path / "run", "--prompt", "a sketch", "--out", f"{tmp_path / 'd'}/")
    assert rc == 0, err
    assert f"wrote {tmp_path / 'd' / 'direction.safetensors'}" in out
    expected = net.direction(clip.encode_texts(["a sketch"])[0])
    torch.testing.assert_close(Direction.from_pretrained(tmp_path / "d").delta, expected.delta)


def test_shift_files_and_checkpoint_folders_through_the_cli(tmp_path, capsys):
    from diffusion_adapt.cli import main
    model = _shifted_model()
    svdiff.SpectralShifts.from_model(model).save_pretrained(f"{tmp_path / 'checkpoint-10'}/")
    capsys.readouterr()
    assert main(["shifts", "info", str(tmp_path / "checkpoint-10")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["norm_convention"] == "public" and info["values"] == sum(
        s.delta.numel() for s in svdiff.shifts_of(model).values())
    assert main(["shifts", "mix", f"{tmp_path / 'checkpoint-10'}:0.5", "--out", f"{tmp_path / 'half'}/"]) == 0
    half = svdiff.SpectralShifts.from_pretrained(tmp_path / "half")
    expected = {f"{n}.delta": 0.5 * s.delta.detach() for n, s in svdiff.shifts_of(model).items()}
    assert half.tensors.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(half.tensors[k], expected[k])
    assert half.convention == "public" and half.manifest["derived"] == "mix"
