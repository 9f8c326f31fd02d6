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


def test_trained_methods_are_scored_on_the_same_latents(tmp_path):
    """--methods runs the one-shot trainer per reference and seed; the oracle (pixels against the true style)
    closes part of the tritone gap within 40 steps, and its column reaches the table; unknown names are refused."""
    out = tmp_path / "m"
    assert ob.main(["--family", "validation", "--styles", "tritone", "--refs", "1", "--n", "16", "--seeds", "2",
                    "--invert-steps", "5", "--methods", "oracle", "--set", "training.iters=40",
                    "target.source_mean_n=8", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["style"] for r in res["styles"]] == ["tritone"]
    tri = res["styles"][0]
    oracle, ident = np.asarray(tri["errors"]["oracle"]), np.asarray(tri["identity_error"])
    assert oracle.shape == (2, 16)  # 1 reference x 2 seeds, 16 latents
    assert (1 - oracle.mean(1) / ident.mean() > 0.1).all(), oracle.mean(1) / ident.mean()
    assert not np.allclose(oracle[0], oracle[1])  # the seeds are different runs
    assert "| oracle |" in (out / "README.md").read_text().splitlines()[6]
    with pytest.raises(SystemExit):
        ob.main(["--family", "validation", "--methods", "nope", "--out", str(out)])
    with pytest.raises(SystemExit):
        ob.main(["--family", "validation", "--styles", "duotone", "--out", str(out)])
