"""Command line: ``python -m diffusion_adapt <command> ...`` (``--help`` for each)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _threads(n):
    import torch
    if n:
        torch.set_num_threads(n)


def _parse_weighted(text: str) -> tuple[str, float]:
    from adapt_common.files import split_weight
    return split_weight(text)


def _model_with_shifts(model: str, shifts: list[str], device: str):
    from . import svdiff
    from .models import load_model
    unet, scheduler = load_model(model, device)
    if shifts:
        svdiff.apply_shift_files(unet, [_parse_weighted(s) for s in shifts])
    return unet.eval(), scheduler


def _t2i_with_shifts(model: str, shifts: list[str], te_shifts: list[str], device: str):
    """A text-to-image (Stable Diffusion layout) folder, its UNet and text encoder shifted by the given files."""
    from .text2image import apply_t2i_shifts, load_t2i
    return apply_t2i_shifts(load_t2i(model, device), [_parse_weighted(s) for s in shifts],
                            [_parse_weighted(s) for s in te_shifts])


def _check_prompt(args, model: str) -> bool:
    """Whether ``model`` is a text-to-image folder; a prompt is required for one and refused for any other. A folder
    with the layout but parts of another architecture is refused first (asking for a prompt would not help)."""
    from .models import ModelLoadError
    from .text2image import check_t2i_folder, is_t2i_folder
    t2i = is_t2i_folder(model)
    if t2i:
        check_t2i_folder(model)
    if t2i and not args.prompt:
        raise ModelLoadError(f"{model} is a text-to-image (Stable Diffusion layout) model: give --prompt")
    if not t2i and args.prompt:
        raise ModelLoadError(f"{model} is an unconditional model (no unet/ and text_encoder/): it takes no --prompt")
    if not t2i and args.text_encoder_shifts:
        raise ModelLoadError(f"{model} has no text encoder: --text-encoder-shifts is for text-to-image models")
    return t2i


TRAIN = "python -m diffusion_adapt train"


def trainer_kind(files: list[str], overrides: list[str]) -> str:
    """Which trainer a config is for: its ``exp.trainer`` (the last one given wins; default ddpm)."""
    from adapt_common.trainers import trainer_for
    return trainer_for(files, overrides, TRAIN).name


def cmd_train(args) -> int:
    """Any registered diffusion trainer (adapt_common.trainers), picked by the config's exp.trainer."""
    from adapt_common.config import load_config
    from adapt_common.trainers import trainer_for
    spec = trainer_for(args.config, args.overrides, TRAIN)
    spec.train_function()(load_config(spec.config_class(), args.config, args.overrides), resume=args.resume)
    return 0


def cmd_export(args) -> int:
    """The result of a run folder's latest checkpoint (the EMA for ddpm), without finishing (or re-running) the
    training."""
    from adapt_common.trainers import load_run, run_trainer
    run = Path(args.run_dir)
    if not (run / "config.yaml").is_file() or not (run / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run} is not a training run folder (it needs config.yaml and checkpoint.pt, as "
                                "`python -m diffusion_adapt train` writes them)")
    spec = run_trainer(run, TRAIN)
    export = spec.export("out")
    trainer = load_run(spec, run)
    out = getattr(trainer, export.method)(args.out)
    written = ", ".join(str(p) for p in (out if isinstance(out, list) else [out]))
    print(f"wrote {written}: the {spec.name} run's {trainer.cfg.training.parameterization} result at step "
          f"{trainer.step}")
    return 0


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from adapt_common.image_io import save_grid, save_image
    from gan_adapt.seeds import parse_seeds
    from .sampling import ddim_sample, noise_from_seeds
    _threads(args.threads)
    t2i = _check_prompt(args, args.model)
    if t2i:
        from .text2image import t2i_sample
        model = _t2i_with_shifts(args.model, args.shifts, args.text_encoder_shifts, args.device)
        unet = model.unet
    else:
        unet, scheduler = _model_with_shifts(args.model, args.shifts, args.device)
    seeds = parse_seeds(args.seeds)
    size = unet.config.sample_size
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(0, len(seeds), args.batch):
        chunk = seeds[i:i + args.batch]
        noise = noise_from_seeds(chunk, (unet.config.in_channels, size, size))
        if t2i:  # classifier-free guidance with the prompt; the unconditional branch is the empty prompt
            img = t2i_sample(model, [args.prompt] * len(chunk), noise, args.steps, args.guidance).cpu()
        else:
            img = ddim_sample(unet, scheduler, noise, args.steps).cpu()
        images.append(img)
        for s, im in zip(chunk, img):
            save_image(im, out / f"seed{s:04d}.png")
    images = torch.cat(images)
    save_grid(images, out / "grid.png")
    if args.save_raw:
        np.save(args.save_raw, images.numpy().astype(np.float32))
    print(f"wrote {len(seeds)} images and grid.png to {out} ({args.steps} DDIM steps"
          + (f", prompt {args.prompt!r}, guidance {args.guidance:g}" if t2i else "")
          + (f", shifts {', '.join(args.shifts + args.text_encoder_shifts)})" if args.shifts or
             args.text_encoder_shifts else ")"))
    return 0


