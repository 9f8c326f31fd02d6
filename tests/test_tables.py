"""experiments.tables: the README of a backed table is written from its results file alone, with the numbers of
that file; the split it evaluates on is the evaluation's test split."""
import json

import pytest

from experiments import tables


def test_the_test_split_is_the_evaluations():
    from adapt_common.metrics.evaluate import TEST_START
    assert tables.TEST_START == TEST_START


def _row(label, **kw):
    base = {"label": label, "domain_l1": 0.1234, "identity_l1": 0.2, "gap_closed": 0.383, "fid": 0.314159,
            "kid": 0.00281, "kid_std": 0.001, "intra_cluster": 0.104, "clip_cat": 0.84, "settings": {}}
    return {**base, **kw}


def test_fewshot_cat_readme_from_results_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "REPORTS", tmp_path)
    (tmp_path / "fewshot_cat").mkdir()
    data = {"table": "fewshot_cat", "floor": {"fid": 0.0456, "kid": 0.0001, "n": 500},
            "rows": {"unadapted": _row("unadapted", gap_closed=0.0, clip_cat=0.0),
                     "affine_plus_s0": _row("Affine+", seed=0, trainable=110496, file_bytes=448512, wall_s=738.0)}}
    (tmp_path / "fewshot_cat" / "results.json").write_text(json.dumps(data))
    text = tables.write_report("fewshot_cat").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| Affine+")]
    assert lines == ["| Affine+ (seed 0) | 110,496 | 438 KB | 0.1234 | 0.38 | 0.314 | 0.0028 | 0.104 | 84% | 12.3 min |"]
    assert "| unadapted | – | – | 0.1234 | 0.00 |" in text
    assert "**0.046**" in text  # the floor at n = 500


def test_hyper_readme_marks_unseen_captions(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "REPORTS", tmp_path)
    (tmp_path / "hyper_synthfaces").mkdir()
    ev = {"sketch": {"prompt": "a pencil sketch of a face", "seen": True, "gap_closed": -0.014,
                     "clip_domain": {"sketch": 0.5}},
          "sketch+sepia": {"prompt": "a sepia pencil sketch of a face", "seen": False, "gap_closed": 0.2,
                           "clip_domain": {"sketch": 0.25, "sepia": 1.0}}}
    data = {"table": "hyper_synthfaces", "rows": {"s0": {"seed": 0, "config": "c.yaml", "wall_s": 534.0, "n": 128,
                                                         "latent_seeds": "100000-100127", "eval": ev}}}
    (tmp_path / "hyper_synthfaces" / "results.json").write_text(json.dumps(data))
    text = tables.write_report("hyper_synthfaces").read_text()
    assert "| a pencil sketch of a face | sketch 50% | -0.01 |" in text
    assert "| *unseen:* a sepia pencil sketch of a face | sketch 25%, sepia 100% | 0.20 |" in text
    assert "8.9 min" in text and "100000-100127" in text
    assert "guide's own view" in text  # a row measured before the judge existed says whose view it is
    data["rows"]["s0"].update(judge="synthfaces_judge", guides=["synthfaces"])
    (tmp_path / "hyper_synthfaces" / "results.json").write_text(json.dumps(data))
    text = tables.write_report("hyper_synthfaces").read_text()
    assert "judge CLIP `synthfaces_judge`, which did not guide (the guide: `synthfaces`)" in text
    assert "guide's own view" not in text and "per seed" not in text  # one seed: no summary over seeds
    # three seeds: each caption's mean gap closed with Student's 95 % interval over the seeds (computed here with
    # scipy), the judge's calls averaged, each seed's value listed
    import numpy as np
    from scipy import stats as sps
    gaps = {0: -0.014, 1: 0.016, 2: 0.031}
    for seed, g in gaps.items():
        run = json.loads(json.dumps(data["rows"]["s0"]))
        run["seed"], run["eval"]["sketch"]["gap_closed"] = seed, g
        run["eval"]["sketch"]["clip_domain"]["sketch"] = 0.5 + 0.1 * seed
        data["rows"][f"s{seed}"] = run
    (tmp_path / "hyper_synthfaces" / "results.json").write_text(json.dumps(data))
    text = tables.write_report("hyper_synthfaces").read_text()
    x = np.array(list(gaps.values()))
    half = sps.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    line = next(s for s in text.splitlines() if s.startswith("| a pencil sketch of a face | sketch 60% |"))
    low, high = (float(v) for v in line.split("|")[3].split("[")[1].rstrip("] ").split(","))
    assert f"{x.mean():.2f} [" in line and "-0.01, 0.02, 0.03" in line
    # the bootstrap's standard error scatters around the exact one: the bounds agree to a few hundredths
    assert abs(low - (x.mean() - half)) < 0.02 and abs(high - (x.mean() + half)) < 0.02
    assert "Seeds 0, 1, 2" in text and "Each seed:" in text


def test_a_table_without_results_says_which_command_writes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "REPORTS", tmp_path)
    with pytest.raises(SystemExit, match="python -m experiments.tables run fewshot_cat"):
        tables.write_report("fewshot_cat")


def test_the_analogy_hypernetwork_table_names_its_guide_and_orders_seeds(tmp_path, monkeypatch):
    """The analogy-guided hypernetwork's report says the CLIP only embedded the captions (the references guided), and
    lists seeds in order whichever finished first (runs side by side append in any order)."""
    monkeypatch.setattr(tables, "REPORTS", tmp_path)
    table = "hyper_synthfaces_analogy"
    (tmp_path / table).mkdir()
    ev = {"sketch": {"prompt": "a pencil sketch of a face", "seen": True, "gap_closed": 0.6,
                     "clip_domain": {"sketch": 0.5}}}
    row = {"config": "configs/hyper_synthfaces_analogy.yaml", "wall_s": 400.0, "n": 128,
           "latent_seeds": "100000-100127", "judge": "synthfaces_judge", "guides": ["synthfaces"],
           "references": ["synthfaces:sketch"], "eval": ev}
    data = {"table": table, "rows": {"s2": {**row, "seed": 2, "overrides": ["analogy.mirror=false"]},
                                     "s0": {**row, "seed": 0, "overrides": ["analogy.mirror=false"]}}}
    (tmp_path / table / "results.json").write_text(json.dumps(data))
    text = tables.write_report(table).read_text()
    assert "the guide: each domain's image analogy from one reference image; the CLIP `synthfaces` only embedded" in text
    assert "Seeds 0, 2 of `configs/hyper_synthfaces_analogy.yaml` with `analogy.mirror=false`" in text  # as it ran
    assert "Seeds 0, 2 of" in text and text.index("Seed 0,") < text.index("Seed 2,")
    assert f"python -m experiments.tables report {table}" in text
