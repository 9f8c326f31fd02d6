"""Training unconditional diffusion models: pretraining, and few-shot adaptation with SVDiff shifts or full
fine-tuning, with DomainStudio's losses.

    python -m diffusion_adapt train --config configs/<name>.yaml [key=value ...] [--resume]
    torchrun --standalone --nproc_per_node 2 -m diffusion_adapt train --config ...

Each step: training images x₀ (a folder, ``synthfaces:<domain>`` rendered on the fly, or its fixed
``synthfaces:<domain>@10`` set; random horizontal flips), t ~ U{0..T−1}, x_t = √ᾱ x₀ + √(1−ᾱ) ε, the ε-MSE;
with DomainStudio weights the frozen source model sees the same x_t and t and the relative-distance and
high-frequency terms of :mod:`diffusion_adapt.losses` are added. An EMA of the trained tensors renders the
samples and is what gets exported: a model folder (``full``) or ``spectral_shifts.safetensors`` (``svdiff``).
Checkpoints are atomic and ``--resume`` continues exactly; under torchrun gradients are averaged.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from adapt_common.config import to_dict
from adapt_common.config_sections import (EvaluationSection, ExpSection, LoggingSection, base_setting, section,
                                          setting)
from adapt_common.datasets import ImageSource
from adapt_common.image_io import save_grid
from adapt_common.loop import (LoopTrainer, finish_distributed, init_distributed, optimiser_step, rng_state,
                                   set_rng_state, set_threads, world_info)
from . import svdiff
from .losses import domainstudio_losses, predicted_x0
from .models import UNetArch, load_model, model_hash, new_scheduler, new_unet, save_model
from .sampling import ddim_sample, noise_from_seeds

PARAMETERIZATIONS = ("full", "svdiff")
HF_MSE_WEIGHTINGS = ("none", "alpha_bar")


@dataclass
class DiffModel:
    arch: UNetArch = section(UNetArch, "a new UNet's architecture (base empty)")


@dataclass
class DiffData:
    source: str = setting("synthfaces:photo", "the training images: a folder, synthfaces:<domain> (rendered on the "
                                              "fly) or synthfaces:<domain>@<shots> (a fixed few-shot set)")
    hflip: bool = setting(True, "random horizontal flips")


@dataclass
class DiffTraining:
    parameterization: str = setting("full", "what trains: full (every UNet weight) or svdiff (spectral shifts)")
    iters: int = setting(1000, "training steps")
    batch: int = setting(8, "images per step and process")
    lr: float = setting(1e-4, "AdamW learning rate of full fine-tuning and pretraining")
    lr_shift: float = setting(1e-3, "SVDiff: learning rate of the spectral shifts (the paper: 1000x fine-tuning's)")
    lr_1d: float = setting(1e-6, "SVDiff: learning rate of the norm shifts")
    norm_shifts: str = setting("public", "SVDiff norm shifts: public (one value per norm: files load in "
                                         "svdiff-pytorch), per_channel or none")
    weight_decay: float = setting(0.0, "AdamW weight decay (SVDiff's 0.01 pulls the shifts towards 0)")
    grad_clip: float = setting(1.0, "the largest gradient norm (0: no clipping)")
    ema_decay: float = setting(0.999, "EMA decay of the trained tensors (0: no EMA); the EMA is sampled and exported")


@dataclass
class DiffLoss:
    # DomainStudio (the paper: 4, 4, 1). The relative-distance terms need batch >= 2.
    pair: float = setting(0.0, "DomainStudio: weight of the relative-distance term (the adapted model's pairwise "
                               "similarities of predicted x0 kept like the source model's; KL)")
    hf_pair: float = setting(0.0, "DomainStudio: weight of the same term on the high-frequency (Haar) details")
    hf_mse: float = setting(0.0, "DomainStudio: weight of the MSE between the high frequencies of predicted x0 and "
                                 "of the training image")
    # "alpha_bar" is a deviation: the plain term is dominated by the amplified x̂₀ error at large t (losses.py)
    hf_mse_weighting: str = setting("none", "none (the paper's plain mean of the hf MSE) or alpha_bar (each "
                                            "sample weighted by its ᾱ_t)")


@dataclass
class DiffLogging(LoggingSection):
    sample_steps: int = setting(50, "DDIM steps of the sample grids")


@dataclass
class DiffEval(EvaluationSection):
    steps: int = setting(50, "DDIM steps of the report's samples")
    seed: int = setting(-1, "the first noise seed of the report's samples and the first index of the SynthFaces eval "
                            "images (-1: exp.seed and 0, the validation split; the study reports on the test split "
                            "from 100000)")


@dataclass
class DiffTrainConfig:
    """``python -m diffusion_adapt train`` with ``exp.trainer: ddpm``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"model.pretrained": "base"}

    exp: ExpSection = section(ExpSection, "the run", trainer="ddpm", name="ddpm", run_dir="runs/ddpm")
    base: str = base_setting("checkpoints/synthfaces_ddpm")
    model: DiffModel = section(DiffModel, "a new model (base empty)")
    data: DiffData = section(DiffData, "the training images")
    training: DiffTraining = section(DiffTraining, "what trains, and how")
    loss: DiffLoss = section(DiffLoss, "DomainStudio's losses (0 turns a term off)")
    logging: DiffLogging = section(DiffLogging, "log, sample and checkpoint cadences", sample_every=200,
                                   checkpoint_every=200)
    evaluation: DiffEval = section(DiffEval, "the end-of-run report (FID/KID, intra-LPIPS, domain error)")