def cmd_translate(args) -> int:
    import numpy as np
    import torch

    from adapt_common.image_io import load_image, save_grid
    from .models import load_model
    from .sampling import translate
    _threads(args.threads)
    t2i = _check_prompt(args, args.model)
    if args.target_model and _check_prompt(args, args.target_model) != t2i:
        raise ValueError(f"--model {args.model} and --target-model {args.target_model} are of different kinds "
                         "(one text-to-image, one unconditional)")
    if t2i:
        from .text2image import load_t2i, t2i_translate
        source = load_t2i(args.model, args.device)
        target = _t2i_with_shifts(args.target_model or args.model, args.shifts, args.text_encoder_shifts,
                                  args.device)
        size = source.vae.config.sample_size if source.vae is not None else source.unet.config.sample_size
        images = torch.cat([load_image(p, size=size) for p in args.images])
        out = t2i_translate(source, target, images, args.prompt, args.target_prompt, args.steps,
                            args.guidance).cpu()
    else:
        if args.target_prompt:
            raise ValueError("--target-prompt is for text-to-image models")
        source, scheduler = load_model(args.model, args.device)
        target, _ = _model_with_shifts(args.target_model or args.model, args.shifts, args.device)
        size = source.config.sample_size
        images = torch.cat([load_image(p, size=size) for p in args.images])
        out = translate(source, target, scheduler, images, args.steps).cpu()
    save_grid(torch.cat([images, out]), args.out, nrow=len(args.images))
    if args.save_raw:
        np.save(args.save_raw, out.numpy().astype(np.float32))
    print(f"wrote {args.out}: inputs (top) translated by DDIM inversion with {args.model} and decoding with the "
          "adapted model (bottom)")
    return 0


def cmd_shifts(args) -> int:
    import json

    from . import svdiff
    if args.action == "info":
        for f in args.files:
            shifts = svdiff.SpectralShifts.from_pretrained(f)
            tensors, manifest = shifts.tensors, shifts.manifest
            print(json.dumps({"file": f, "tensors": len(tensors), "values": sum(t.numel() for t in tensors.values()),
                              **{k: v for k, v in manifest.items() if k != "training_config"},
                              "norm_convention": shifts.convention}, indent=2, default=str))
        return 0
    if not args.out:
        raise ValueError(f"shifts {args.action} needs --out")
    if args.action == "mix":
        return _mix(args)
    # merge: bake shifts into a plain model folder
    if not args.model:
        raise ValueError("shifts merge needs --model (the base model folder)")
    from .models import save_model
    from .text2image import bake_t2i, is_t2i_folder, save_t2i
    from adapt_common.files import require_finite
    if is_t2i_folder(args.model):  # the whole pipeline folder again, UNet and text encoder baked
        model = bake_t2i(_t2i_with_shifts(args.model, args.files, args.text_encoder_shifts, "cpu"))
        for name, m in (("UNet", model.unet), ("text encoder", model.text_encoder)):
            require_finite(m.state_dict(), f"{args.out} (not written: the merged {name} weights)")
        save_t2i(model, args.out)
        print(f"wrote {args.out}: {args.model} with the shifts baked in (a plain text-to-image folder)")
        return 0
    if args.text_encoder_shifts:
        raise ValueError(f"{args.model} has no text encoder: --text-encoder-shifts is for text-to-image models")
    unet, scheduler = _model_with_shifts(args.model, args.files, "cpu")
    baked = svdiff.bake(unet)
    require_finite(baked.state_dict(), f"{args.out} (not written: the merged weights)")
    save_model(baked, scheduler, args.out)
    print(f"wrote {args.out}: {args.model} with the shifts baked in (a plain diffusers model)")
    return 0


def _mix(args) -> int:
    """Weighted sum of shift files; ``--model`` converts one-value norm shifts where files disagree on the norms."""
    from . import svdiff
    pairs = [_parse_weighted(f) for f in args.files]
    read = [svdiff.SpectralShifts.from_pretrained(p) for p, _ in pairs]
    gammas = None
    if args.model:
        from .models import load_model
        gammas = svdiff.norm_weights(load_model(args.model)[0])
    mixed = svdiff.mix_shifts([s.tensors for s in read], [w for _, w in pairs], gammas=gammas,
                              source=" + ".join(p for p, _ in pairs))
    kinds = {s.convention for s in read} - {"none"}
    convention = "none" if not kinds else "public" if kinds == {"public"} else "per_channel"
    manifest = {"derived": "mix", "norm_convention": convention, "mixed": [{"file": p, "weight": w} for p, w in pairs]}
    out = svdiff.SpectralShifts(mixed, manifest).save_pretrained(args.out)
    print(f"wrote {out}: " + " + ".join(f"{w:g} x {p}" for p, w in pairs))
    return 0


