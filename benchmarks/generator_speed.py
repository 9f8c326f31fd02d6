"""Generator speed and memory on the CPU: the optimised path against the textbook reference path.

    python -m benchmarks.generator_speed [--sizes 256 1024] [--batches 1 4] [--repeats 3] [--json out.json]

Each cell (size, batch, mode, path) runs in its own process so the peak resident memory is that cell's
alone. Both paths use the same random config-f weights (with the zero-initialised biases and noise
strengths perturbed, so every op does work), the same z and the stored noise, and the script checks that
their outputs agree within the project's tolerance (max |diff| < 1e-4) before reporting a speed-up.
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
import time
from pathlib import Path


def _build(size: int, seed: int = 0):
    import torch

    from gan_adapt.networks import Generator
    torch.manual_seed(seed)
    g = Generator(size, 512, 8, channel_multiplier=2)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return g


def cell_step(size: int, batch: int, mode: str, impl: str, device: str = "cpu"):
    """One benchmark cell's work as a function: config-f at ``size`` with the ``impl`` ops, a fixed z, and a
    forward (``mode="fwd"``) or forward + backward of a scalar loss; returns the images."""
    import torch
    g = _build(size).to(device).set_impl(impl)
    z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(123)).to(device)
    if mode == "fwd":
        g.eval().requires_grad_(False)
    else:
        g.train().requires_grad_(True)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                return g([z], randomize_noise=False)[0]
        g.zero_grad(set_to_none=True)
        img = g([z], randomize_noise=False)[0]
        img.square().mean().backward()
        return img.detach()
    return step


def run_cell(size: int, batch: int, mode: str, impl: str, repeats: int, threads: int, out_npy: str | None) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    step = cell_step(size, batch, mode, impl)

    out = step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if out_npy:
        np.save(out_npy, out.numpy())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_rss_gb": peak_kb / 2 ** 20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/generator_speed.json")
    ap.add_argument("--_cell", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._cell:  # child process: one measurement, printed as JSON
        size, batch, mode, impl, repeats, npy = args._cell
        print(json.dumps(run_cell(int(size), int(batch), mode, impl, int(repeats), args.threads,
                                  None if npy == "-" else npy)))
        return 0

    import numpy as np
    tmp = Path(args.json).parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    header = (f"{'size':>5} {'batch':>5} {'mode':>8} | {'reference s':>11} {'optimised s':>11} {'speed-up':>8} | "
              f"{'ref peak GB':>11} {'opt peak GB':>11} | {'max |diff|':>10}")
    print(f"generator_speed: config-f, {args.threads} threads, torch CPU, {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for batch in args.batches:
            for mode in args.modes:
                cell = {}
                for impl in ("ref", "auto"):
                    npy = str(tmp / f"{size}_{batch}_{mode}_{impl}.npy")
                    r = subprocess.run([sys.executable, "-m", "benchmarks.generator_speed", "--threads",
                                        str(args.threads), "--_cell", str(size), str(batch), mode, impl,
                                        str(args.repeats), npy], capture_output=True, text=True)
                    if r.returncode != 0:
                        print(r.stderr, file=sys.stderr)
                        return 1
                    cell[impl] = json.loads(r.stdout.strip().splitlines()[-1])
                    cell[impl]["npy"] = npy
                diff = float(np.abs(np.load(cell["ref"]["npy"]) - np.load(cell["auto"]["npy"])).max())
                row = {"size": size, "batch": batch, "mode": mode, "reference": cell["ref"], "optimised": cell["auto"],
                       "speedup": cell["ref"]["median_s"] / cell["auto"]["median_s"], "max_abs_diff": diff,
                       "equal_within_1e-4": diff < 1e-4}
                rows.append(row)
                print(f"{size:>5} {batch:>5} {mode:>8} | {cell['ref']['median_s']:>11.3f} "
                      f"{cell['auto']['median_s']:>11.3f} {row['speedup']:>7.2f}x | "
                      f"{cell['ref']['peak_rss_gb']:>11.2f} {cell['auto']['peak_rss_gb']:>11.2f} | {diff:>10.2e}",
                      flush=True)
                for impl in ("ref", "auto"):
                    os.unlink(cell[impl].pop("npy"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"threads": args.threads, "machine": platform.machine(), "python": platform.python_version(),
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