class DiffusionTrainer(LoopTrainer):
    def __init__(self, cfg: DiffTrainConfig, *, quiet: bool = False):
        self.cfg = cfg
        self.rank, self.world = world_info()
        self.quiet = quiet or self.rank != 0
        tr, lc = cfg.training, cfg.loss
        if tr.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"training.parameterization={tr.parameterization!r}; choose one of {PARAMETERIZATIONS}")
        if tr.norm_shifts not in svdiff.NORM_CONVENTIONS:
            raise ValueError(f"training.norm_shifts={tr.norm_shifts!r}; choose one of {svdiff.NORM_CONVENTIONS}")
        if lc.hf_mse_weighting not in HF_MSE_WEIGHTINGS:
            raise ValueError(f"loss.hf_mse_weighting={lc.hf_mse_weighting!r}; choose 'none' or 'alpha_bar'")
        if (lc.pair > 0 or lc.hf_pair > 0) and tr.batch < 2:
            raise ValueError("the DomainStudio relative-distance losses need training.batch >= 2")
        set_threads(cfg.exp.threads, "exp.threads")
        torch.manual_seed(cfg.exp.seed)
        self.device = torch.device(cfg.exp.device)
        if cfg.base:
            base, self.scheduler = load_model(cfg.base, self.device)
            self.source_desc = cfg.base
        else:
            base, self.scheduler = new_unet(cfg.model.arch, cfg.exp.seed).to(self.device), new_scheduler()
            self.source_desc = "a new UNet"
        self.base_hash = model_hash(base)
        needs_source = lc.pair > 0 or lc.hf_pair > 0 or lc.hf_mse > 0
        self.source = copy.deepcopy(base).eval().requires_grad_(False) if needs_source else None
        self.unet = base.train()
        if tr.parameterization == "svdiff":
            svdiff.add_spectral_shifts(self.unet, norms=tr.norm_shifts)
            groups = svdiff.shift_parameter_groups(self.unet, tr.lr_shift, tr.lr_1d)
        else:
            self.unet.requires_grad_(True)
            groups = [{"params": list(self.unet.parameters()), "lr": tr.lr}]
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=tr.weight_decay)
        self.ema = [p.detach().clone() for p in self.params] if tr.ema_decay > 0 else None
        self.data = ImageSource(cfg.data.source, self.unet.config.sample_size, quiet=self.quiet)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        self.step, self.elapsed = 0, 0.0
        size = self.unet.config.sample_size
        self.sample_noise = noise_from_seeds(range(cfg.logging.sample_seed, cfg.logging.sample_seed +
                                                   cfg.logging.n_samples), (3, size, size))
        self.run_dir = Path(cfg.exp.run_dir)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    # -- one step ------------------------------------------------------------------------------------------

    def train_step(self) -> dict:
        cfg, tr, lc = self.cfg, self.cfg.training, self.cfg.loss
        x0 = self.data.batch(self.step, tr.batch, self.rank, self.world, cfg.exp.seed).to(self.device)
        if cfg.data.hflip:
            flip = torch.rand(x0.shape[0]) < 0.5
            x0 = torch.where(flip.reshape(-1, 1, 1, 1).to(x0.device), x0.flip(3), x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=self.device)
        eps = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, eps, t)
        eps_ada = self.unet(x_t, t).sample
        mse = F.mse_loss(eps_ada, eps)
        loss = mse
        stats = {"mse": mse.item()}
        if self.source is not None:
            with torch.no_grad():
                eps_src = self.source(x_t, t).sample
            a = self.alphas_cumprod[t]
            terms = domainstudio_losses(x0, predicted_x0(x_t, eps_src, a), predicted_x0(x_t, eps_ada, a),
                                        hf_mse_weight=a if lc.hf_mse_weighting == "alpha_bar" else None)
            for k, v in terms.items():
                w = getattr(lc, k)
                if w > 0:
                    loss = loss + w * v
                    stats[k] = v.item()
        optimiser_step(loss, self.opt, self.params, tr.grad_clip)
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.lerp_(p.detach(), 1 - tr.ema_decay)
        stats["loss"] = loss.item()
        self.step += 1
        return stats

    @contextlib.contextmanager
    def ema_weights(self):
        """The EMA values in the trained tensors for the duration (samples, exports)."""
        if self.ema is None:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed, "params": [p.detach().clone() for p in self.params],
                "ema": self.ema, "opt": self.opt.state_dict(), "rng": rng_state(), "base_hash": self.base_hash,
                "parameterization": self.cfg.training.parameterization}

    def load_state_dict(self, state: dict) -> None:
        if state["base_hash"] != self.base_hash or state["parameterization"] != self.cfg.training.parameterization:
            raise ValueError(f"the checkpoint is a {state['parameterization']} run of model {state['base_hash']}; "
                             f"this config is {self.cfg.training.parameterization} of {self.base_hash}")
        svdiff.restore_trained(self.params, state["params"])
        if self.ema is not None and state["ema"] is not None:
            self.ema = [e.to(p) for e, p in zip(state["ema"], self.params)]  # checkpoints load on the CPU
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    # -- outputs -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        self.unet.eval()
        with self.ema_weights():
            out = ddim_sample(self.unet, self.scheduler, noise, steps or self.cfg.logging.sample_steps)
        self.unet.train()
        return out

    def write_samples(self, path: Path) -> Path:
        return save_grid(self.sample(self.sample_noise).cpu(), path, nrow=8)

    def export(self, path: str | Path | None = None) -> Path:
        """The EMA result: a model folder (full; default ``<run>/model``) or a spectral-shift file (svdiff;
        default ``<run>/spectral_shifts.safetensors``)."""
        extra = {"steps": self.step, "data": self.cfg.data.source, "training_config": to_dict(self.cfg)}
        with self.ema_weights():
            if self.cfg.training.parameterization == "svdiff":
                shifts = svdiff.SpectralShifts.from_model(self.unet, base_hash=self.base_hash, extra=extra)
                return shifts.save_pretrained(path or self.run_dir / svdiff.SHIFTS_FILE)
            return save_model(self.unet, self.scheduler, path or self.run_dir / "model")

    def evaluate(self) -> dict:
        from adapt_common.metrics.evaluate import EvalDomain, evaluate, summary_lines, synthfaces_domain
        ev = self.cfg.evaluation
        size = self.unet.config.sample_size

        def make_batch(seeds):
            return noise_from_seeds(seeds, (3, size, size))

        def sample_target(noise):
            return self.sample(noise, ev.steps)
        domain = self.data.domain
        first, offset = (self.cfg.exp.seed, 0) if ev.seed < 0 else (ev.seed, ev.seed)
        if domain is not None:
            dom = synthfaces_domain(domain, eval_offset=offset)
        else:
            images = self.data.images
            dom = EvalDomain(name=Path(self.cfg.data.source).name, kind="custom", prompt="a photo",
                             eval_images=lambda n, s: images[:n], shot_images=lambda s: images, world="folder")
        source = self.source
        if source is None and self.cfg.base:  # the frozen base: the same noise decoded before adaptation
            source = load_model(self.cfg.base, self.device)[0].eval().requires_grad_(False)

        def sample_source(noise):
            return ddim_sample(source, self.scheduler, noise, ev.steps)
        report = evaluate(sample_target, dom, sample_source=sample_source if source is not None else None,
                          make_batch=make_batch, n=ev.n,
                          clip=ev.clip, features=ev.features, out_dir=self.run_dir / "eval", seed=first,
                          settings={"steps": self.step, "parameterization": self.cfg.training.parameterization,
                                    "ddim_steps": ev.steps}, quiet=True)
        for line in summary_lines(report):
            self._log(line)
        return report

    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.start(resume)
        self._log(f"{cfg.training.parameterization}: {self.num_trainable():,} trainable values of "
                  f"{self.source_desc}; {self.world} process(es), batch {cfg.training.batch} each")
        self.loop(cfg.training.iters, resume)
        result = {"steps": self.step, "wall_time_s": self.elapsed}
        if self.rank == 0:
            result["export"] = str(self.export())
            if cfg.evaluation.n > 0:
                result["report"] = self.evaluate()
        return result


def train(cfg: DiffTrainConfig, resume: bool = False, quiet: bool = False) -> DiffusionTrainer:
    init_distributed()
    trainer = DiffusionTrainer(cfg, quiet=quiet)
    try:
        trainer.fit(resume=resume)
    finally:
        finish_distributed()
    return trainer
