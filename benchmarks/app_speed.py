"""How long the app takes to re-render the Mix grid when a slider moves (the callback behind it, not the browser).

    python -m benchmarks.app_speed [--ckpt G] [--seeds 0-3] [--repeats 10] [--json out.json]

Uses the bundled generator when it is there (else a randomly initialised one of the same 64 px architecture) and two
random directions of the full StyleSpace, and times ``app.mix_render`` for a 4-image grid with the weights changing
between calls, as when a slider moves. Target: well under a second on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_json


def main(argv=None) -> int:
    import torch

    import app
    from gan_adapt.directions import Direction
    from gan_adapt.formats import StyleGANCheckpoint, load_generator, save_checkpoint
    from gan_adapt.networks import Generator, GeneratorConfig
    from gan_adapt.parameterizations import Parameterization

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(app.BUNDLED_G))
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/app_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="app_speed_"))
    ckpt = args.ckpt
    if not Path(ckpt).exists():
        g = Generator(config=GeneratorConfig(size=64, style_dim=128, n_mlp=4, channel_base=2048, channel_max=64))
        g.set_latent_avg(g.mean_latent(1024, seed=0))
        ckpt = str(save_checkpoint(StyleGANCheckpoint(g_ema=g.eval()), tmp / "g.safetensors"))
    g = load_generator(ckpt)
    for i in range(2):
        p = Parameterization("stylespace", g)
        with torch.no_grad():
            for q in p.trainable_parameters():
                q.copy_(0.3 * torch.randn(q.shape, generator=torch.Generator().manual_seed(i)))
        Direction.from_parameterization(p, domain=f"d{i}").save_pretrained(tmp / f"d{i}.safetensors")
    lib = app.Library([tmp])
    app.mix_render(ckpt, lib, ["d0", "d1"], [0.1, 0.1], args.seeds, 0.7)  # warm-up (loads and caches)
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        app.mix_render(ckpt, lib, ["d0", "d1"], [0.05 * r, -0.03 * r], args.seeds, 0.7)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n = len(app._seeds(args.seeds))
    print(f"app_speed: Mix grid of {n} images at {g.size} px ({Path(ckpt).name}), 2 directions, {args.threads} threads")
    print(f"re-render after a slider move: median {med * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"over {args.repeats} moves")
    write_json(args.json, {"ckpt": Path(ckpt).name, "size": g.size, "images": n, "threads": args.threads,
                           "median_s": med, "max_s": max(times), "machine": platform.machine()})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
