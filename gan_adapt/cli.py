"""Command line: ``python -m gan_adapt <command> ...`` (run with ``--help`` for each command)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _threads(n: int | None) -> None:
    import torch
    if n:
        torch.set_num_threads(n)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan``/``inf`` render black images or loop forever, never what is meant)."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give an ordinary value such as 0.7")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (thread counts, sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number >= 1")
    return value


def _evaluation_failed(error: str, written) -> int:
    print(f"error: the evaluation after training failed ({error}); {written} is written, only the report is "
          "missing (for a SynthFaces domain: `python -m gan_adapt evaluate --ckpt BASE --direction/--adapter FILE "
          "--domain NAME`)", file=sys.stderr)
    return 1


def cmd_generate(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from adapt_common.image_io import save_grid, save_image
    from .formats import load_generator
    from .seeds import parse_seeds, z_from_seeds

    _threads(args.threads)
    seeds = parse_seeds(args.seeds)
    g = load_generator(args.ckpt, device=args.device)
    edit = None
    if args.direction:
        from .directions import Direction, DomainEdit, parse_direction_arg
        pairs = [parse_direction_arg(text) for text in args.direction]
        edit = DomainEdit(g, [(Direction.from_pretrained(path), weight) for path, weight in pairs])
        print("directions: " + ", ".join(f"{path} x {weight:g}" for path, weight in pairs))
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    raw = []
    with torch.no_grad():
        for i in tqdm(range(0, len(seeds), args.batch), desc="generate", unit="batch",
                      disable=not sys.stderr.isatty()):
            batch = seeds[i:i + args.batch]
            z = z_from_seeds(batch, g.style_dim).to(args.device)
            if edit is None:
                img = g.generate(z, truncation=args.truncation, noise_mode=args.noise_mode)
            else:
                img = edit.generate(z, truncation=args.truncation, noise_mode=args.noise_mode)
            raw.append(img.float().cpu())
            for seed, im in zip(batch, img):
                save_image(im, outdir / f"seed{seed:04d}.png")
    images = torch.cat(raw)
    save_grid(images, outdir / "grid.png")
    if args.save_raw:
        Path(args.save_raw).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_raw, images.numpy().astype(np.float32))
    print(f"wrote {len(seeds)} images and grid.png to {outdir}" + (f"; raw output to {args.save_raw}"
                                                                     if args.save_raw else ""))
    return 0


def cmd_convert(args) -> int:
    from .formats import convert
    ckpt = convert(args.src, args.dst, args.format)
    parts = ["g_ema"] + [n for n in ("g", "d") if getattr(ckpt, n) is not None]
    print(f"converted {args.src} ({ckpt.source_format}) -> {args.dst}: {', '.join(parts)}")
    return 0


def cmd_info(args) -> int:
    from .formats import load_checkpoint
    ckpt = load_checkpoint(args.ckpt)
    g = ckpt.g_ema
    info = {
        "file": str(args.ckpt),
        "format": ckpt.source_format,
        "generator": g.config.to_dict(),
        "generator_parameters": sum(p.numel() for p in g.parameters()),
        "n_latent": g.n_latent,
        "stylespace_conv": g.style_dims(include_torgb=False),
        "stylespace_with_torgb": g.style_dims(include_torgb=True),
        "has_training_generator": ckpt.g is not None,
        "discriminator": ckpt.d.config.to_dict() if ckpt.d is not None else None,
        "meta": ckpt.meta,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_init(args) -> int:
    import torch

    from .formats import StyleGANCheckpoint, save_checkpoint
    from .networks import Discriminator, Generator, GeneratorConfig
    torch.manual_seed(args.seed)
    cfg = GeneratorConfig(size=args.size, style_dim=args.style_dim, n_mlp=args.n_mlp,
                          channel_base=args.channel_base, channel_max=args.channel_max)
    g = Generator(config=cfg)
    g.set_latent_avg(g.mean_latent(4096, seed=args.seed))
    d = Discriminator(args.size, channel_base=args.channel_base, channel_max=args.channel_max) if args.with_d else None
    save_checkpoint(StyleGANCheckpoint(g_ema=g.eval(), d=d, meta={"init_seed": args.seed}), args.out)
    print(f"wrote a randomly initialised {args.size}px generator to {args.out}")
    return 0


def _adapted(g, adapter: str | None, directions: list[str]):
    """``g`` with an adapter file merged in and/or direction files (``FILE[:W]``) applied: something with
    ``generate(z, truncation=, noise_mode=)``."""
    adapted = g
    if adapter:
        from .adapter_files import Adapter
        adapted = Adapter.from_pretrained(adapter).parameterization(g).merged_generator()
    if directions:
        from .directions import Direction, DomainEdit, parse_direction_arg
        pairs = [parse_direction_arg(text) for text in directions]
        adapted = DomainEdit(adapted, [(Direction.from_pretrained(path), weight) for path, weight in pairs])
    return adapted


def cmd_evaluate(args) -> int:
    """Metrics of a generator on a SynthFaces domain (adapt_common.metrics.evaluate): the checkpoint itself, or the
    checkpoint with --adapter and/or --direction FILE[:W]. The source generator (the domain error is against
    T(source) of the same latents) defaults to the checkpoint as it is: with no adapter or direction that is the
    unadapted case, whose domain error is the identity baseline (gap closed 0); pass --source-ckpt when --ckpt is
    itself an adapted generator."""
    from adapt_common.metrics.evaluate import TEST_START, evaluate, gan_sampler, summary_lines
    from .formats import load_generator

    start = TEST_START if args.split == "test" else 0
    seed = start if args.seed is None else args.seed
    _threads(args.threads)
    g = load_generator(args.ckpt, device=args.device)
    make_batch, _ = gan_sampler(g)
    target = _adapted(g, args.adapter, args.direction)

    def sample_target(z):
        return target.generate(z, truncation=args.truncation, noise_mode=args.noise_mode)
    source_ckpt = args.source_ckpt or args.ckpt
    gs = g if source_ckpt == args.ckpt else load_generator(source_ckpt, device=args.device)
    _, sample_source = gan_sampler(gs, truncation=args.truncation, noise_mode=args.noise_mode)
    adapted = bool(args.adapter or args.direction)
    report = evaluate(sample_target, args.domain, sample_source=sample_source, make_batch=make_batch, n=args.n,
                      batch=args.batch, clip=args.clip, features=args.features, out_dir=args.out, seed=seed,
                      eval_offset=start, n_eval=args.n_eval,
                      settings={"split": args.split, "ckpt": str(args.ckpt), "adapter": args.adapter,
                                "directions": list(args.direction), "source_ckpt": str(source_ckpt),
                                "source_is_target": source_ckpt == args.ckpt and not adapted,
                                "truncation": args.truncation, "noise_mode": args.noise_mode})
    for line in summary_lines(report):
        print(line)
    print(f"wrote {report['files']['report']} and {report['files']['samples']}")
    return 0


TRAIN = "python -m gan_adapt train"


def trainer_kind(files: list[str], overrides: list[str]) -> str:
    """Which trainer a config is for: its ``exp.trainer`` (the last one given wins; default adversarial)."""
    from adapt_common.trainers import trainer_for
    return trainer_for(files, overrides, TRAIN).name


def cmd_train(args) -> int:
    """Any registered trainer (adapt_common.trainers), picked by the config's exp.trainer."""
    from adapt_common.config import load_config
    from adapt_common.trainers import trainer_for
    spec = trainer_for(args.config, args.overrides, TRAIN)
    if args.export_generator and spec.export("generator") is None:
        raise ValueError(f"--export-generator: a {spec.name} run has no generator to write; its run folder gets "
                         f"{spec.results}")
    cfg = load_config(spec.config_class(), args.config, args.overrides)
    trainer = spec.train_function()(cfg, resume=args.resume)
    if args.export_generator and trainer.rank == 0:
        trainer.export_generator(args.export_generator)
        print(f"wrote the adapted generator (merged) to {args.export_generator}")
    error = getattr(trainer, "evaluation_error", None)
    return _evaluation_failed(error, trainer.result) if error else 0