def _t2i_arguments(parser, prompt_help: str, guidance: float) -> None:
    parser.add_argument("--prompt", help=prompt_help)
    parser.add_argument("--guidance", type=float, default=guidance,
                        help=f"text-to-image models: classifier-free guidance scale (default {guidance:g}"
                             + ("; 1 keeps the inversion's round trip exact)" if guidance == 1.0 else ")"))
    parser.add_argument("--text-encoder-shifts", action="append", default=[], metavar="FILE[:SCALE]",
                        help="text-to-image models: the text encoder's shift file (<name>_te.safetensors of a "
                             "text-to-image SVDiff run); repeatable")


def build_parser() -> argparse.ArgumentParser:
    from adapt_common.trainers import config_help, trainers_of
    from gan_adapt.cli import positive_int
    p = argparse.ArgumentParser(prog="python -m diffusion_adapt", description="diffusion-model domain adaptation")
    sub = p.add_subparsers(dest="command", required=True)

    kinds = ", ".join(spec.name for spec in trainers_of(TRAIN))
    t = sub.add_parser("train", help=f"pretraining or adaptation from a config; exp.trainer picks the trainer "
                                     f"({kinds})",
                       description="Train with any of the trainers below; `--help` lists every config key with its "
                                   "default and meaning.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_help(TRAIN))
    t.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    t.add_argument("--resume", action="store_true", help="continue the run in exp.run_dir from its checkpoint")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.iters=500")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="the result of a training run (" + "; ".join(
        f"{spec.name}: {spec.export('out').help}" for spec in trainers_of(TRAIN) if spec.export("out")) + ")")
    e.add_argument("run_dir", help="the run's exp.run_dir (holds config.yaml and checkpoint.pt)")
    e.add_argument("--out", help="where to write (default: in the run folder, as training writes it)")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("sample", help="DDIM samples for seeds, with any number of shift files")
    s.add_argument("--model", required=True, help="a model folder: unconditional (DDPMPipeline or UNet2DModel) or "
                                                  "text-to-image (Stable Diffusion layout: unet/, text_encoder/, vae/)")
    s.add_argument("--shifts", action="append", default=[], metavar="FILE[:SCALE]",
                   help="a shift file, or a checkpoint folder holding spectral_shifts.safetensors; repeatable")
    _t2i_arguments(s, "the prompt of every sample (text-to-image models)", guidance=5.0)
    s.add_argument("--seeds", default="0-15")
    s.add_argument("--steps", type=positive_int, default=50)
    s.add_argument("--batch", type=positive_int, default=16)
    s.add_argument("--outdir", required=True)
    s.add_argument("--save-raw", metavar="FILE.npy")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=positive_int)
    s.set_defaults(func=cmd_sample)

    tr = sub.add_parser("translate", help="source image -> adapted domain (DDIM inversion, DDIB)")
    tr.add_argument("--model", required=True, help="the source model folder")
    tr.add_argument("--target-model", help="the adapted model folder (default: --model with --shifts)")
    tr.add_argument("--shifts", action="append", default=[], metavar="FILE[:SCALE]",
                    help="a shift file, or a checkpoint folder holding spectral_shifts.safetensors; repeatable")
    _t2i_arguments(tr, "text-to-image models: the prompt the source model inverts with", guidance=1.0)
    tr.add_argument("--target-prompt", help="text-to-image models: the prompt the target model decodes with "
                                            "(default: --prompt)")
    tr.add_argument("--images", nargs="+", required=True)
    tr.add_argument("--steps", type=positive_int, default=50)
    tr.add_argument("--out", required=True)
    tr.add_argument("--save-raw", metavar="FILE.npy", help="also the translations as float32 [N, 3, H, W] in [-1, 1]")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--threads", type=positive_int)
    tr.set_defaults(func=cmd_translate)

    sh = sub.add_parser("shifts", help="spectral-shift files: info, mix (weighted sum / interpolation), merge")
    sh.add_argument("action", choices=["info", "mix", "merge"])
    sh.add_argument("files", nargs="+", metavar="FILE[:WEIGHT]")
    sh.add_argument("--model", help="merge: the base model folder; mix: the base model, needed to mix files whose "
                    "norm shifts differ in convention (one value per norm and per channel)")
    sh.add_argument("--text-encoder-shifts", action="append", default=[], metavar="FILE[:WEIGHT]",
                    help="merge into a text-to-image folder: the text encoder's shift file(s) (<name>_te.safetensors "
                         "of a text-to-image SVDiff run); repeatable")
    sh.add_argument("--out")
    sh.set_defaults(func=cmd_shifts)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from adapt_common.cli_errors import run_command
    from adapt_common.config import plain_config_warnings
    with plain_config_warnings():  # a config key under its old name: one "warning:" line
        return run_command(args.func, args)  # known errors: one line on stderr, exit 2


if __name__ == "__main__":
    sys.exit(main())
