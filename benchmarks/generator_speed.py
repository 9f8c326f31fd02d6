"""Generator speed and memory on the CPU: the optimised path against the textbook reference path.

    python -m benchmarks.generator_speed [--sizes 256 1024] [--batches 1 4] [--repeats 3] [--json out.json]
    python -m benchmarks.generator_speed --rosinality PATH [--sizes 256] [--repeats 5]

Each cell (size, batch, mode, path) runs in its own process so the peak resident memory is that cell's
alone. Both paths use the same random config-f weights (with the zero-initialised biases and noise
strengths perturbed, so every op does work), the same z and the stored noise, and the script checks that
their outputs agree within the project's tolerance (max |diff| < 1e-4) before reporting a speed-up.

``--rosinality PATH`` (a checkout of rosinality/stylegan2-pytorch; nothing of it is part of this repository)
adds rosinality's own ``Generator`` as a third column. Its ``model.py`` is imported from a temporary copy in
which only ``op/``'s ``cpp_extension.load(...)`` calls are replaced by ``None`` (so its CPU code runs), the
patch of ``tools/fixtures/make_rosinality_fixture.py``; its channel table stays config-f's. The random
config-f weights are made by rosinality's model (biases and noise strengths perturbed as in that fixture),
saved as a rosinality ``.pt`` and loaded by the project's own loader (:mod:`gan_adapt.formats.rosinality`),
so all three paths run the same weights on the same z with the same stored noise buffers
(``randomize_noise=False``). Before any timing the images of the three paths are compared (relative max
difference, max |a - b| / max |b|, must be below 1e-5). The three paths then run in one process, in
alternating turns (reference, optimised, rosinality, reference, ...) so that a change of machine load falls
on all alike, and the load average at the start and the end is recorded. The results go to
``benchmarks/results/generator_speed_rosinality.json`` (no peak memory column: one process).
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
    return _step(g, z, mode)


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


# ---- side by side with rosinality's own model ------------------------------------------------------------

def import_rosinality(repo: str):
    """rosinality's ``model`` module from a checkout, its CUDA builds patched out (CPU code only).

    Uses the fixture script's :func:`patched_copy` and then puts back the unpatched ``model.py`` (the fixture
    also shrinks the channel tables; the benchmark needs config-f's), keeping only the ``op/`` patch."""
    import importlib
    import shutil
    import tempfile

    from tools.fixtures.make_rosinality_fixture import patched_copy
    tmp = tempfile.mkdtemp(prefix="rosinality_")
    patched_copy(repo, tmp)
    shutil.copy(os.path.join(repo, "model.py"), os.path.join(tmp, "model.py"))
    sys.path.insert(0, tmp)
    try:
        for name in [m for m in sys.modules if m == "model" or m == "op" or m.startswith("op.")]:
            del sys.modules[name]
        return importlib.import_module("model")
    finally:
        sys.path.remove(tmp)


def rosinality_pair(model, size: int, seed: int = 0):
    """(rosinality Generator, the project's Generator loaded from its state dict by the rosinality loader)."""
    import tempfile

    import torch
    from torch import nn

    from gan_adapt.formats import rosinality as rosinality_format
    from tools.fixtures.make_rosinality_fixture import perturb
    torch.manual_seed(seed)
    theirs = model.Generator(size, 512, 8, channel_multiplier=2)
    perturb(theirs, nn.Module())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.pt")
        torch.save({"g_ema": theirs.state_dict()}, path)
        ours = rosinality_format.load(path).g_ema
    return theirs, ours