def cmd_direction(args) -> int:
    """Inspect, sparsify, mix or import direction files."""
    from .directions import Direction, mix, parse_direction_arg
    if args.action == "info":
        for path in args.files:
            d = Direction.from_pretrained(path)
            info = {"file": path, "kind": d.kind, "size": d.size, "nonzero": int((d.delta != 0).sum()),
                    "norm": round(float(d.delta.norm()), 6), "layers": [f"{n}:{c}" for n, c in d.layers],
                    **{k: v for k, v in d.meta.items() if k in ("domain", "prompt", "reference_hash", "base_generator",
                                                              "imported_from", "sparse_keep", "mixed")}}
            print(json.dumps(info, indent=2, default=str))
        return 0
    if not args.out:
        raise ValueError(f"direction {args.action} needs --out FILE.safetensors")
    if args.action == "sparse":
        (src,) = args.files if len(args.files) == 1 else (None,)
        if src is None:
            raise ValueError("direction sparse takes one file")
        d = Direction.from_pretrained(src).sparse(args.keep)
    elif args.action == "mix":
        pairs = [parse_direction_arg(text) for text in args.files]
        d = mix([Direction.from_pretrained(p) for p, _ in pairs], [w for _, w in pairs])
    else:  # import: an official .pt (or any readable direction) rewritten in our format
        if len(args.files) != 1:
            raise ValueError("direction import takes one file")
        d = Direction.from_pretrained(args.files[0])
    out = d.save_pretrained(args.out)
    print(f"wrote {out}: {d.kind}, {int((d.delta != 0).sum())} of {d.size} values set")
    return 0


