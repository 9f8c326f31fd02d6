"""Model card of the bundled SynthFaces StyleGAN2: measured, not written by hand.

    python -m tools.stylegan2_model_card --ckpt checkpoints/synthfaces_stylegan2.safetensors \
        --runs runs/pretrain_distill runs/pretrain_adv --out checkpoints/synthfaces_stylegan2.md

Reports, against held-out real SynthFaces "photo" faces:
- FID / KID in the bundled small CLIP's image-feature space (``features="clip"``; Inception weights are not
  available offline), with the real-vs-real floor (two disjoint real sets of the same size) for scale;
- the renderer fidelity: mean |G(z) − render(params(z))| for held-out z (how much of the renderer's latent
  space the generator kept from distillation);
- the smoothness of the latent space: along z-interpolations, the largest step between consecutive frames
  relative to the mean step (1 = perfectly even; a jump between two faces shows as a large ratio);
- training commands and wall times read from the run folders' checkpoints and configs;
and writes a sample grid and an interpolation strip under ``docs/``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def renderer_fidelity(g, n: int = 256, seed: int = 1234) -> float:
    from gan_adapt.training.engine import synthfaces_targets
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, g.style_dim, generator=gen)
    with torch.no_grad():
        out = torch.cat([g.generate(z[i:i + 64]) for i in range(0, n, 64)])
    return float((out - synthfaces_targets(z, "photo", g.size)).abs().mean())


def phase_two(run: str | None) -> str:
    """The card's line for the second run, from its saved config (a frozen generator trains only D)."""
    if run is None:
        return ""
    from omegaconf import OmegaConf
    tr = OmegaConf.load(Path(run) / "config.yaml").training
    if float(tr.lr_g) == 0:
        return ("2. **The discriminator**, trained against the frozen distilled generator (non-saturating loss, lazy "
                "R1): the start of few-shot training. The generator is phase 1's EMA generator unchanged: adversarial "
                "fine-tuning of it (a trial of 1,500 steps at lr 0.0005 with the distillation term kept) put a grainy "
                "texture on every face within 750 steps and sharpened nothing at this size.")
    return ("2. **Adversarial fine-tuning** with the distillation term kept: non-saturating loss, lazy R1, path-length "
            "regularisation, style mixing, EMA. It trains the discriminator.")


