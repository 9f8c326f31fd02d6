"""Training-step time and peak memory of SVDiff against full fine-tuning, on the CPU.

    python -m benchmarks.diffusion_speed [--models bundled sd] [--steps 3] [--json out.json]

Cells (each in its own process, so peak RSS is the cell's own): the bundled 32 px DDPM UNet, and a Stable
Diffusion 1.x-sized ``UNet2DConditionModel`` (859.5 M parameters, 64x64x4 latents, 77x768 text context) with random
weights; one forward+backward+AdamW step at batch 1. For the SD-sized SVDiff cell, the factors U, Vᵀ are random
orthonormal matrices of the right shapes instead of a real SVD (the step costs the same; the real CPU SVD of all 282
matrices takes tens of minutes and is done once per base model, then cached); the one-time SVD of one large
1280x11520 conv is timed separately.
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

from benchmarks import write_json

BUNDLED = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 128), layers_per_block=2,
               down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=16, attention_head_dim=32)


def _build(model: str):
    import torch
    from diffusers import UNet2DConditionModel, UNet2DModel
    torch.manual_seed(0)
    if model == "bundled":
        unet = UNet2DModel(**BUNDLED)
        return unet, lambda: (torch.randn(1, 3, 32, 32), torch.tensor([500]), {})
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.x defaults
    return unet, lambda: (torch.randn(1, 4, 64, 64), torch.tensor([500]),
                          {"encoder_hidden_states": torch.randn(1, 77, 768)})


def _fake_svd(monkey: bool):
    """Random orthonormal factors instead of the real SVD (timing only)."""
    import torch
    from diffusion_adapt import svdiff

    def fake(w, use_cache=True):
        w = w.detach().float()
        m, n = w.shape
        r = min(m, n)
        u = torch.linalg.qr(torch.randn(m, r))[0]
        vh = torch.linalg.qr(torch.randn(n, r))[0].t().contiguous()
        return u, torch.rand(r), vh
    if monkey:
        svdiff.cached_svd = fake


def run_cell(model: str, mode: str, steps: int, threads: int) -> dict:
    import torch
    from diffusion_adapt import svdiff
    torch.set_num_threads(threads)
    unet, inputs = _build(model)
    t0 = time.perf_counter()
    if mode == "svdiff":
        _fake_svd(model != "bundled")
        svdiff.add_spectral_shifts(unet, use_cache=False)
        groups = svdiff.shift_parameter_groups(unet, 1e-3, 1e-6)
    else:
        groups = [{"params": list(unet.parameters()), "lr": 1e-5}]
    setup = time.perf_counter() - t0
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups)
    unet.train()
    times = []
    for i in range(steps + 1):
        x, t, kw = inputs()
        t0 = time.perf_counter()
        loss = unet(x, t, **kw).sample.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"trainable": sum(p.numel() for p in params), "setup_s": setup, "median_s": statistics.median(times),
            "peak_rss_gb": peak}


def svd_once(threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    w = torch.randn(1280, 11520)
    t0 = time.perf_counter()
    torch.linalg.svd(w.double(), full_matrices=False)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["bundled", "sd"], choices=["bundled", "sd"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/diffusion_speed.json")
    ap.add_argument("--_cell", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._cell:
        print(json.dumps(run_cell(args._cell[0], args._cell[1], args.steps, args.threads)))
        return 0
    rows = []
    header = f"{'model':>8} {'mode':>7} | {'trainable':>13} {'setup s':>8} {'step s':>8} {'peak GB':>8}"
    print(f"diffusion_speed: batch 1, forward+backward+AdamW, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for model in args.models:
        for mode in ("full", "svdiff"):
            r = subprocess.run([sys.executable, "-m", "benchmarks.diffusion_speed", "--threads", str(args.threads),
                                "--steps", str(args.steps), "--_cell", model, mode], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            cell = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append({"model": model, "mode": mode, **cell})
            print(f"{model:>8} {mode:>7} | {cell['trainable']:>13,} {cell['setup_s']:>8.1f} {cell['median_s']:>8.2f} "
                  f"{cell['peak_rss_gb']:>8.2f}", flush=True)
    one = svd_once(args.threads) if "sd" in args.models else None
    if one is not None:
        print(f"one-time SVD of one 1280x11520 matrix (float64): {one:.1f} s")
    write_json(args.json, {"threads": args.threads, "machine": platform.machine(), "rows": rows,
                           "svd_1280x11520_s": one})
    return 0


if __name__ == "__main__":
    sys.exit(main())