def _keyframes(specs: list[str], default_ckpt: str | None, device: str, carry: bool = True):
    """``--key`` / ``--row`` specs -> keyframes. A spec is a comma-separated list of items: ``g=CKPT`` (a
    generator; it stays the checkpoint of later specs), ``a=ADAPTER`` (a few-shot adapter merged into the spec's
    checkpoint: its own ``g=``, else the last one or ``--ckpt``; never on top of another adapter) and
    ``DIR[:W]`` (a direction). A spec naming no generator uses the previous spec's (``carry``: morph keys, so a
    direction can be swapped "there") or the checkpoint (``carry=False``: independent compare rows)."""
    from .adapter_files import Adapter
    from .directions import Direction, parse_direction_arg
    from .formats import load_generator
    from .morphing import Keyframe
    cache: dict = {}

    def generator(path):
        if path not in cache:
            cache[path] = load_generator(path, device=device)
        return cache[path]

    def adapted(path, base):
        if (path, id(base)) not in cache:
            cache[(path, id(base))] = Adapter.from_pretrained(path).parameterization(base).merged_generator()
        return cache[(path, id(base))]

    dirs: dict = {}
    ckpt = generator(default_ckpt) if default_ckpt else None
    previous = ckpt
    keys = []
    for spec in specs:
        items, named, adapter = [], None, None
        for item in filter(None, (x.strip() for x in spec.split(","))):
            if item.startswith("g="):
                named = ckpt = generator(item[2:])
            elif item.startswith("a="):
                adapter = item[2:]
            else:
                path, weight = parse_direction_arg(item)
                if path not in dirs:
                    dirs[path] = Direction.from_pretrained(path)
                items.append((dirs[path], weight))
        if adapter is not None:
            if ckpt is None:
                raise ValueError(f"--key {spec!r}: an adapter needs a generator first (g=CKPT or --ckpt)")
            g = adapted(adapter, ckpt)
        else:
            g = named or (previous if carry else ckpt)
        if g is None:
            raise ValueError(f"--key {spec!r}: no generator yet; pass --ckpt or start the first key with g=CKPT")
        previous = g
        keys.append(Keyframe(g, items, spec))
    return keys


