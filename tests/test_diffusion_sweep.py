"""experiments.diffusion_fewshot_sweep: a test-split run evaluates on the test split's noises and eval images (the
variants were chosen on the validation split), and says so in each stage's report."""
import json
import subprocess
import types
from pathlib import Path

from experiments import diffusion_fewshot_sweep as sweep


def _fake_train(seen):
    def run(cmd, capture_output, text, timeout):
        seen.append(cmd)
        run_dir = next(a.split("=", 1)[1] for a in cmd if a.startswith("exp.run_dir="))
        ev = Path(run_dir) / "eval"
        ev.mkdir(parents=True, exist_ok=True)
        (ev / "report.json").write_text(json.dumps({"fid": 1.0, "intra_cluster_diversity": {"value": 0.5}}))
        (ev / "samples.png").write_bytes(b"png")
        (Path(run_dir) / "log.csv").write_text("step\n")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_a_test_split_run_evaluates_on_the_test_split(tmp_path, monkeypatch):
    from adapt_common.metrics.evaluate import TEST_START
    assert sweep.TEST_START == TEST_START
    for split, expect in (("validation", None), ("test", f"evaluation.seed={TEST_START}")):
        seen = []
        monkeypatch.setattr(sweep.subprocess, "run", _fake_train(seen))
        args = types.SimpleNamespace(runs=str(tmp_path / split), seed=1, stages=[250], device="cpu", threads=1,
                                     n_eval=8, split=split)
        sweep._run_variant("full", args, deadline=1e18)
        seeds = [a for a in seen[0] if a.startswith("evaluation.seed=")]
        assert seeds == ([expect] if expect else [])
        report = json.loads((tmp_path / split / "full_s1" / "eval_250.json").read_text())
        assert report["variant"]["split"] == split
