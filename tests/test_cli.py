"""``python -m gan_adapt``: generate, convert, info, init, through the real entry point."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from gan_adapt.cli import main
from gan_adapt.formats import StyleGANCheckpoint, load_generator, save_checkpoint
from gan_adapt.seeds import z_from_seeds


@pytest.fixture
def ckpt(tmp_path, tiny_generator):
    return save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.pt")


def test_generate_writes_pngs_and_raw_output(tmp_path, ckpt):
    out = tmp_path / "out"
    rc = main(["generate", "--ckpt", str(ckpt), "--seeds", "3-5,9", "--truncation", "0.7", "--outdir", str(out),
               "--save-raw", str(tmp_path / "raw.npy"), "--batch", "3"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "seed0003.png", "seed0004.png", "seed0005.png", "seed0009.png"]
    raw = np.load(tmp_path / "raw.npy")
    assert raw.dtype == np.float32 and raw.shape == (4, 3, 32, 32)
    g = load_generator(ckpt)
    with torch.no_grad():
        expected = g.generate(z_from_seeds([3, 4, 5, 9], TINY["style_dim"]), truncation=0.7)
    np.testing.assert_allclose(raw, expected.numpy(), rtol=0, atol=1e-5)  # raw: before any clamping
    png = np.asarray(Image.open(out / "seed0004.png"))
    assert png.shape == (32, 32, 3)
    expected_png = ((expected[1].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(png.astype(int) - expected_png.astype(int)).max() <= 1


def test_convert_info_and_init(tmp_path, ckpt, capsys):
    assert main(["convert", str(ckpt), str(tmp_path / "g.safetensors")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "g.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "native" and info["generator"]["size"] == 32
    assert info["stylespace_with_torgb"] == load_generator(ckpt).style_dims()
    assert main(["init", "--out", str(tmp_path / "r.pt"), "--size", "64", "--style-dim", "16", "--n-mlp", "1",
                 "--channel-base", "256", "--channel-max", "16", "--with-d"]) == 0
    g = load_generator(tmp_path / "r.pt")
    assert g.size == 64 and g.config.n_mlp == 1


def test_bad_input_exits_with_a_message(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    assert main(["generate", "--ckpt", str(tmp_path / "junk.pt"), "--outdir", str(tmp_path / "o")]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(tmp_path / "nope.pt"), "--outdir", str(tmp_path / "o")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path, ckpt):
    r = subprocess.run([sys.executable, "-m", "gan_adapt", "generate", "--ckpt", str(ckpt), "--seeds", "0",
                        "--outdir", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "seed0000.png").exists()


def _exit_code(argv) -> int:
    """main's exit status, whether argparse exits (bad arguments) or main returns."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("command, extra, option, value", [
    ("generate", [], "--truncation", "nan"), ("generate", [], "--truncation", "inf"),
    ("generate", [], "--truncation", "-inf"), ("morph", ["--key", ""], "--fps", "nan"),
    ("compare", ["--row", ""], "--truncation", "inf"), ("invert", ["--image", "x.png"], "--lr", "nan"),
    ("direction", ["sparse", "d.safetensors"], "--keep", "nan"),
    ("evaluate", ["--domain", "sketch"], "--truncation", "nan"),
])
def test_non_finite_numbers_are_refused_when_parsed(tmp_path, ckpt, capsys, command, extra, option, value):
    out = tmp_path / "o"
    argv = [command, *extra, f"{option}={value}", "--outdir" if command == "generate" else "--out", str(out)]
    if command != "direction":
        argv += ["--ckpt", str(ckpt)]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: '{value}' is not a finite number" in err and "Traceback" not in err
    assert not out.exists()


def test_non_finite_direction_weights_and_bad_thread_counts_are_refused(tmp_path, ckpt, capsys):
    out = str(tmp_path / "o")
    assert _exit_code(["generate", "--ckpt", str(ckpt), "--direction", "d.safetensors:nan", "--outdir", out]) == 2
    assert "the weight 'nan' is not a finite number" in capsys.readouterr().err
    assert _exit_code(["generate", "--ckpt", str(ckpt), "--threads", "0", "--outdir", out]) == 2
    assert "argument --threads: '0': give a number >= 1" in capsys.readouterr().err
