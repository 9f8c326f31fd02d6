"""Model card of the bundled SynthFaces DDPM: measured, not written by hand.

    python -m tools.ddpm_model_card --model checkpoints/synthfaces_ddpm --run runs/ddpm_pretrain \
        --out checkpoints/synthfaces_ddpm.md

FID / KID in the bundled small CLIP's feature space against held-out real SynthFaces photos for DDIM with 50 and
25 steps, the real-vs-real floor for scale, the training command's steps and wall time from the run folder, and
sample grids under ``docs/``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    from adapt_common import synthfaces as sf
    from adapt_common.clip_models import load_clip
    from adapt_common.image_io import save_grid
    from adapt_common.metrics.domain import domain_accuracy
    from adapt_common.metrics.evaluate import evaluate, real_vs_real_fid
    from adapt_common.metrics.features import feature_extractor
    from adapt_common.loop import run_facts
    from diffusion_adapt.models import load_model
    from diffusion_adapt.sampling import ddim_sample, noise_from_seeds

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", help="the run folder that trained it")
    ap.add_argument("--command", default="python -m diffusion_adapt train --config configs/ddpm_pretrain_synthfaces.yaml")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    unet, sched = load_model(args.model)
    size = unet.config.sample_size
    extractor = feature_extractor("clip", load_clip("synthfaces"))
    floor = real_vs_real_fid("photo", args.n, size, extractor)
    results = {}
    for steps in (50, 25):
        report = evaluate(lambda noise, s=steps: ddim_sample(unet, sched, noise, s), "photo",
                          make_batch=lambda seeds: noise_from_seeds(seeds, (3, size, size)), n=args.n,
                          features="clip", out_dir=Path(args.docs) / f"synthfaces_ddpm_eval_{steps}", quiet=True)
        results[steps] = report
    # The small CLIP sees 64 px: upsampled 32 px images look blurry to it, real ones too. Compare with real faces
    # at the model's size, with and without the "blurry" candidate.
    clip = load_clip("synthfaces")
    names = list(sf.DOMAINS)
    real, _ = sf.eval_set("photo", 256, size=size)
    with torch.no_grad():
        fresh = ddim_sample(unet, sched, noise_from_seeds(range(10_000, 10_256), (3, size, size)), 25)

    def photo_rate(images, drop=()):
        keep = [n for n in names if n not in drop]
        return domain_accuracy(clip, images, keep, [sf.domain_prompt(n) for n in keep], target="photo")["accuracy"]
    same_size = {"real": [photo_rate(real), photo_rate(real, ("blurry",))],
                 "ddim25": [photo_rate(fresh), photo_rate(fresh, ("blurry",))]}
    with torch.no_grad():
        grid = ddim_sample(unet, sched, noise_from_seeds(range(32), (3, size, size)), 50)
    save_grid(grid, Path(args.docs) / "synthfaces_ddpm_samples.png", nrow=8)
    run = run_facts(args.run) if args.run else None
    n_params = sum(p.numel() for p in unet.parameters())
    facts = {"fid_clip": {s: r["fid"] for s, r in results.items()}, "kid_clip": {s: r["kid"] for s, r in results.items()},
             "domain_accuracy": {s: (r.get("domain_accuracy") or {}).get("accuracy") for s, r in results.items()},
             "photo_rate_at_model_size": same_size,  # [all candidates, without "blurry"], 256 images each
             "fid_floor_real_vs_real": floor, "n": args.n, "parameters": n_params, "run": run,
             "unet_config": dict(unet.config)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(facts, indent=2, default=str))
    c = unet.config
    lines = [
        "# SynthFaces DDPM (`synthfaces_ddpm/`)", "",
        "The bundled unconditional diffusion model: a `diffusers` `UNet2DModel` trained from scratch on SynthFaces "
        "\"photo\" (ε-prediction, linear β schedule, 1000 steps). A `DDPMPipeline` folder: "
        "`DDPMPipeline.from_pretrained(\"checkpoints/synthfaces_ddpm\")` or `diffusion_adapt.models.load_model`.", "",
        "| | |", "|---|---|",
        f"| architecture | {c.sample_size} px, channels {list(c.block_out_channels)}, {c.layers_per_block} layers per "
        f"block, {list(c.down_block_types)} |",
        f"| parameters | {n_params:,} |",
        f"| training | {run['steps']:,} steps of batch 16, {run['wall_time_min']} min on a 2-core CPU |" if run else
        "| training | (run folder not given) |",
        f"| command | `{args.command}` |", "",
        "## Measured", "",
        f"Against {args.n} held-out real SynthFaces photos, features of the bundled small CLIP (not comparable to "
        "Inception FIDs):", "",
        "| sampler | FID (CLIP) | KID | classified as photo |", "|---|---|---|---|",
    ]
    for s, r in results.items():
        acc = (r.get("domain_accuracy") or {}).get("accuracy")
        lines.append(f"| DDIM {s} steps | {r['fid']:.2f} | {r['kid']['mean']:.4f} | "
                     f"{'n/a' if acc is None else f'{acc:.3f}'} |")
    lines += [f"| real vs real (floor) | {floor:.2f} | | |", "",
              f"The small CLIP works at 64 px, so it calls many upsampled {size} px images blurry, real ones included. "
              f"At the model's size (256 images each):", "",
              "| images | classified as photo | without the \"blurry\" candidate |", "|---|---|---|",
              f"| real SynthFaces photos at {size} px | {same_size['real'][0]:.3f} | {same_size['real'][1]:.3f} |",
              f"| DDIM 25-step samples | {same_size['ddim25'][0]:.3f} | {same_size['ddim25'][1]:.3f} |", "",
              "![samples](../docs/synthfaces_ddpm_samples.png)", "",
              "Measured by `python -m tools.ddpm_model_card` (this file is its output).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[-10:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
