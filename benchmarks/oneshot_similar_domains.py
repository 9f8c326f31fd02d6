"""One-shot adaptation to SynthFaces similar domains, judged by ground truth: StyleDomain directions against
full fine-tuning and the other baselines (StyleDomain's central claim: a 6k-number direction gets close to
full fine-tuning on similar domains).

    python -m benchmarks.oneshot_similar_domains [--domains sketch sepia ...] [--names direction full ...]
        [--guidance image|text] [--iters 300] [--n 256] [--json benchmarks/results/oneshot_similar_domains.json]

Each cell trains `configs/oneshot_sketch_image.yaml`'s recipe (one reference image, or the domain's prompt with
``--guidance text``) with one parameterization on one domain, then reports the ground-truth domain error
(mean |G_t(w) − T(G_s(w))| on the 0..1 pixel scale, with the identity baseline and the gap closed), the CLIP
domain accuracy, the trainable-parameter count and the wall time. Learning rates follow the papers' configs:
0.08 for Δs, 0.02 for the domain modulation, 0.002 with betas (0, 0.999) for weight-space baselines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

LR = {"direction": (0.08, [0.9, 0.999]), "stylespace": (0.08, [0.9, 0.999]), "dommod": (0.02, [0.9, 0.999]),
      "full": (0.002, [0.0, 0.999]), "affine_plus": (0.002, [0.0, 0.999]), "affine": (0.002, [0.0, 0.999])}


def run_cell(domain: str, name: str, guidance: str, iters: int, n: int, ckpt: str, threads: int) -> dict:
    from adapt_common import synthfaces as sf
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    lr, betas = LR[name]
    target = [f"target.image=synthfaces:{domain}"] if guidance == "image" else [f"target.text={sf.domain_prompt(domain)}"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(OneShotConfig, ["configs/oneshot_sketch_image.yaml"], [
            "target.image=''", *target, f"target.domain={domain}", f"generator_args.ckpt={ckpt}",
            f"exp.run_dir={tmp}", f"exp.threads={threads}", f"training.parameterization={name}",
            f"training.iters={iters}", f"training.lr={lr}", f"training.betas=[{betas[0]},{betas[1]}]",
            f"evaluation.n={n}", "logging.sample_every=100000", "logging.checkpoint_every=100000"])
        t0 = time.time()
        tr = ClipTrainer(cfg, quiet=True)
        tr.fit()
        wall = time.time() - t0
        report = json.loads((Path(tmp) / "eval" / "report.json").read_text())
    de = report["domain_error"]
    return {"domain": domain, "parameterization": name, "guidance": guidance, "trainable": tr.param.num_trainable(),
            "wall_s": round(wall, 1), "domain_l1": de["pixel_l1"], "identity_l1": de["identity_baseline"]["pixel_l1"],
            "gap_closed": de["gap_closed"]["pixel_l1"], "clip_accuracy": (report.get("domain_accuracy") or {}).get(
                "accuracy"), "fid": report["fid"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", nargs="+", default=["sketch", "sepia", "negative", "popart", "pixelart"])
    ap.add_argument("--names", nargs="+", default=["direction", "dommod", "stylespace", "affine_plus", "full"],
                    choices=sorted(LR))
    ap.add_argument("--guidance", default="image", choices=["image", "text"])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ckpt", default="checkpoints/synthfaces_stylegan2.safetensors")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/oneshot_similar_domains.json")
    args = ap.parse_args(argv)
    rows = []
    header = (f"{'domain':>9} {'parameterization':>17} | {'trainable':>10} {'wall s':>7} | {'L1 vs T(src)':>12} "
              f"{'identity':>8} {'gap closed':>10} | {'CLIP acc':>8}")
    print(f"oneshot_similar_domains: {args.guidance}-guided, {args.iters} iterations, n={args.n}, {args.threads} threads")
    print(header)
    print("-" * len(header))
    for domain in args.domains:
        for name in args.names:
            r = run_cell(domain, name, args.guidance, args.iters, args.n, args.ckpt, args.threads)
            rows.append(r)
            acc = "n/a" if r["clip_accuracy"] is None else f"{r['clip_accuracy']:.2f}"
            print(f"{domain:>9} {name:>17} | {r['trainable']:>10,} {r['wall_s']:>7.0f} | {r['domain_l1']:>12.4f} "
                  f"{r['identity_l1']:>8.4f} {r['gap_closed']:>10.3f} | {acc:>8}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"guidance": args.guidance, "iters": args.iters, "n": args.n,
                                           "threads": args.threads, "machine": platform.machine(), "rows": rows},
                                          indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
