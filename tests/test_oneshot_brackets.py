"""The one-shot brackets experiment: colour maps fitted on one pair, scored on held-out latents, with intervals."""
import json

import numpy as np
import pytest

from experiments import oneshot_brackets as ob


def test_brackets_on_the_validation_family(tmp_path):
    out = tmp_path / "b"
    assert ob.main(["--family", "validation", "--refs", "2", "--n", "16", "--invert-steps", "5",
                    "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    styles = {r["style"]: r for r in res["styles"]}
    assert set(styles) == {"tritone", "chalkboard", "scanlines", "dither", "retro_monitor"}
    tri = styles["tritone"]
    ident = np.asarray(tri["identity_error"])
    priv = np.asarray(tri["errors"]["colour_map_privileged"])
    assert ident.shape == priv.shape == (2, 16) and (ident > 0.02).all()
    # by hand: the gap closed is 1 - mean error / mean identity error; a colour-map style is mostly closed by a map
    # fitted on the true source
    gap = 1 - priv.mean(1) / ident.mean(1)
    assert (gap > 0.5).all()
    iv = ob.gap_interval(tri["errors"]["colour_map_privileged"], tri["identity_error"])
    assert iv["mean"] == pytest.approx(float(gap.mean()), abs=1e-9) and iv["low"] <= iv["mean"] <= iv["high"]
    table = (out / "README.md").read_text()
    assert "| tritone | colour map |" in table and "python -m experiments.oneshot_brackets" in table