def cmd_morph(args) -> int:
    import torch

    from .morphing import morph, save_gif, save_mp4, save_strip
    from .seeds import parse_seeds, z_from_seeds
    _threads(args.threads)
    keys = _keyframes(args.key, args.ckpt, args.device)
    z = z_from_seeds(parse_seeds(args.seeds), keys[0].generator.style_dim)
    frames = morph(keys, z, args.steps, truncation=args.truncation, noise_mode=args.noise_mode)
    out = Path(args.out)
    save_strip(frames, out / "strip.png")
    save_gif(frames, out / "morph.gif", fps=args.fps)
    save_mp4(frames, out / "morph.mp4", fps=args.fps)
    torch.save(frames.half(), out / "frames.pt")
    print(f"wrote {frames.shape[0]} frames x {frames.shape[1]} samples: {out}/strip.png, morph.gif, morph.mp4")
    return 0


def cmd_hyper(args) -> int:
    """A trained hypernetwork's domain modulation for a prompt, as a direction file."""
    from adapt_common.clip_models import load_clip
    from .hypernetwork import Hypernetwork
    if len(args.prompt) != len(args.out):
        raise ValueError(f"give one --out per --prompt ({len(args.prompt)} prompts, {len(args.out)} outputs)")
    net = Hypernetwork.from_pretrained(args.hypernet)
    clip = load_clip(args.clip or net.manifest.get("clip", "ViT-B/32"))
    for prompt, out in zip(args.prompt, args.out):
        emb = clip.encode_texts([prompt])[0]
        d = net.direction(emb, prompt=prompt, domain=prompt, hypernetwork=str(args.hypernet),
                          base_generator=net.manifest.get("base_generator", {}))
        out = d.save_pretrained(out)
        print(f"wrote {out}: the domain modulation for {prompt!r} ({d.size} values)")
    return 0


def cmd_compare(args) -> int:
    """One row per model (a generator, an adapter on it, directions), the same seeds in every row."""
    import torch

    from adapt_common.image_io import save_grid
    from .directions import DomainEdit
    from .seeds import parse_seeds, z_from_seeds
    _threads(args.threads)
    keys = _keyframes(args.row, args.ckpt, args.device, carry=False)
    z = z_from_seeds(parse_seeds(args.seeds), keys[0].generator.style_dim)
    rows = []
    with torch.no_grad():
        for k in keys:
            rows.append(DomainEdit(k.generator, k.directions).generate(z, truncation=args.truncation).cpu())
    if args.real:
        from adapt_common.datasets import ImageSource
        real = ImageSource(args.real, keys[0].generator.size, quiet=True)
        images = real.images if real.images is not None else real.batch(0, len(z), 0, 1, 0)
        rows.insert(0, images[:len(z)].float())
    grid = torch.cat([r[:len(z)] for r in rows])
    save_grid(grid, args.out, nrow=len(z))
    print(f"wrote {args.out}: rows " + ", ".join((["real " + args.real] if args.real else []) +
                                                 [k.label or "(base)" for k in keys]))
    return 0