def interpolation(g, rows: int = 6, steps: int = 10, seed: int = 99) -> tuple[torch.Tensor, float]:
    """Frames [rows * steps, 3, H, W] along slerp-free linear z paths, and the max/mean step ratio."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(rows, g.style_dim, generator=gen), torch.randn(rows, g.style_dim, generator=gen)
    ts = torch.linspace(0, 1, steps)
    with torch.no_grad():
        frames = torch.stack([g.generate(torch.lerp(a, b, float(t))) for t in ts], 1)  # [rows, steps, 3, H, W]
    step = (frames[:, 1:] - frames[:, :-1]).abs().mean([2, 3, 4])  # [rows, steps - 1]
    ratio = float((step.max(1).values / step.mean(1)).mean())
    return frames.reshape(rows * steps, *frames.shape[2:]), ratio


def main(argv=None) -> int:
    from adapt_common.image_io import save_grid
    from adapt_common.metrics.evaluate import evaluate, gan_sampler, real_vs_real_fid
    from adapt_common.metrics.features import feature_extractor
    from adapt_common.clip_models import load_clip
    from adapt_common import synthfaces as sf
    from gan_adapt.formats import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--runs", nargs="*", default=[], help="the run folders that trained it, in order")
    ap.add_argument("--commands", nargs="*", default=[], help="the command of each run (same order)")
    ap.add_argument("--notes", nargs="*", default=[], help="lines for the card's training section (e.g. pauses)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    ck = load_checkpoint(args.ckpt)
    g = ck.g_ema.eval()
    t0 = time.time()
    make_batch, sample = gan_sampler(g)
    report = evaluate(sample, "photo", make_batch=make_batch, n=args.n, features="clip",
                      out_dir=Path(args.docs) / "synthfaces_stylegan2_eval", quiet=True)
    clip = load_clip("synthfaces")
    extractor = feature_extractor("clip", clip)
    floor = real_vs_real_fid("photo", args.n, g.size, extractor)
    fidelity = renderer_fidelity(g)
    frames, ratio = interpolation(g)
    docs = Path(args.docs)
    with torch.no_grad():
        z = torch.randn(32, g.style_dim, generator=torch.Generator().manual_seed(0))
        save_grid(g.generate(z), docs / "synthfaces_stylegan2_samples.png", nrow=8)
        save_grid(torch.cat([g.generate(z[:8], truncation=0.7), sf.render_domain(sf.split_params("eval", 8), "photo",
                                                                                  size=g.size)]),
                  docs / "synthfaces_stylegan2_vs_real.png", nrow=8)
    save_grid(frames, docs / "synthfaces_stylegan2_interpolation.png", nrow=10)
    from adapt_common.loop import run_facts
    runs = [run_facts(r) for r in args.runs]
    n_g = sum(p.numel() for p in g.parameters())
    n_d = sum(p.numel() for p in ck.d.parameters()) if ck.d is not None else 0
    facts = {"fid_clip": report["fid"], "kid_clip": report["kid"], "fid_floor_real_vs_real": floor,
             "clip_domain_accuracy": (report.get("domain_accuracy") or {}).get("accuracy"),
             "clip_diversity": report["clip_diversity"], "renderer_l1": fidelity, "interp_max_over_mean_step": ratio,
             "n": args.n, "generator_parameters": n_g, "discriminator_parameters": n_d,
             "architecture": g.config.to_dict(), "runs": runs,
             "eval_seconds": round(time.time() - t0, 1)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(facts, indent=2, default=str))

    cfg = g.config
    total_min = sum(r["wall_time_min"] for r in runs)
    phases = " then ".join(f"{r['steps']:,} steps ({r['run']})" for r in runs)
    lines = [
        "# SynthFaces StyleGAN2 (`synthfaces_stylegan2.safetensors`)", "",
        "The bundled source generator: a StyleGAN2 (rosinality layout, config-f skip architecture) trained on "
        "SynthFaces \"photo\", with its discriminator (the starting point of few-shot training). Loads like any "
        "checkpoint: `gan_adapt.formats.load_checkpoint(path)` (`.g_ema`, `.d`); `python -m gan_adapt convert` writes "
        "it as a rosinality `.pt`.", "",
        "| | |", "|---|---|",
        f"| architecture | {cfg.size} px, style_dim {cfg.style_dim}, {cfg.n_mlp}-layer mapping, channel_base "
        f"{cfg.channel_base}, channel_max {cfg.channel_max} (channels {dict(sorted(cfg.channels.items()))}) |",
        f"| parameters | G {n_g:,}, D {n_d:,} |",
        f"| StyleSpace | {g.style_dims(False):,} conv style channels (a StyleDomain direction), "
        f"{g.style_dims(True):,} with toRGB |",
        f"| training | {phases}; {total_min:.0f} min in all on a 2-core CPU |", "",
        "## How it was trained", "",
        "1. **Distillation of the renderer** (supervised, no discriminator): the first 32 coordinates of the "
        "pixel-normalised z, through the normal CDF, are the SynthFaces face parameters; G(z) is pulled towards "
        "the rendered face with an L1 loss. This puts the world's faces into G in far fewer CPU steps than "
        "adversarial training from scratch, and makes z a known coordinate system of the faces.",
        phase_two(args.runs[1] if len(args.runs) > 1 else None), "",
    ]
    for r, cmd in zip(runs, args.commands or [""] * len(runs)):
        lines += [f"`{cmd}`" if cmd else f"run `{r['run']}`", f": {r['steps']:,} steps, {r['wall_time_min']} min", ""]
    lines += [f"- {note}" for note in args.notes] + ([""] if args.notes else [])
    kid = report["kid"]
    counts = (report.get("domain_accuracy") or {}).get("counts") or {}
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    judged = ", ".join(f"{name} {c / max(1, sum(counts.values())):.0%}" for name, c in top if c)
    lines += [
        "## Measured", "",
        f"Against {args.n} held-out real SynthFaces photo faces (eval stream), features of the bundled small "
        "CLIP's image tower (so these FIDs are not comparable to Inception FIDs):", "",
        "| metric | value |", "|---|---|",
        f"| FID (CLIP features) | **{report['fid']:.2f}** |",
        f"| FID floor: real vs real (another {args.n} real faces) | {floor:.2f} |",
        f"| KID (CLIP features) | {kid['mean']:.4f} ± {kid['std']:.4f} |",
        f"| CLIP zero-shot domain accuracy (classified as photo among 18 domains) | "
        f"{facts['clip_domain_accuracy']:.3f} |",
        f"| CLIP diversity (mean 1 − cos between samples) | {report['clip_diversity']:.4f} |",
        f"| renderer fidelity: mean \\|G(z) − render(z)\\| (pixel range [-1, 1]) | {fidelity:.4f} |",
        f"| interpolation: largest step / mean step along z paths (1 = even) | {ratio:.2f} |",
        f"| what the small CLIP calls the samples (zero-shot, 18 domains) | {judged} |", "",
        "## Limits", "",
        "The generator is a smoothed copy of the renderer: the mean pixel error above is its distance from the "
        "renderer's own face for the same z, and the side-by-side picture shows what it loses (fine parts: eyes, "
        "glasses frames, hat bands and hair strands come out soft or missing). Where the small CLIP calls most "
        "samples `blurry` (a distractor domain it was trained to tell apart), that is this softness, not noise. "
        "Ground-truth metrics of adaptation compare G_t(w) with T(G_s(w)), the transform of this generator's own "
        "image, so they are unaffected; FIDs against real SynthFaces images carry the softness as a floor.", "",
        "Samples (seeds 0-31, truncation 1): `docs/synthfaces_stylegan2_samples.png`; generated (truncation 0.7, "
        "top) over real faces (bottom): `docs/synthfaces_stylegan2_vs_real.png`; interpolations (rows are z "
        "paths): `docs/synthfaces_stylegan2_interpolation.png`.", "",
        "![samples](../docs/synthfaces_stylegan2_samples.png)", "",
        "![interpolation](../docs/synthfaces_stylegan2_interpolation.png)", "",
        "Measured by `python -m tools.stylegan2_model_card` (this file is its output; numbers also in "
        "`synthfaces_stylegan2.json`).", "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[-22:-8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
