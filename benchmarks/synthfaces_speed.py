"""SynthFaces rendering speed on the CPU: images per second per size, batch and domain.

    python -m benchmarks.synthfaces_speed [--sizes 32 64 128 256] [--batches 1 16 128] \
        [--domains photo cat robot sketch watercolor] [--threads 1 2] [--repeats 3] [--json out.json]

Each cell renders fresh faces (offsets advance, so nothing is cached) after one warm-up call and reports the
median of ``repeats`` timings. Writes ``benchmarks/results/synthfaces_speed.json`` by default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "synthfaces_speed.json"


def bench_cell(domain: str, size: int, batch: int, repeats: int) -> dict:
    from adapt_common import synthfaces as sf
    sf.render_domain(sf.sample_params(batch, seed=0, offset=0), domain, size=size)  # warm-up
    times = []
    for r in range(repeats):
        p = sf.sample_params(batch, seed=0, offset=(r + 1) * batch)
        t0 = time.perf_counter()
        sf.render_domain(p, domain, size=size)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"domain": domain, "size": size, "batch": batch, "seconds_per_batch": t,
            "images_per_second": batch / t, "images_per_minute": 60 * batch / t}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--domains", nargs="+", default=["photo", "cat", "robot", "sketch", "watercolor"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-pixels", type=int, default=128 * 256 * 256,
                    help="skip cells with batch*size^2 above this (the largest cells take minutes)")
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args(argv)

    import torch
    rows = []
    print(f"SynthFaces render speed, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'threads':>7} {'domain':<11} {'size':>5} {'batch':>6} {'s/batch':>9} {'img/s':>9} {'img/min':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for domain in args.domains:
            for size in args.sizes:
                for batch in args.batches:
                    if batch * size * size > args.max_pixels:
                        continue
                    r = dict(threads=threads, **bench_cell(domain, size, batch, args.repeats))
                    rows.append(r)
                    print(f"{threads:>7} {domain:<11} {size:>5} {batch:>6} {r['seconds_per_batch']:>9.4f} "
                          f"{r['images_per_second']:>9.1f} {r['images_per_minute']:>9.0f}", flush=True)
    out = {"torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "repeats": args.repeats, "supersample": 2, "results": rows}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