def cmd_invert(args) -> int:
    """Project an image into the generator, then show it with each direction."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from adapt_common.image_io import load_image, save_grid
    from .directions import Direction, DomainEdit, parse_direction_arg
    from .formats import load_generator
    from .inversion import invert
    _threads(args.threads)
    g = load_generator(args.ckpt, device=args.device)
    target = load_image(args.image, size=g.size)
    clip = None
    if args.clip:
        from adapt_common.clip_models import load_clip
        clip = load_clip(args.clip, args.device)
    bar = tqdm(total=args.steps, desc="invert", disable=not sys.stderr.isatty())
    result = invert(g, target, space=args.space, steps=args.steps, lr=args.lr, clip=clip,
                    callback=lambda step, loss: bar.update(1) and None)
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "latent.npy", result.w.cpu().numpy().astype(np.float32))
    row = [target.to(result.image), result.image]
    with torch.no_grad():
        for text in args.direction:
            path, weight = parse_direction_arg(text)
            row.append(DomainEdit(g, [(Direction.from_pretrained(path), weight)]).generate(w=result.w))
    save_grid(torch.cat(row).cpu(), out / "inversion.png", nrow=len(row))
    print(f"wrote {out}/latent.npy (W+ {tuple(result.w.shape)}) and inversion.png (target, reconstruction"
          f"{', then each direction' if args.direction else ''}); pixel MSE {result.mse:.4f}")
    return 0


def cmd_export(args) -> int:
    """Files from a run folder's latest checkpoint, without finishing (or re-running) the training."""
    from adapt_common.trainers import load_run, run_trainer
    run = Path(args.run_dir)
    if not (run / "config.yaml").is_file() or not (run / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run} is not a training run folder (it needs config.yaml and checkpoint.pt, "
                                "as `python -m gan_adapt train` writes them)")
    spec = run_trainer(run, TRAIN)
    wanted = {option: getattr(args, option) for option in _export_options() if getattr(args, option)}
    if not wanted:
        raise ValueError(f"nothing to export: a {spec.name} run exports with "
                         + ", ".join(f"--{_flag(e.option)} FILE" for e in spec.exports))
    refused = [option for option in wanted if spec.export(option) is None]
    if refused:
        raise ValueError(f"a {spec.name} run has no --{_flag(refused[0])} export; it exports with "
                         + ", ".join(f"--{_flag(e.option)} ({e.help})" for e in spec.exports))
    trainer = load_run(spec, run)
    for option, path in wanted.items():
        export = spec.export(option)
        getattr(trainer, export.method)(path)
        print(f"wrote {path}: the {spec.name} run's {option} at step {trainer.step}")
    return 0


def _flag(option: str) -> str:
    """An export option's command-line spelling (``analogy_net`` -> ``analogy-net``)."""
    return option.replace("_", "-")


