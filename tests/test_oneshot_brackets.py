"""The one-shot brackets experiment: colour maps fitted on one pair, scored on held-out latents, with intervals."""
import json

import numpy as np
import pytest
import torch

from experiments import oneshot_brackets as ob


def test_brackets_on_the_validation_family(tmp_path):
    out = tmp_path / "b"
    assert ob.main(["--family", "validation", "--refs", "2", "--n", "16", "--invert-steps", "5",
                    "--encoder", "checkpoints/synthfaces_encoder.safetensors", "--out", str(out)]) == 0
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
    assert "colour map (user, encoder)" in table
    # the encoder row by hand: a colour map fitted on (G(E(reference)), reference), applied to the held-out source
    from adapt_common import synthfaces as sf
    from adapt_common.colour_map import ColourMap
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.formats import load_generator
    from gan_adapt.seeds import z_from_seeds
    g = load_generator("checkpoints/synthfaces_stylegan2.safetensors").eval()
    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    with torch.no_grad():
        source = g.generate(z_from_seeds(list(range(100000, 100016)), g.style_dim)).clamp(-1, 1)
        ref = sf.fewshot_set("tritone", 2, size=64)[0][1:2]
        w = enc(ref)
        face = g.generate(w=w).clamp(-1, 1)
        mapped = ColourMap.fit(face, ref)(source)
        truth = sf.apply_domain(source, "tritone").clamp(-1, 1)
        by_hand = ((mapped.clamp(-1, 1) - truth).abs() / 2).mean(dim=(1, 2, 3)).numpy()
    assert np.allclose(np.asarray(tri["errors"]["colour_map_encoder"][1]), by_hand, atol=1e-5)


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


def test_each_runs_analogy_strength_is_recorded(tmp_path):
    """With analogy.mirror and analogy.shrink set for the encoder guide, every run records the strength its analogy
    was pulled to: one per reference, in (0, 1), and not the same for two different references."""
    out = tmp_path / "s"
    assert ob.main(["--family", "validation", "--styles", "scanlines", "--refs", "2", "--n", "8", "--invert-steps", "2",
                    "--encoder", "checkpoints/synthfaces_encoder.safetensors", "--methods", "encoder_analogy",
                    "--set", "training.iters=2", "analogy.steps=0", "analogy.net=''",
                    "analogy.mirror=true", "analogy.shrink=2",
                    "--out", str(out)]) == 0
    strengths = json.loads((out / "results.json").read_text())["styles"][0]["analogy_strength"]["encoder_analogy"]
    assert len(strengths) == 2 and all(0 < s < 1 for s in strengths) and strengths[0] != strengths[1], strengths


