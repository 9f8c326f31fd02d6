"""Generator speed and memory on a CUDA GPU: our CUDA kernels against the pure-PyTorch paths.

    python -m benchmarks.generator_speed_cuda [--sizes 256 1024] [--batches 1 4] [--repeats 10] [--json out.json]

The GPU counterpart of ``benchmarks.generator_speed`` (same config-f weights with perturbed zero-inits, same z,
stored noise). Per cell (size, batch, mode) it runs the three op paths, ``ref`` (textbook), ``torch`` (the
optimised CPU path, here on the GPU) and ``cuda`` (ops/csrc kernels), timed with CUDA events after a warm-up,
and checks that ``cuda`` and ``torch`` agree with ``ref`` (max |diff| < 1e-3 in fp32 on the GPU: the kernels
sum in another order) before reporting a speed-up. Peak memory is ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

from benchmarks.generator_speed import cell_step

IMPLS = ("ref", "torch", "cuda")


def run_cell(size: int, batch: int, mode: str, impl: str, repeats: int):
    import torch
    step = cell_step(size, batch, mode, impl, device="cuda")
    out = step()  # warm-up (and the lazy kernel build)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30
    del step  # frees the generator before the next cell
    torch.cuda.empty_cache()
    return out.float().cpu(), {"median_s": statistics.median(times), "min_s": min(times), "peak_gpu_gb": peak}


def main(argv=None) -> int:
    import torch
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default="benchmarks/results/generator_speed_cuda.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (the CPU one is benchmarks.generator_speed)")
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 throughout: the comparison is of the ops, not of TF32
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    head = f"{'size':>5} {'batch':>5} {'mode':>8} | " + " | ".join(f"{i:>14}" for i in IMPLS) + " | cuda vs ref | max|diff|"
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        for batch in args.batches:
            for mode in args.modes:
                row = {"size": size, "batch": batch, "mode": mode}
                outs = {}
                for impl in IMPLS:
                    outs[impl], row[impl] = run_cell(size, batch, mode, impl, args.repeats)
                diffs = {i: (outs[i] - outs["ref"]).abs().max().item() for i in ("torch", "cuda")}
                row["max_abs_diff"] = diffs
                row["equal_within_1e-3"] = all(d < 1e-3 for d in diffs.values())
                row["speedup_cuda_vs_ref"] = row["ref"]["median_s"] / row["cuda"]["median_s"]
                rows.append(row)
                cells = " | ".join(f"{row[i]['median_s'] * 1000:7.1f} ms {row[i]['peak_gpu_gb']:4.1f}G" for i in IMPLS)
                print(f"{size:>5} {batch:>5} {mode:>8} | {cells} | {row['speedup_cuda_vs_ref']:10.2f}x | "
                      f"{max(diffs.values()):.1e}", flush=True)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "repeats": args.repeats, "tf32": False, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0 if all(r["equal_within_1e-3"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
