"""Adversarial StyleGAN2 training: pretraining from scratch and few-shot adaptation with any parameterization.

    python -m gan_adapt train --config configs/<name>.yaml [key=value ...] [--resume]
    torchrun --nproc_per_node 2 -m gan_adapt train --config ...        # several processes (gloo on CPU)

One loop, rosinality/StyleGAN2-ADA style: non-saturating logistic loss, lazy R1 on reals every
``r1_every`` steps, optional lazy path-length regularisation, style mixing, a generator EMA, and ADA
(adaptive discriminator augmentation) for few images. Under torchrun every process takes its own slice of
each batch and gradients are averaged across processes before every optimiser step (the data-parallel
scheme of DistributedDataParallel, written out so the R1 double-backward needs no special casing).

Every ``checkpoint_every`` steps the whole state (trained tensors, EMA, discriminator, optimisers, ADA,
RNG) is written atomically to ``<run_dir>/checkpoint.pt``; ``--resume`` continues from it and gives the
same result as an uninterrupted run.
"""
from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from adapt_common.config import to_dict
from adapt_common.config_sections import (EvaluationSection, ExpSection, LoggingSection, base_setting, section,
                                          setting)
from adapt_common.image_io import save_grid
from adapt_common.loop import (LoopTrainer, average_gradients, finish_distributed, init_distributed, rng_state,
                                   set_rng_state, set_threads, world_info)
from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from ..parameterizations import Parameterization
from .augment import AdaController, AugmentPipe
from adapt_common.datasets import ImageSource
from .losses import accumulate_ema, d_logistic_loss, ema_decay_for, g_nonsaturating_loss, path_length_penalty, r1_penalty


# ----------------------------------------------------------------------------------------------------------
# Config


@dataclass
class GeneratorArgs:
    """The architecture of a new generator (``base`` empty); a ``base`` checkpoint brings its own."""

    size: int = setting(64, "image size in pixels (a power of 2)")
    style_dim: int = setting(128, "size of z, w and the mapping network's layers")
    n_mlp: int = setting(4, "layers of the mapping network")
    channel_base: int = setting(4096, "channels = min(channel_base / resolution, channel_max) (NVIDIA's rule)")
    channel_max: int = setting(128, "the most channels of any layer")


@dataclass
class DataConfig:
    source: str = setting("synthfaces:photo", "the real images: a folder, synthfaces:<domain> (rendered on the fly) "
                                              "or synthfaces:<domain>@<shots> (a fixed few-shot set)")


@dataclass
class TrainingConfig:
    parameterization: str = setting("full", "what trains: full, mapping, syntconv, affine, stylespace, direction, "
                                            "dommod, affine_plus or affine_light_plus (gan_adapt.parameterizations)")
    block: int = setting(64, "the block size of the Affine+ / AffineLight+ weight offsets")
    rank: int = setting(5, "the rank of AffineLight+'s offsets")
    iters: int = setting(1000, "training steps")
    batch: int = setting(8, "images per step and process (torchrun: each process its slice of the global batch)")
    lr_g: float | None = setting(None, "the generator's Adam learning rate; unset (null): the parameterization's "
                                       "few-shot rate from its spec (gan_adapt.parameterizations.SPECS)")
    lr_d: float = setting(0.002, "the discriminator's Adam learning rate")
    r1_gamma: float = setting(10.0, "weight of the R1 penalty on real images (0: off)")
    r1_every: int = setting(16, "R1 every this many steps (lazy regularisation)")
    pl_weight: float = setting(0.0, "path-length regularisation (StyleGAN2: 2.0; off by default for adaptation)")
    pl_every: int = setting(4, "path-length regularisation every this many steps")
    mixing: float = setting(0.9, "probability of style mixing at a random layer")
    adversarial_weight: float = setting(1.0, "weight of the generator's non-saturating adversarial loss")
    distill_weight: float = setting(0.0, "L1 to the SynthFaces renderer's image of z (pretraining by distillation)")
    # Plain L1 is met by a soft average near thin parts (eyes, glasses frames, hat bands); matching the
    # gradients asks for their edges.
    distill_edge_weight: float = setting(0.0, "L1 between the pixel differences of G(z) and of the renderer's image")
    ema_kimg: float = setting(10.0, "half-life of the generator EMA, in thousands of images")
    train_d: bool = setting(True, "train the discriminator (false: a supervised phase)")
    # The mapping network's equalised-lr multiplier (0.01) keeps it slow and stable in adversarial training; a
    # supervised phase can speed it back up without changing the stored weights' meaning.
    mapping_lr_mult: float = setting(1.0, "the mapping network's learning rate relative to lr_g")
    adam_beta1: float = setting(0.0, "the generator's Adam beta1 (StyleGAN2: 0; a distillation phase: 0.9)")
    lr_rampdown: float = setting(0.0, "the last fraction of iters over which every learning rate falls to 0 "
                                      "(cosine)")


