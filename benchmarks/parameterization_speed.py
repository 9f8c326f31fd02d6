"""Few-shot training speed and memory of each parameterization on the CPU.

    python -m benchmarks.parameterization_speed [--sizes 64 256] [--batch 4] [--steps 3] [--json out.json]

One cell = one parameterization at one size, in its own process (so the peak resident memory is that
cell's alone), running the real few-shot trainer (`GanTrainer.train_step`: D step with ADA, lazy R1, G step
with the non-saturating loss; lazy R1 every 16 steps, so the median step has none) on 10 SynthFaces cat images. Weights are random: 64 px is the bundled
generator's architecture, 256 px is config-f (512-d styles, 8-layer mapping, channel_base 32768). The
first step is a warm-up and is not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCHS = {
    64: dict(size=64, style_dim=128, n_mlp=4, channel_base=2048, channel_max=64),  # the bundled generator's
    256: dict(size=256, style_dim=512, n_mlp=8, channel_base=32768, channel_max=512),
}


def run_cell(size: int, name: str, batch: int, steps: int, threads: int) -> dict:
    from gan_adapt.training.engine import GanTrainConfig, GanTrainer
    from adapt_common.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(GanTrainConfig, overrides=[
            *(f"generator_args.{k}={v}" for k, v in ARCHS[size].items()),
            f"exp.run_dir={tmp}", f"exp.threads={threads}", "data.source=synthfaces:cat@10",
            f"training.parameterization={name}", f"training.batch={batch}", "training.r1_every=16",
            "ada.enabled=true", "ada.p_init=0.2"])
        tr = GanTrainer(cfg, quiet=True)
        n_train = tr.param.num_trainable()
        tr.train_step()  # warm-up
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tr.train_step()
            times.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"trainable": n_train, "median_s": statistics.median(times), "it_per_s": 1 / statistics.median(times),
            "peak_rss_gb": peak_kb / 2 ** 20}


def main(argv=None) -> int:
    from gan_adapt.parameterizations import PARAMETERIZATIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256], choices=sorted(ARCHS))
    ap.add_argument("--names", nargs="+", default=list(PARAMETERIZATIONS), choices=PARAMETERIZATIONS)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/parameterization_speed.json")
    ap.add_argument("--_cell", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._cell:  # child process: one measurement, printed as JSON
        size, name = args._cell
        print(json.dumps(run_cell(int(size), name, args.batch, args.steps, args.threads)))
        return 0

    rows = []
    header = f"{'size':>5} {'parameterization':>18} | {'trainable':>11} {'s/iter':>8} {'it/s':>7} {'peak GB':>8}"
    print(f"parameterization_speed: batch {args.batch}, {args.threads} threads, torch CPU, "
          f"{platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for name in args.names:
            r = subprocess.run([sys.executable, "-m", "benchmarks.parameterization_speed", "--threads",
                                str(args.threads), "--batch", str(args.batch), "--steps", str(args.steps),
                                "--_cell", str(size), name], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            cell = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append({"size": size, "parameterization": name, "batch": args.batch, **cell})
            print(f"{size:>5} {name:>18} | {cell['trainable']:>11,} {cell['median_s']:>8.3f} {cell['it_per_s']:>7.2f} "
                  f"{cell['peak_rss_gb']:>8.2f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "machine": platform.machine(), "python": platform.python_version(),
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
