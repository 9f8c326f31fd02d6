"""Rebuild the bundled direction library (checkpoints/directions, the app's default) and its table.

    python -m tools.direction_library [--domains sketch,sepia,negative,popart,pixelart] [--runs runs/library]

For each domain: a one-shot run of ``configs/oneshot_encoder.yaml`` from the domain's few-shot image 0 on the bundled
generator (300 steps, seed 0, one thread), its ``direction.safetensors{,.json}`` copied to
``checkpoints/directions/<domain>.safetensors{,.json}``; then ``python -m gan_adapt evaluate`` of each file on 256
validation latents, once with the judge CLIP (``synthfaces_judge``, which guided nothing) and once with the small
guide CLIP (``synthfaces``), both scoring the ground-truth domain error too. Writes
``checkpoints/directions/judge_eval.json`` and prints the table of checkpoints/README.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "checkpoints" / "directions"
GENERATOR = "checkpoints/synthfaces_stylegan2.safetensors"
DOMAINS = ("sketch", "sepia", "negative", "popart", "pixelart")


def train(domain: str, runs: Path) -> None:
    from gan_adapt import cli
    run = runs / domain
    code = cli.main(["train", "--config", "configs/oneshot_encoder.yaml", f"target.image=synthfaces:{domain}",
                     f"exp.run_dir={run}", "exp.seed=0", "exp.threads=1", "evaluation.n=0"])
    if code != 0:
        raise SystemExit(f"the one-shot run of {domain} failed (exit {code})")
    for suffix in ("", ".json"):
        shutil.copyfile(run / f"direction.safetensors{suffix}", LIBRARY / f"{domain}.safetensors{suffix}")


def evaluate(domain: str, runs: Path, clip: str) -> dict:
    from gan_adapt import cli
    out = runs / f"eval_{clip}" / domain
    code = cli.main(["evaluate", "--ckpt", GENERATOR, "--direction", f"checkpoints/directions/{domain}.safetensors",
                     "--domain", domain, "--n", "256", "--split", "validation", "--threads", "1", "--clip", clip,
                     "--out", str(out)])
    if code != 0:
        raise SystemExit(f"evaluating {domain} with {clip} failed (exit {code})")
    return json.loads((out / "report.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--runs", default="runs/library", help="run folders (git-ignored)")
    ap.add_argument("--skip-training", action="store_true", help="only evaluate the files already in the library")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    domains = args.domains.split(",")
    if not args.skip_training:
        for d in domains:
            train(d, runs)
    result = {"command": "python -m gan_adapt evaluate --ckpt checkpoints/synthfaces_stylegan2.safetensors "
                         "--direction checkpoints/directions/<domain>.safetensors --domain <domain> --n 256 --split "
                         "validation --threads 1 --clip synthfaces_judge (and --clip synthfaces) --out "
                         "runs/library/eval_<clip>/<domain>",
              "made_by": "python -m tools.direction_library " + " ".join(argv if argv is not None else sys.argv[1:]),
              "judge": "synthfaces_judge", "n": 256, "domains": {}}
    rows = ["| domain | domain L1 | doing nothing | gap closed | the judge calls it the domain | the small CLIP does |",
            "|---|---|---|---|---|---|"]
    for d in domains:
        judge, small = evaluate(d, runs, "synthfaces_judge"), evaluate(d, runs, "synthfaces")
        de = judge["domain_error"]
        entry = {"judge_domain_accuracy": judge["domain_accuracy"]["accuracy"],
                 "judge_counts": judge["domain_accuracy"]["counts"],
                 "small_clip_domain_accuracy": small["domain_accuracy"]["accuracy"],
                 "pixel_l1": de["pixel_l1"], "identity_l1": de["identity_baseline"]["pixel_l1"],
                 "gap_closed": de["gap_closed"]["pixel_l1"], "fid_judge_features": judge["fid"]}
        result["domains"][d] = entry
        rows.append(f"| {d} | {entry['pixel_l1']:.3f} | {entry['identity_l1']:.3f} | {entry['gap_closed']:.2f} | "
                    f"{100 * entry['judge_domain_accuracy']:.0f} % | {100 * entry['small_clip_domain_accuracy']:.0f} % |")
    (LIBRARY / "judge_eval.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