def test_compare_gives_paired_verdicts_with_a_margin(tmp_path, capsys):
    """Two results files whose method B errs by exactly 0.1 x the identity error more than A on every latent: A − B
    is 0.1 of the gap with no spread (holds at margin 0.05, does not hold at 0.2); files of other latents are refused."""
    rng = np.random.default_rng(0)
    ident = rng.uniform(0.1, 0.3, 8).tolist()

    def results(key, extra, n=8):
        errs = [[e + extra * np.mean(ident) for e in rng.uniform(0.05, 0.1, n).tolist()] for _ in range(2)]
        return {"n": n, "held_out_seed": 100000, "styles": [{"style": "tritone", "identity_error": [ident, ident],
                                                                "errors": {key: errs}}]}
    rng = np.random.default_rng(1)
    a = results("analogy", 0.0)
    rng = np.random.default_rng(1)  # the same draws: B = A + 0.1 x mean identity error, latent by latent
    b = results("clip", 0.1)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    pair = [f"{tmp_path / 'a.json'}:analogy", f"{tmp_path / 'b.json'}:clip"]
    assert ob.main(["--compare", *pair, "--margin", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "| tritone | 0.1 [0.1, 0.1] | holds |" in out and "| **pooled** (2 runs) | 0.1 [0.1, 0.1] | holds |" in out
    assert ob.main(["--compare", *pair, "--margin", "0.2"]) == 0
    assert "does not hold" in capsys.readouterr().out
    b["n"] = 9
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(ValueError, match="not paired"):
        ob.main(["--compare", *pair])


def test_merge_joins_runs_over_other_styles_and_refuses_mismatches(tmp_path, capsys):
    """Runs side by side over disjoint styles merge into one table in the family's order; runs of other settings
    or overlapping styles are refused."""
    rng = np.random.default_rng(1)

    def part(name, styles, n=4, **settings):
        r = {"generator": "G", "family": "validation", "refs": 1, "n": n, "methods": {}, "seeds": 1, "overrides": [],
             "encoder": "", "held_out_seed": 100000, "seconds": 10.0, "command": f"cmd {name}",
             "styles": [{"style": s, "family": "validation", "kind": "k", "refs": 1, "n": n,
                         "identity_error": [rng.uniform(0.1, 0.2, n).tolist()],
                         "errors": {"colour_map_user": [rng.uniform(0.0, 0.1, n).tolist()]}} for s in styles]}
        r.update(settings)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(r))
        return path
    a, b = part("a", ["dither", "retro_monitor"]), part("b", ["tritone", "chalkboard"])
    out = tmp_path / "m"
    assert ob.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())
    assert [s["style"] for s in merged["styles"]] == ["tritone", "chalkboard", "dither", "retro_monitor"]
    assert merged["seconds"] == 20.0 and "cmd a" in merged["command"] and "--merge" in merged["command"]
    rows = [line.split(" | ")[0].strip("| ") for line in (out / "README.md").read_text().splitlines()
            if line.startswith("| ") and "kind" not in line]
    assert rows[:4] == ["tritone", "chalkboard", "dither", "retro_monitor"]
    with pytest.raises(ValueError, match="other settings.*n"):
        ob.merge([a, part("c", ["scanlines"], n=8)])
    with pytest.raises(ValueError, match="overlap"):
        ob.merge([a, part("d", ["dither"])])


