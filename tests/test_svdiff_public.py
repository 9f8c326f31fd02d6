"""Our spectral-shift files against svdiff-pytorch's own (https://github.com/mkshing/svdiff-pytorch).

``tests/fixtures/svdiff`` was made with that tool's code by ``tools/fixtures/make_svdiff_fixture.py`` (its commit in
``layout.json``): a tiny text-to-image pipeline, files its models saved, its outputs with them at scales 1 and 0.5,
the names and shapes of its deltas, and its loaders' outputs with files our trainer wrote. Nothing here imports it.
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapt_common.config import load_config
from diffusion_adapt import svdiff
from diffusion_adapt.text2image import T2IConfig, load_t2i, train

FIX = Path(__file__).parent / "fixtures" / "svdiff"
PIPE = FIX / "pipeline"
PARTS = {"unet": "spectral_shifts.safetensors", "text_encoder": "spectral_shifts_te.safetensors"}
# Their SVDs are float32, ours float64 rounded to float32. Measured on outputs up to ~2: <= 3.2e-5 with their files
# (large shifts, a quarter of the singular values driven through zero), <= 7e-6 with our trainer's.
TOL = dict(rtol=1e-4, atol=3e-5)


@pytest.fixture(autouse=True)
def svd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIX / "expected.safetensors"))


@pytest.fixture(scope="module")
def layout():
    return json.loads((FIX / "layout.json").read_text())


def _outputs(model, e) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {"unet": model.unet(e["x"], e["t"], encoder_hidden_states=e["context"]).sample,
                "text_encoder": model.text_encoder(e["ids"]).last_hidden_state}


def _shifted(folder: Path, scale: float = 1.0):
    """The fixture pipeline with the UNet and text-encoder files of ``folder`` applied, at ``scale``."""
    m = load_t2i(PIPE)
    for part, name in PARTS.items():
        module = getattr(m, part)
        svdiff.apply_shift_files(module, [(str(folder / name), 1.0)])
        svdiff.set_scale(module, scale)
    return m


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_their_files_give_their_outputs_here(expected, scale):
    out = _outputs(_shifted(FIX / "theirs", scale), expected)
    torch.testing.assert_close(out["unet"], expected[f"theirs_unet_scale{scale:g}"], **TOL)
    torch.testing.assert_close(out["text_encoder"], expected[f"theirs_te_scale{scale:g}"], **TOL)
    plain = _outputs(load_t2i(PIPE), expected)  # the shifts matter at this tolerance
    assert all((out[k] - plain[k]).abs().max() > 0.1 for k in PARTS)


def test_their_files_round_trip_through_ours(tmp_path):
    """Loaded here and written back, their files keep their names, shapes and values, and say they are public."""
    m = load_t2i(PIPE)
    for part, name in PARTS.items():
        module = getattr(m, part)
        svdiff.apply_shift_files(module, [(str(FIX / "theirs" / name), 1.0)])
        written = svdiff.SpectralShifts.from_model(module).save_pretrained(tmp_path / name)
        read = svdiff.SpectralShifts.from_pretrained(written)
        back, manifest = read.tensors, read.manifest
        theirs = load_file(str(FIX / "theirs" / name))
        assert back.keys() == theirs.keys() and all(torch.equal(back[k], theirs[k]) for k in theirs), part
        assert manifest["norm_convention"] == "public"


def test_our_trainer_writes_their_layout(tmp_path, layout):
    """svdiff-pytorch's loader refuses a delta of any other shape than its model's (one value per norm): every file
    our trainer writes by default has exactly its names and shapes."""
    run = tmp_path / "run"
    train(load_config(T2IConfig, [], [f"base={PIPE}", f"exp.run_dir={run}", "exp.threads=1",
                                      "data.source=synthfaces:sketch@5", "data.num_class_images=2", "training.batch=2",
                                      "training.iters=1", "training.train_text_encoder=true", "loss.pair=0",
                                      "loss.hf_pair=0", "loss.hf_mse=0", "logging.sample_steps=2",
                                      "logging.n_samples=1", "logging.sample_every=1000", "logging.log_every=1000"]),
          quiet=True)
    for part, name in PARTS.items():
        read = svdiff.SpectralShifts.from_pretrained(run / name)
        tensors, manifest = read.tensors, read.manifest
        assert {k: list(v.shape) for k, v in tensors.items()} == layout[part], part
        assert manifest["norm_convention"] == "public"


def test_their_loader_agrees_with_ours_on_our_trainer_files(expected, layout):
    """The fixture script loaded files our trainer wrote with svdiff-pytorch's own loaders: ours give its outputs."""
    for part, name in PARTS.items():
        assert {k: list(v.shape) for k, v in load_file(str(FIX / "ours" / name)).items()} == layout[part]
    out = _outputs(_shifted(FIX / "ours"), expected)
    torch.testing.assert_close(out["unet"], expected["theirs_on_ours_unet"], **TOL)
    torch.testing.assert_close(out["text_encoder"], expected["theirs_on_ours_te"], **TOL)


def test_the_fixture_is_small():
    assert sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file()) < 1_000_000