@dataclass
class AdaConfig:
    enabled: bool = setting(False, "adaptive discriminator augmentation (few images)")
    target: float = setting(0.6, "the mean sign of D(real) that ADA steers the augmentation probability p towards")
    interval: int = setting(4, "p adjusted every this many steps")
    kimg: float = setting(500.0, "thousands of images for p to go from 0 to 1 at the fastest")
    p_init: float = setting(0.0, "p at the start")


@dataclass
class GanTrainConfig:
    """``python -m gan_adapt train`` with ``exp.trainer: adversarial``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"generator_args.ckpt": "base"}

    exp: ExpSection = section(ExpSection, "the run", trainer="adversarial", name="gan", run_dir="runs/gan")
    base: str = base_setting("")
    generator_args: GeneratorArgs = section(GeneratorArgs, "a new generator's architecture (base empty)")
    data: DataConfig = section(DataConfig, "the training images")
    training: TrainingConfig = section(TrainingConfig, "what trains, and how")
    ada: AdaConfig = section(AdaConfig, "adaptive discriminator augmentation")
    logging: LoggingSection = section(LoggingSection, "log, sample and checkpoint cadences")
    evaluation: EvaluationSection = section(EvaluationSection, "the end-of-run report")


# ----------------------------------------------------------------------------------------------------------
# The trainer


def synthfaces_targets(z: torch.Tensor, domain: str, size: int) -> torch.Tensor:
    """The renderer's image of z (``adapt_common.synthfaces.render_from_z``): the normal CDF of the first coordinates
    of the pixel-normalised z are the face's parameter uniforms.

    Distilling G(z) towards this teaches the generator the world's faces in supervised steps, far faster on a
    CPU than adversarial training from scratch, and makes z a known coordinate system of the faces."""
    from adapt_common import synthfaces as sf
    if z.shape[1] < len(sf.PARAM_SPEC):
        raise ValueError(f"distillation needs style_dim >= {len(sf.PARAM_SPEC)} (the SynthFaces parameters), got "
                         f"{z.shape[1]}")
    return sf.render_from_z(z, domain, size)


def edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the horizontal and vertical neighbour differences of two image batches."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def _fake(G: Generator, batch: int, prob: float, device) -> torch.Tensor:
    """Images from fresh z, with style mixing at a random layer with probability ``prob`` (all randomness
    from torch's generator, so checkpoints that save its state resume exactly)."""
    if prob > 0 and torch.rand(()) < prob:
        z = list(torch.randn(2, batch, G.style_dim, device=device).unbind(0))
        return G(z, inject_index=int(torch.randint(1, G.n_latent, ())), randomize_noise=True)[0]
    return G([torch.randn(batch, G.style_dim, device=device)], randomize_noise=True)[0]


class GanTrainer(LoopTrainer):
    def __init__(self, cfg: GanTrainConfig, *, quiet: bool = False):
        self.cfg = cfg
        self.rank, self.world = world_info()
        self.quiet = quiet or self.rank != 0
        set_threads(cfg.exp.threads, "exp.threads")
        torch.manual_seed(cfg.exp.seed)
        random.seed(cfg.exp.seed)
        np.random.seed(cfg.exp.seed)
        self.device = torch.device(cfg.exp.device)
        ga, tr = cfg.generator_args, cfg.training

        if cfg.base:
            from ..formats import load_checkpoint
            ck = load_checkpoint(cfg.base)
            source, d = ck.g_ema, ck.d
            if d is None:
                d = Discriminator(config=DiscriminatorConfig(size=source.size, channel_base=source.config.channel_base,
                                                             channel_max=source.config.channel_max))
                self._log(f"note: {cfg.base} has no discriminator; starting one from scratch")
            self.source_desc = f"{cfg.base} ({ck.source_format})"
        else:
            gcfg = GeneratorConfig(size=ga.size, style_dim=ga.style_dim, n_mlp=ga.n_mlp, channel_base=ga.channel_base,
                                   channel_max=ga.channel_max)
            source = Generator(config=gcfg)
            source.set_latent_avg(source.mean_latent(4096, seed=cfg.exp.seed))
            d = Discriminator(config=DiscriminatorConfig(size=ga.size, channel_base=ga.channel_base,
                                                         channel_max=ga.channel_max))
            self.source_desc = f"new {ga.size}px generator"
        self.source = source
        self.param = Parameterization(tr.parameterization, source.to(self.device), block=tr.block, rank=tr.rank,
                                      seed=cfg.exp.seed)
        self.source_hash = self.param.source_hash
        self.param.generator.train()
        self.ema = copy.deepcopy(self.param).eval()
        self.ema.requires_grad_(False)
        self.d = d.to(self.device).train().requires_grad_(tr.train_d)
        self.data = ImageSource(cfg.data.source, self.param.generator.size, quiet=self.quiet)
        if tr.distill_weight > 0 and (self.data.domain is None or self.data.images is not None):
            raise ValueError("training.distill_weight needs data.source=synthfaces:<domain> (a rendered stream)")

        lr_g = self.generator_lr()
        g_ratio = tr.pl_every / (tr.pl_every + 1) if tr.pl_weight > 0 else 1.0
        d_ratio = tr.r1_every / (tr.r1_every + 1)
        mapping = {id(p) for p in self.param.generator.style.parameters()}
        g_params = self.param.trainable_parameters()
        groups = [{"params": [p for p in g_params if id(p) not in mapping]},
                  {"params": [p for p in g_params if id(p) in mapping], "lr": lr_g * g_ratio * tr.mapping_lr_mult}]
        self.g_opt = torch.optim.Adam([g for g in groups if g["params"]], lr=lr_g * g_ratio,
                                      betas=(tr.adam_beta1, 0.99 ** g_ratio))
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=tr.lr_d * d_ratio, betas=(0.0, 0.99 ** d_ratio))
        # The config's learning rates (a resumed optimiser state does not override them).
        self._base_lrs = [[group["lr"] for group in opt.param_groups] for opt in (self.g_opt, self.d_opt)]
        self.augment = AugmentPipe(cfg.ada.p_init if cfg.ada.enabled else 0.0).to(self.device)
        self.ada = AdaController(self.augment, cfg.ada.target, cfg.ada.interval, cfg.ada.kimg) if cfg.ada.enabled \
            else None
        self.step = 0
        self.elapsed = 0.0
        self.mean_path_length = torch.zeros(())
        gen = torch.Generator().manual_seed(cfg.logging.sample_seed)
        self.sample_z = torch.randn(cfg.logging.n_samples, self.param.generator.style_dim, generator=gen)
        self.run_dir = Path(cfg.exp.run_dir)

    def generator_lr(self) -> float:
        """``training.lr_g``, or when unset the parameterization's few-shot rate from its spec (the papers' values)."""
        from ..parameterizations import spec
        tr = self.cfg.training
        if tr.lr_g is not None:
            return float(tr.lr_g)
        lr = spec(tr.parameterization).fewshot_lr_g
        if lr is None:
            raise ValueError(f"training.lr_g is unset and no few-shot learning rate is recorded for "
                             f"{tr.parameterization!r}; set training.lr_g")
        return lr

    # -- one step ------------------------------------------------------------------------------------------

    def lr_factor(self, step: int) -> float:
        """1, then a cosine ramp to 0 over the last ``lr_rampdown`` fraction of the iterations."""
        tr = self.cfg.training
        if tr.lr_rampdown <= 0:
            return 1.0
        t = (step / tr.iters - (1 - tr.lr_rampdown)) / tr.lr_rampdown
        return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))

    def train_step(self) -> dict:
        cfg, tr = self.cfg, self.cfg.training
        G, D = self.param.generator, self.d
        factor = self.lr_factor(self.step)
        for opt, base in zip((self.g_opt, self.d_opt), self._base_lrs):
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * factor
        dim = G.style_dim
        real = self.data.batch(self.step, tr.batch, self.rank, self.world, cfg.exp.seed).to(self.device)
        stats: dict = {}

        # Discriminator
        if tr.train_d:
            self.param.requires_grad_(False)
            with torch.no_grad():
                fake = _fake(G, tr.batch, tr.mixing, self.device)
            real_pred = D(self.augment(real))
            fake_pred = D(self.augment(fake))
            d_loss = d_logistic_loss(real_pred, fake_pred)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            average_gradients(list(D.parameters()))
            self.d_opt.step()
            if self.ada is not None:
                self.ada.accumulate(real_pred)
                self.ada.step(tr.batch * self.world, self.step + 1)
            stats.update(d_loss=d_loss.item(), real_score=real_pred.mean().item(), fake_score=fake_pred.mean().item())
            if tr.r1_gamma > 0 and self.step % tr.r1_every == 0:
                real_in = real.detach().requires_grad_(True)
                real_pred = D(self.augment(real_in))
                r1 = r1_penalty(real_pred, real_in)
                self.d_opt.zero_grad(set_to_none=True)
                (tr.r1_gamma / 2 * r1 * tr.r1_every + 0 * real_pred[0, 0]).backward()
                average_gradients(list(D.parameters()))
                self.d_opt.step()
                stats["r1"] = r1.item()
            D.requires_grad_(False)

        # Generator
        for p in self.param.trainable_parameters():
            p.requires_grad_(True)
        g_loss = torch.zeros(())
        if tr.adversarial_weight > 0:
            fake = _fake(G, tr.batch, tr.mixing, self.device)
            g_loss = tr.adversarial_weight * g_nonsaturating_loss(D(self.augment(fake)))
            stats["g_loss"] = g_loss.item()
        if tr.distill_weight > 0:
            z = torch.randn(tr.batch, G.style_dim, device=self.device)
            fake, target = G([z], randomize_noise=True)[0], synthfaces_targets(z, self.data.domain, G.size)
            distill = (fake - target).abs().mean()
            g_loss = g_loss + tr.distill_weight * distill
            stats["distill_l1"] = distill.item()
            if tr.distill_edge_weight > 0:
                edges = edge_l1(fake, target)
                g_loss = g_loss + tr.distill_edge_weight * edges
                stats["distill_edge_l1"] = edges.item()
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        average_gradients(self.param.trainable_parameters())
        self.g_opt.step()
        if tr.pl_weight > 0 and self.step % tr.pl_every == 0:
            n = max(1, tr.batch // 2)
            w = G.to_wplus(G.get_latent(torch.randn(n, dim, device=self.device)))
            w = w.detach().requires_grad_(True)
            img = G.synthesis(G.styles_from_latent(w), "random")
            pl, self.mean_path_length, _ = path_length_penalty(img, w, self.mean_path_length)
            self.g_opt.zero_grad(set_to_none=True)
            (tr.pl_weight * tr.pl_every * pl + 0 * img[0, 0, 0, 0]).backward()
            average_gradients(self.param.trainable_parameters())
            self.g_opt.step()
            stats["pl"] = pl.item()
        if tr.train_d:
            D.requires_grad_(True)
        accumulate_ema(self.ema.generator, G, ema_decay_for(tr.batch * self.world, tr.ema_kimg))
        if self.ada is not None:
            stats["ada_p"] = float(self.augment.p)
        self.step += 1
        return stats

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step, "elapsed_s": self.elapsed, "mean_path_length": self.mean_path_length,
            "trained": self.param.trained_state_dict(), "ema": self.ema.trained_state_dict(),
            "d": self.d.state_dict(), "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict(),
            "ada": self.ada.state_dict() if self.ada is not None else None, "rng": rng_state(),
            "parameterization": self.param.name, "source_hash": self.source_hash,
            "generator_config": self.param.generator.config.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["parameterization"] != self.param.name or state["source_hash"] != self.source_hash:
            raise ValueError(f"the checkpoint is a {state['parameterization']} run of generator "
                             f"{state['source_hash']}; this config is {self.param.name} of {self.source_hash}")
        self.param.load_trained_state_dict(state["trained"])
        self.ema.load_trained_state_dict(state["ema"])
        self.d.load_state_dict(state["d"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        if self.ada is not None and state["ada"] is not None:
            self.ada.load_state_dict(state["ada"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]
        self.mean_path_length = state["mean_path_length"]

    @torch.no_grad()
    def samples(self, path: Path | None = None) -> Path:
        g = self.ema.generator
        img = g.generate(self.sample_z.to(self.device), noise_mode="const")
        return save_grid(img, path or self.run_dir / "samples" / f"step{self.step:06d}.png", nrow=8)

    # -- the loop ------------------------------------------------------------------------------------------

    def write_samples(self, path: Path) -> Path:
        return self.samples(path)

    def fit(self, resume: bool = False, evaluate: bool = True) -> dict:
        """Train; then, with ``evaluate`` and ``evaluation.n > 0``, the report (the CLI passes False and evaluates
        after writing the result files, so that an evaluation error never costs them)."""
        cfg = self.cfg
        self.start(resume)
        self._log(f"{self.param.describe()} of {self.source_desc}; {self.world} process(es), batch "
                  f"{cfg.training.batch} each")
        self.loop(cfg.training.iters, resume)
        if evaluate and cfg.evaluation.n > 0 and self.rank == 0:
            self.evaluate()
        return {"steps": self.step, "wall_time_s": self.elapsed, "run_dir": str(self.run_dir),
                "trainable_parameters": self.param.num_trainable()}

    # -- results -------------------------------------------------------------------------------------------

    def evaluate(self, out_dir: str | Path | None = None) -> dict:
        """FID/KID, intra-cluster diversity and CLIP scores of the EMA generator (shared metrics); for a
        SynthFaces similar domain also the ground-truth domain error against T(source)."""
        from adapt_common.metrics.evaluate import EvalDomain, evaluate, gan_sampler, summary_lines, synthfaces_domain
        ev = self.cfg.evaluation
        make_batch, sample = gan_sampler(self.ema.merged_generator())
        if self.data.domain is not None:
            domain = synthfaces_domain(self.data.domain)
        else:
            images = self.data.images
            name = Path(self.cfg.data.source).name
            domain = EvalDomain(name=name, kind="custom", prompt=f"a photo of {name.replace('_', ' ')}",
                                eval_images=lambda n, size: images[:n], shot_images=lambda size: images,
                                world="folder")
        _, source = gan_sampler(self.source.eval())
        report = evaluate(sample, domain, sample_source=source, make_batch=make_batch, n=ev.n, clip=ev.clip,
                          features=ev.features, out_dir=out_dir or self.run_dir / "eval", seed=self.cfg.exp.seed,
                          settings={"steps": self.step, "parameterization": self.param.name}, quiet=True)
        for line in summary_lines(report):
            self._log(line)
        return report

    def export_adapter(self, path: str | Path) -> Path:
        """Only what trained (EMA weights), with a manifest naming the base generator by its content hash."""
        from ..adapter_files import Adapter
        return Adapter.from_parameterization(self.ema, source_hash=self.source_hash, domain=self.cfg.data.source,
                                             extra={"steps": self.step,
                                                    "training_config": to_dict(self.cfg)}).save_pretrained(path)

    def export_direction(self, path: str | Path) -> Path:
        """A ``direction`` / ``dommod`` run's EMA vector as a portable direction file (gan_adapt.directions)."""
        from ..directions import Direction
        d = Direction.from_parameterization(self.ema, domain=self.cfg.data.source, steps=self.step,
                                            training_config=to_dict(self.cfg))
        return d.save_pretrained(path)

    def export_generator(self, path: str | Path) -> Path:
        """The EMA generator with everything merged, as a full checkpoint (with the discriminator)."""
        from ..formats import StyleGANCheckpoint, save_checkpoint
        g = self.ema.merged_generator()
        meta = {"trained_with": self.param.name, "source": self.source_desc, "source_hash": self.source_hash,
                "steps": self.step, "config": json.dumps(to_dict(self.cfg))}
        return save_checkpoint(StyleGANCheckpoint(g_ema=g, d=copy.deepcopy(self.d).eval(), meta=meta), path)


def train(cfg: GanTrainConfig, resume: bool = False, quiet: bool = False, evaluate: bool = True) -> GanTrainer:
    init_distributed()
    trainer = GanTrainer(cfg, quiet=quiet)
    try:
        trainer.fit(resume=resume, evaluate=evaluate)
    finally:
        finish_distributed()
    return trainer



def train_and_export(cfg: GanTrainConfig, resume: bool = False, quiet: bool = False) -> GanTrainer:
    """What ``python -m gan_adapt train`` runs: :func:`train`, then (rank 0) ``adapter.safetensors`` and, for a
    direction kind, ``direction.safetensors`` in the run folder, then the report (``evaluation.n > 0``). The files
    come first so that an evaluation error never costs them; it is kept in ``trainer.evaluation_error`` and the
    adapter's path in ``trainer.result``."""
    from ..parameterizations import DIRECTION_KINDS
    trainer = train(cfg, resume=resume, quiet=quiet, evaluate=False)
    trainer.evaluation_error = None
    if trainer.rank != 0:
        return trainer
    out = Path(cfg.exp.run_dir)
    trainer.result = trainer.export_adapter(out / "adapter.safetensors")
    if trainer.param.name in DIRECTION_KINDS:
        trainer.export_direction(out / "direction.safetensors")
        trainer._log(f"wrote {out / 'direction.safetensors'} (use it with generate --direction)")
    trainer._log(f"done: {trainer.step} steps; adapter.safetensors (only the trained tensors, "
                 f"{trainer.param.num_trainable():,} values), samples, log.csv and checkpoint.pt in {out}")
    if cfg.evaluation.n > 0:
        try:
            trainer.evaluate()
        except Exception as e:  # any failure of the metrics leaves the written files as they are
            trainer.evaluation_error = f"{type(e).__name__}: {e}"
    return trainer