def _export_options() -> dict[str, tuple[str, list[str]]]:
    """Each option of ``export`` -> (its help, the trainers that have it), from the trainer registry."""
    from adapt_common.trainers import trainers_of
    options: dict[str, tuple[str, list[str]]] = {}
    for spec in trainers_of(TRAIN):
        for e in spec.exports:
            options.setdefault(e.option, (e.help, []))[1].append(spec.name)
    return options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan_adapt", description="StyleGAN2 domain adaptation tools")
    p.add_argument("--no-verify-hash", action="store_true",
                   help="load files whose tensors differ from the content hash they record (files edited on "
                        "purpose; a damaged file then loads too); give it before the command")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="render images for seeds from a checkpoint")
    g.add_argument("--ckpt", required=True, help="rosinality .pt, NVIDIA .pkl or native .safetensors")
    g.add_argument("--seeds", default="0-7", help="e.g. 0-7 or 1,5,9 (NVIDIA generate.py seeding)")
    g.add_argument("--truncation", type=finite_float, default=1.0, help="psi; < 1 pulls w towards latent_avg")
    g.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    g.add_argument("--outdir", required=True)
    g.add_argument("--direction", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="apply a direction file (ours or an official StyleDomain/HyperDomainNet .pt) with a weight "
                        "(default 1; negative allowed); repeat to mix several")
    g.add_argument("--save-raw", metavar="FILE.npy", help="also save the raw float32 N x 3 x H x W output")
    g.add_argument("--batch", type=positive_int, default=4)
    g.add_argument("--device", default="cpu")
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("convert", help="convert a checkpoint between formats (.pkl/.pt/.safetensors -> .pt/.safetensors)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--format", choices=["rosinality", "native"], help="default: from the extension of dst")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="print a checkpoint's architecture and contents as JSON")
    i.add_argument("ckpt")
    i.set_defaults(func=cmd_info)

    from adapt_common.trainers import config_help, trainers_of
    kinds = ", ".join(spec.name for spec in trainers_of(TRAIN))
    t = sub.add_parser("train", help=f"training from a config; exp.trainer picks the trainer ({kinds})",
                       description="Train with any of the trainers below; `--help` lists every config key with its "
                                   "default and meaning.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_help(TRAIN))
    t.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    t.add_argument("--resume", action="store_true", help="continue the run in exp.run_dir from its checkpoint")
    merging = ", ".join(spec.name for spec in trainers_of(TRAIN) if spec.export("generator"))
    t.add_argument("--export-generator", metavar="FILE", help=f"also write the adapted generator, merged "
                                                              f"(.pt/.safetensors; {merging} runs)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.iters=500")
    t.set_defaults(func=cmd_train)

    dr = sub.add_parser("direction", help="direction files: info, sparse (keep the largest |Δ|), mix (weighted "
                                           "sum), import (official StyleDomain/HyperDomainNet .pt -> ours)")
    dr.add_argument("action", choices=["info", "sparse", "mix", "import"])
    dr.add_argument("files", nargs="+", metavar="FILE[:WEIGHT]", help="direction files (weights only for mix)")
    dr.add_argument("--out", help="output .safetensors (sparse, mix, import)")
    dr.add_argument("--keep", type=finite_float, default=0.2, help="sparse: fraction of values kept (default 0.2)")
    dr.set_defaults(func=cmd_direction)

    hy = sub.add_parser("hyper", help="a trained HyperDomainNet hypernetwork's domain for a prompt, as a "
                                      "direction file")
    hy.add_argument("hypernet", help="hypernet.safetensors from a `train` run with exp.trainer=hyper")
    hy.add_argument("--prompt", action="append", required=True, help="target text (repeat with --out)")
    hy.add_argument("--out", action="append", required=True, help="direction file for each --prompt")
    hy.add_argument("--clip", help="the CLIP that embeds the prompt (default: the one named in the file)")
    hy.set_defaults(func=cmd_hyper)

    mo = sub.add_parser("morph", help="frames between domains: direction ramps and mixes, weight morphs between "
                                      "generators; writes a strip, a GIF and an MP4",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example (the paper's combined morph):\n"
                               "  --ckpt src.safetensors --key '' --key sketch.safetensors:0.8 \\\n"
                               "  --key g=dog.safetensors,sketch.safetensors:0.8 --key popart.safetensors:0.8")
    mo.add_argument("--ckpt", help="the generator of keys that name none")
    mo.add_argument("--key", action="append", required=True,
                    help="a keyframe: comma-separated g=CKPT (generator), a=ADAPTER (few-shot adapter on the "
                         "current generator), DIR[:WEIGHT] (directions); repeat, in order")
    mo.add_argument("--seeds", default="0-3")
    mo.add_argument("--steps", type=positive_int, default=8, help="frames per segment, both keyframes included")
    mo.add_argument("--truncation", type=finite_float, default=1.0)
    mo.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    mo.add_argument("--fps", type=finite_float, default=8)
    mo.add_argument("--out", required=True, help="folder for strip.png, morph.gif, morph.mp4")
    mo.add_argument("--device", default="cpu")
    mo.add_argument("--threads", type=positive_int, default=None)
    mo.set_defaults(func=cmd_morph)

    iv = sub.add_parser("invert", help="project an image into the generator (W or W+), then render it with directions")
    iv.add_argument("--ckpt", required=True)
    iv.add_argument("--image", required=True)
    iv.add_argument("--space", default="w+", choices=["w", "w+"])
    iv.add_argument("--steps", type=positive_int, default=300)
    iv.add_argument("--lr", type=finite_float, default=0.05)
    iv.add_argument("--clip", help="add a CLIP embedding distance (name or path), e.g. synthfaces")
    iv.add_argument("--direction", action="append", default=[], metavar="FILE[:WEIGHT]")
    iv.add_argument("--out", required=True, help="folder for latent.npy and inversion.png")
    iv.add_argument("--device", default="cpu")
    iv.add_argument("--threads", type=positive_int, default=None)
    iv.set_defaults(func=cmd_invert)

    cp = sub.add_parser("compare", help="a grid with one row per model (generators, adapters, directions) at the "
                                        "same seeds, optionally under a row of real images")
    cp.add_argument("--ckpt", help="the generator of rows that name none")
    cp.add_argument("--row", action="append", required=True,
                    help="a row: comma-separated g=CKPT, a=ADAPTER, DIR[:WEIGHT] (as morph --key); '' = the base")
    cp.add_argument("--real", help="a first row of real images: a folder or synthfaces:<domain>[@shots]")
    cp.add_argument("--seeds", default="0-7")
    cp.add_argument("--truncation", type=finite_float, default=1.0)
    cp.add_argument("--out", required=True, help="the grid (.png)")
    cp.add_argument("--device", default="cpu")
    cp.add_argument("--threads", type=positive_int, default=None)
    cp.set_defaults(func=cmd_compare)

    x = sub.add_parser("export", help="write files of a training run (any trainer) from its latest checkpoint")
    x.add_argument("run_dir", help="the run's exp.run_dir (holds config.yaml and checkpoint.pt)")
    for option, (helps, kinds) in _export_options().items():
        x.add_argument(f"--{_flag(option)}", dest=option, metavar="FILE", help=f"{helps} ({', '.join(kinds)} runs)")
    x.set_defaults(func=cmd_export)

    n = sub.add_parser("init", help="write a randomly initialised generator (to test pipelines at any scale)")
    n.add_argument("--out", required=True, help=".pt or .safetensors")
    n.add_argument("--size", type=positive_int, default=256)
    n.add_argument("--style-dim", type=positive_int, default=512)
    n.add_argument("--n-mlp", type=positive_int, default=8)
    n.add_argument("--channel-base", type=positive_int, default=32768)
    n.add_argument("--channel-max", type=positive_int, default=512)
    n.add_argument("--with-d", action="store_true", help="also write a discriminator")
    n.add_argument("--seed", type=int, default=0)
    n.set_defaults(func=cmd_init)

    e = sub.add_parser("evaluate", help="metrics on a SynthFaces domain: FID/KID, intra-cluster diversity, CLIP "
                                        "quality/diversity, domain accuracy and ground-truth domain error")
    e.add_argument("--ckpt", required=True, help="the generator to evaluate (with --adapter/--direction: their base)")
    e.add_argument("--adapter", metavar="FILE", help="a few-shot adapter file merged into --ckpt")
    e.add_argument("--direction", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="a direction file applied to --ckpt with a weight (default 1); repeat to mix several")
    e.add_argument("--domain", required=True, help="SynthFaces domain name, e.g. sketch")
    e.add_argument("--source-ckpt", help="the source generator, for the domain error against T(source) of the "
                                         "same latents (default: --ckpt itself, the unadapted case)")
    e.add_argument("--clip", default="synthfaces_judge",
                   help="CLIP judge: name or path (default: the bundled synthfaces_judge, which guides nothing; pass "
                        "a CLIP other than the one that guided the model)")
    e.add_argument("--features", default="auto", choices=["auto", "inception", "clip"],
                   help="FID/KID features; auto: Inception-v3 if its weights are local, else CLIP")
    e.add_argument("--n", type=positive_int, default=256, help="generated images (seeds SEED .. SEED+n-1)")
    e.add_argument("--n-eval", type=positive_int, default=None, help="eval-set images (default: --n)")
    e.add_argument("--truncation", type=finite_float, default=1.0)
    e.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    e.add_argument("--seed", type=int, default=None,
                   help="first seed; also seeds KID subsets and pair sampling (default: where --split starts)")
    e.add_argument("--split", choices=["validation", "test"], default="validation",
                   help="validation: latents from seed 0 and eval images from index 0 (choose configs on it); test: "
                        "both from 100000 (numbers to report; never tune on it)")
    e.add_argument("--batch", type=positive_int, default=32)
    e.add_argument("--out", required=True, help="folder for report.json and samples.png")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    import contextlib
    args = build_parser().parse_args(argv)
    from adapt_common.cli_errors import run_command
    from adapt_common.config import plain_config_warnings
    from adapt_common.integrity import hash_checks_skipped
    with hash_checks_skipped() if args.no_verify_hash else contextlib.nullcontext(), plain_config_warnings():
        return run_command(args.func, args)  # known errors: one line on stderr, exit 2


if __name__ == "__main__":
    sys.exit(main())
