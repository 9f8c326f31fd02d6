"""The viewer callback (the Gradio UI itself is tested in a browser with the app issue)."""
import numpy as np
import pytest

from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint


def test_render_grid_and_errors(tmp_path, tiny_generator):
    from app import render
    path = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    grid = render(str(path), "0-5", 0.7, "const")
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[1] > grid.shape[0]  # 4 per row, 2 rows
    again = render(str(path), "0-5", 0.7, "const")
    np.testing.assert_array_equal(grid, again)
    assert not np.array_equal(grid, render(str(path), "0-5", 0.0, "const"))
    with pytest.raises(ValueError, match="no such file"):
        render(str(tmp_path / "missing.pt"), "0", 1.0, "const")
    with pytest.raises(ValueError, match="at most"):
        render(str(path), "0-99", 1.0, "const")
    with pytest.raises(ValueError, match="path of a checkpoint"):
        render("  ", "0", 1.0, "const")