def test_compare_pairs_a_row_of_several_seeds_with_one_run_per_reference(tmp_path, capsys):
    """A method with 3 seeds per reference against a one-run-per-reference row: the seeds are averaged per reference
    (runs in reference-major order), so a method whose seeds err by 0.1, 0.2 and 0.3 x the identity error less than
    the baseline on every latent is 0.2 of the gap ahead, exactly."""
    n, ident = 6, [0.2] * 6
    base = [[0.15] * n, [0.12] * n]
    seeds = [[b[0] - d * 0.2] * n for b in base for d in (0.1, 0.2, 0.3)]
    res = {"n": n, "held_out_seed": 100000, "styles": [{"style": "tritone", "refs": 2, "identity_error": [ident] * 2,
                                                         "errors": {"a": seeds, "b": base}}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    lines = ob.compare((path, "a"), (path, "b"), 0.05)
    diff = float(lines[2].split(" | ")[1].split(" [")[0])
    assert diff == pytest.approx(0.2, abs=1e-9) and "holds" in lines[2]
    with pytest.raises(ValueError, match="whole number of seeds"):
        ob.per_reference([np.zeros(3)] * 5, 2)


def test_text_method_is_prompted_with_the_styles_caption_once_per_seed(tmp_path, monkeypatch):
    """``text`` trains on the style's own caption, not the config's sketch prompt nor a reference image, and runs
    once per seed whatever the number of references; its seeds are different runs."""
    from gan_adapt.training import clip_guided
    seen = []
    real_init = clip_guided.ClipTrainer.__init__

    def recording_init(self, cfg, **kw):
        seen.append((cfg.target.text, cfg.target.image, cfg.exp.seed))
        real_init(self, cfg, **kw)
    monkeypatch.setattr(clip_guided.ClipTrainer, "__init__", recording_init)
    out = tmp_path / "t"
    assert ob.main(["--family", "validation", "--styles", "tritone", "--refs", "2", "--n", "8", "--seeds", "2",
                    "--invert-steps", "5", "--methods", "text", "--set", "training.iters=20",
                    "--out", str(out)]) == 0
    assert seen == [("a tritone print of a face", "", 0), ("a tritone print of a face", "", 1)]
    runs = np.asarray(json.loads((out / "results.json").read_text())["styles"][0]["errors"]["text"])
    assert runs.shape == (2, 8) and not np.allclose(runs[0], runs[1])
    assert "text-guided direction" in (out / "README.md").read_text()


def test_side_by_side_puts_rows_of_several_files_in_one_table(tmp_path, capsys):
    """Two results files of the same styles and latents (different settings): one column each, gap closed
    1 − mean error / mean identity error averaged over runs, and their mean over styles; files of other latents are
    refused."""
    def results(name, errors, n=4, seed=100000):
        res = {"n": n, "held_out_seed": seed,
               "styles": [{"style": s, "identity_error": [[0.2] * n], "errors": {"m": [[e] * n for e in errs]}}
                          for s, errs in errors.items()]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(res))
        return path
    a = results("a", {"tritone": [0.1, 0.15], "dither": [0.3]})  # gaps 0.5 and 0.25 (mean 0.375), -0.5
    b = results("b", {"tritone": [0.2], "dither": [0.05]})  # 0, 0.75
    assert ob.main(["--side-by-side", f"{a}:m=first", f"{b}:m=second", "--out", str(tmp_path / "o")]) == 0
    table = (tmp_path / "o" / "README.md").read_text()
    assert "| style | first | second |" in table
    assert "| tritone | 0.375 | 0.000 |" in table and "| dither | -0.500 | 0.750 |" in table
    assert "| **mean** | **-0.062** | **0.375** |" in table
    with pytest.raises(ValueError, match="not side by side"):
        ob.side_by_side([(a, "m", "x"), (results("c", {"tritone": [0.1], "dither": [0.1]}, seed=5), "m", "y")])


def test_ceiling_rows_recomputed_by_hand(tmp_path):
    """--ceiling with colour-map-only analogies (analogy.steps=0), so that every row can be recomputed by hand: the
    one view is the colour map of (G(E(reference)), reference), the true-source row the colour map of (true source,
    reference), and the best strength the best point of the grid between the source and the mean of the reference's
    and its mirror image's colour maps (each mirror view inverted on its own)."""
    out = tmp_path / "c"
    assert ob.main(["--family", "validation", "--styles", "tritone", "--refs", "1", "--n", "8", "--invert-steps", "2",
                    "--encoder", "checkpoints/synthfaces_encoder.safetensors", "--ceiling", "--set",
                    "analogy.steps=0", "analogy.net=''", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["ceiling"] is True
    errors = {k: np.asarray(v[0]) for k, v in res["styles"][0]["errors"].items()}
    from adapt_common import synthfaces as sf
    from adapt_common.colour_map import ColourMap
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.formats import load_generator
    from gan_adapt.seeds import z_from_seeds
    g = load_generator("checkpoints/synthfaces_stylegan2.safetensors").eval()
    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")

    def err(images):
        return ((images.clamp(-1, 1) - truth).abs() / 2).mean(dim=(1, 2, 3)).numpy()
    with torch.no_grad():
        source = g.generate(z_from_seeds(list(range(100000, 100008)), g.style_dim)).clamp(-1, 1)
        truth = sf.apply_domain(source, "tritone").clamp(-1, 1)
        ref = sf.fewshot_set("tritone", 1, size=64)[0][:1]
        true_face = sf.fewshot_set("photo", 1, size=64)[0][:1]
        views = [(g.generate(w=enc(r)).clamp(-1, 1), r) for r in (ref, ref.flip(-1))]
        maps = [ColourMap.fit(face, r)(source).clamp(-1, 1) for face, r in views]
        assert np.allclose(errors["ceiling_one_view"], err(maps[0]), atol=1e-5)
        assert np.allclose(errors["ceiling_true_source"], err(ColourMap.fit(true_face, ref)(source)), atol=1e-5)
        change = (maps[0] + maps[1]) / 2 - source
        by_grid = min((err(source + s / 10 * change) for s in range(11)), key=lambda e: e.mean())
        assert np.allclose(errors["ceiling_best_strength"], by_grid, atol=1e-5)
    table = (out / "README.md").read_text()
    assert "analogy: two views, best strength (privileged)" in table and "analogy: two views, pulled" in table
    with pytest.raises(SystemExit):
        ob.main(["--family", "validation", "--ceiling", "--out", str(out)])  # no encoder to invert with


def test_shots_rows_recomputed_by_hand(tmp_path):
    """--shots 3 with colour-map-only analogies: the unpulled row is the mean of the colour maps of six views (the
    reference, two further few-shot images of the style, and each one's mirror image, every view inverted by the
    encoder on its own), and the pulled row scales that change by s² / (s² + k·d²·2/6), s and d measured on 16
    probe faces; with two views (the one-shot rows) the same formula is the recipe's signal² / (signal² + k·d²)."""
    out = tmp_path / "s"
    assert ob.main(["--family", "validation", "--styles", "chalkboard", "--refs", "1", "--n", "8",
                    "--invert-steps", "2", "--encoder", "checkpoints/synthfaces_encoder.safetensors", "--ceiling",
                    "--shots", "3", "--set", "analogy.steps=0", "analogy.net=''", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["shots"] == 3
    errors = {k: np.asarray(v[0]) for k, v in res["styles"][0]["errors"].items()}
    from adapt_common import synthfaces as sf
    from adapt_common.colour_map import ColourMap
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.formats import load_generator
    from gan_adapt.seeds import z_from_seeds
    g = load_generator("checkpoints/synthfaces_stylegan2.safetensors").eval()
    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    k = 8.0  # configs/oneshot_encoder.yaml's analogy.shrink

    def err(images):
        return ((images.clamp(-1, 1) - truth).abs() / 2).mean(dim=(1, 2, 3)).numpy()
    with torch.no_grad():
        source = g.generate(z_from_seeds(list(range(100000, 100008)), g.style_dim)).clamp(-1, 1)
        truth = sf.apply_domain(source, "chalkboard").clamp(-1, 1)
        images = sf.fewshot_set("chalkboard", 3, size=64)[0]
        views = [v for i in range(3) for v in (images[i:i + 1], images[i:i + 1].flip(-1))]
        maps = [ColourMap.fit(g.generate(w=enc(v)).clamp(-1, 1), v) for v in views]
        mean = torch.stack([m(source).clamp(-1, 1) for m in maps]).mean(0)
        assert np.allclose(errors["ceiling_shots_unpulled"], err(mean), atol=1e-5)
        probe = g.generate(torch.randn(16, g.style_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
        outs = [m(probe).clamp(-1, 1) for m in maps]
        signal = float((torch.stack(outs).mean(0) - probe).abs().mean() / 2)
        d = np.mean([float((outs[i] - outs[j]).abs().mean() / 2) for i in range(6) for j in range(i + 1, 6)])
        strength = signal ** 2 / (signal ** 2 + k * d ** 2 * 2 / 6)
        assert 0.05 < strength < 0.95, strength  # a pull that matters, so that a wrong one shows below
        assert np.allclose(errors["ceiling_shots"], err(source + strength * (mean - source)), atol=1e-5)
        # the one-shot row of the same reference: two views, the factor without the count
        two = [maps[0](probe).clamp(-1, 1), maps[1](probe).clamp(-1, 1)]
        s2 = float(((two[0] + two[1]) / 2 - probe).abs().mean() / 2)
        d2 = float((two[0] - two[1]).abs().mean() / 2)
        pair = (maps[0](source).clamp(-1, 1) + maps[1](source).clamp(-1, 1)) / 2
        pulled = source + s2 ** 2 / (s2 ** 2 + k * d2 ** 2) * (pair - source)
        assert np.allclose(errors["ceiling_pulled"], err(pulled), atol=1e-5)
    assert "analogy: K references, unpulled" in (out / "README.md").read_text()
    with pytest.raises(SystemExit):
        ob.main(["--family", "validation", "--shots", "3", "--out", str(out)])  # --shots adds --ceiling rows