def _rel_diff(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def side_by_side(repo: str, sizes, batches, modes, repeats: int, threads: int, out_json: str,
                 tolerance: float = 1e-5) -> int:
    """Reference, optimised and rosinality's own generator in one process, alternating turns."""
    import copy

    import torch
    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    model = import_rosinality(repo)
    rows = []
    paths = ("reference", "optimised", "rosinality")
    header = (f"{'size':>5} {'batch':>5} {'mode':>8} | {'reference s':>11} {'optimised s':>11} {'rosinality s':>12} | "
              f"{'vs ros':>7} {'vs ref':>7} | {'rel diff ros':>12} {'rel diff ref':>12}")
    print(f"generator_speed --rosinality: config-f, {threads} threads, one process, load {load_start}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        theirs, ours = rosinality_pair(model, size)
        gens = {"reference": copy.deepcopy(ours).set_impl("ref"), "optimised": ours.set_impl("auto"),
                "rosinality": theirs}
        for batch in batches:
            z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(123))
            with torch.no_grad():
                imgs = {k: g.eval()([z], randomize_noise=False)[0] for k, g in gens.items()}
            diffs = {k: _rel_diff(imgs[k], imgs["rosinality"]) for k in ("reference", "optimised")}
            diff_opt_ref = _rel_diff(imgs["optimised"], imgs["reference"])
            if max(diffs.values()) >= tolerance:
                print(f"images differ at {size} px batch {batch}: {diffs} (tolerance {tolerance})", file=sys.stderr)
                return 1
            for mode in modes:
                steps = {k: _step(g, z, mode) for k, g in gens.items()}
                grad_diff = None
                if mode == "fwd+bwd":  # the gradients too: of every parameter, relative to rosinality's
                    grads = {}
                    for k, g in gens.items():
                        steps[k]()
                        grads[k] = {n: p.grad.clone() for n, p in g.named_parameters()}
                    grad_diff = {k: max(_rel_diff(grads[k][n], grads["rosinality"][n]) for n in grads[k]
                                        if grads["rosinality"][n].abs().max() > 0)
                                 for k in ("reference", "optimised")}
                for k in paths:  # warm-up
                    steps[k]()
                times, med = alternating_times(steps, repeats)
                row = {"size": size, "batch": batch, "mode": mode,
                       **{k: {"median_s": med[k], "min_s": min(times[k]), "times_s": times[k]} for k in paths},
                       "speedup_vs_rosinality": med["rosinality"] / med["optimised"],
                       "speedup_vs_reference": med["reference"] / med["optimised"],
                       "reference_vs_rosinality": med["rosinality"] / med["reference"],
                       "image_rel_diff_to_rosinality": diffs, "image_rel_diff_optimised_to_reference": diff_opt_ref,
                       "grad_rel_diff_to_rosinality": grad_diff}
                rows.append(row)
                print(f"{size:>5} {batch:>5} {mode:>8} | {med['reference']:>11.3f} {med['optimised']:>11.3f} "
                      f"{med['rosinality']:>12.3f} | {row['speedup_vs_rosinality']:>6.2f}x "
                      f"{row['speedup_vs_reference']:>6.2f}x | {diffs['optimised']:>12.1e} {diff_opt_ref:>12.1e}",
                      flush=True)
                for g in gens.values():
                    g.zero_grad(set_to_none=True)
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    with open(out_json, "w") as f:
        json.dump({"threads": threads, "machine": platform.machine(), "processor": platform.processor(),
                   "python": platform.python_version(), "torch": torch.__version__, "repeats": repeats,
                   "rosinality_revision": _revision(repo), "tolerance_rel": tolerance,
                   "load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()),
                   "rows": rows}, f, indent=2)
    print(f"wrote {out_json}")
    return 0


def alternating_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Each function of ``fns`` timed ``repeats`` times in alternating turns (A, B, A, B ...), so a change in the
    machine's load hits all of them alike: (times in seconds, medians) by name."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times, {k: statistics.median(v) for k, v in times.items()}


def _revision(repo: str) -> str:
    r = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def _step(g, z, mode):
    """The step a cell times: a forward (``mode="fwd"``, eval, no gradients) or forward + backward of a scalar loss
    (train mode, gradients on); it sets the generator up for the mode and returns the images."""
    import torch
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/generator_speed.json")
    ap.add_argument("--rosinality", metavar="PATH",
                    help="checkout of rosinality/stylegan2-pytorch: time its Generator side by side in one process")
    ap.add_argument("--_cell", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rosinality:
        out = args.json
        if out == ap.get_default("json"):
            out = "benchmarks/results/generator_speed_rosinality.json"
        return side_by_side(args.rosinality, args.sizes, args.batches, args.modes, args.repeats, args.threads, out)

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
