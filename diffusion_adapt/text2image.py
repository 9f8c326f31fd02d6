"""Text-to-image adaptation (Stable Diffusion layout): DreamBooth-style training with prior preservation, SVDiff
shifts on the UNet (and optionally the text encoder), and DomainStudio's text-to-image losses.

    python -m diffusion_adapt train --config configs/<t2i>.yaml        # exp.trainer: t2i

A model is a ``StableDiffusionPipeline.save_pretrained`` folder (``unet/``, ``text_encoder/``, ``scheduler/``, and
``vae/`` for latent models, ``tokenizer/`` when present). Without a saved tokenizer, prompts are tokenised with the
``clip`` package's BPE (the same 49,408-token vocabulary as ``CLIPTokenizer``), which needs no download.

Each step (DomainStudio, text-to-image): instance images with ``instance_prompt`` and prior images with
``class_prompt`` (generated once by the base model and cached in the run folder); the DreamBooth loss
``MSE(ε̂_inst, ε) + λ_prior·MSE(ε̂_class, ε)`` at per-sample t; and, at one shared t, the predicted clean images of
both halves (decoded through the VAE with gradients) give the relative-distance terms (class half as the source
distribution, instance half as the adapted one) and the high-frequency MSE to the instance images. Unlike the
official script, the high-frequency MSE compares each prediction with its own training image (the published code
draws the targets from a second, independently shuffled loader).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from adapt_common.config import to_dict
from adapt_common.config_sections import ExpSection, LoggingSection, base_setting, section, setting
from adapt_common.datasets import ImageSource
from adapt_common.image_io import save_grid
from adapt_common.loop import (LoopTrainer, finish_distributed, init_distributed, optimiser_step, rng_state,
                                   set_rng_state, set_threads, world_info)
from . import svdiff
from .losses import haar_hf, pair_kl, predicted_x0
from .models import ModelLoadError, model_hash
from .sampling import _ddim, noise_from_seeds


@dataclass
class T2IModel:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    scheduler: object
    vae: torch.nn.Module | None = None
    tokenizer: object | None = None

    @property
    def latent_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215)) if self.vae is not None else 1.0

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        n = int(self.text_encoder.config.max_position_embeddings)
        if self.tokenizer is not None:
            return self.tokenizer(list(texts), padding="max_length", max_length=n, truncation=True,
                                  return_tensors="pt").input_ids
        import clip
        vocab = int(self.text_encoder.config.vocab_size)
        if vocab != 49408:
            raise ModelLoadError(f"the model has no tokenizer/ folder and its text encoder's vocabulary has {vocab} "
                                 "tokens, not CLIP's 49,408: save its tokenizer with the pipeline")
        return clip.tokenize(list(texts), context_length=n, truncate=True)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenize(texts).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(ids).last_hidden_state

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return images
        with torch.no_grad():
            return self.vae.encode(images).latent_dist.sample() * self.latent_scale

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.vae is None else self.vae.decode(latents / self.latent_scale).sample


def is_t2i_folder(path: str | Path) -> bool:
    """Whether ``path`` is a text-to-image (Stable Diffusion layout) folder: ``unet/`` and ``text_encoder/``."""
    p = Path(path)
    return (p / "unet").is_dir() and (p / "text_encoder").is_dir()


def _config(folder: Path) -> dict:
    """A part's config.json; empty when it is missing or unreadable (loading then says what is wrong)."""
    import json
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}
    return config if isinstance(config, dict) else {}


def _config_class(config: dict, key: str) -> str | None:
    """The class a config names under ``key`` (diffusers' ``_class_name``; transformers' ``architectures``, its
    first entry); None when it names none."""
    value = config.get(key)
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, str) else None


#: (subfolder, config key, the class load_t2i loads it as): the parts of a Stable-Diffusion-layout folder whose
#: config names a class. A part of another class would load with its weights partly unused and the rest random.
T2I_PARTS = (("unet", "_class_name", "UNet2DConditionModel"),
             ("text_encoder", "architectures", "CLIPTextModel"),
             ("vae", "_class_name", "AutoencoderKL"))


def check_t2i_folder(path: str | Path) -> None:
    """A ModelLoadError, saying what was found, what was expected and what to do, unless ``path`` has the layout
    and the architectures :func:`load_t2i` loads: ``unet/`` and ``text_encoder/``, and no part whose config.json
    names another class than a Stable Diffusion pipeline's (``UNet2DConditionModel``, a ``CLIPTextModel`` of model
    type clip_text_model, ``AutoencoderKL``). A config that names no class is left to loading."""
    p = Path(path)
    if not (p / "unet").is_dir() or not (p / "text_encoder").is_dir():
        raise ModelLoadError(f"{p}: not a text-to-image model folder (needs unet/ and text_encoder/, as "
                             "StableDiffusionPipeline.save_pretrained writes)")
    todo = "for text to image, choose a StableDiffusionPipeline.save_pretrained folder"
    for part, key, expected in T2I_PARTS:
        if not (p / part).is_dir():
            continue
        config = _config(p / part)
        found = _config_class(config, key)
        model_type = config.get("model_type") if part == "text_encoder" else None  # transformers' model family
        if found in (None, expected) and model_type in (None, "clip_text_model", "clip"):
            continue
        if found in (None, expected):
            found = f"{model_type} model"
        hint = ""
        if part == "unet" and found == "UNet2DModel":
            hint = (f"; an unconditional UNet2DModel samples without a prompt from its own folder ({p / 'unet'}) "
                    "or from a DDPMPipeline folder (model_index.json and unet/, no text_encoder/)")
        raise ModelLoadError(f"{p}: {part}/ holds a {found}, not the {expected} of a Stable-Diffusion-layout folder "
                             f"(the model is of another architecture: loaded as a {expected}, its weights would be "
                             f"partly unused and the rest random){hint}; {todo}")


def load_t2i(path: str | Path, device="cpu") -> T2IModel:
    """The parts of a Stable-Diffusion-layout folder; a ModelLoadError for a folder of another layout or
    architecture (:func:`check_t2i_folder`, before anything loads) or one that does not load."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel
    p = Path(path)
    check_t2i_folder(p)
    try:
        unet = UNet2DConditionModel.from_pretrained(p, subfolder="unet", local_files_only=True)
        te = CLIPTextModel.from_pretrained(p / "text_encoder", local_files_only=True)
        sched = DDPMScheduler.from_pretrained(p, subfolder="scheduler", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(p, subfolder="vae", local_files_only=True) if (p / "vae").is_dir() else None
        tok = None
        if (p / "tokenizer").is_dir():
            from transformers import CLIPTokenizer
            tok = CLIPTokenizer.from_pretrained(p / "tokenizer", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{p}: could not load the text-to-image model ({str(e).splitlines()[0]})") from e
    for m in (unet, te, vae):
        if m is not None:
            m.to(device).eval().requires_grad_(False)
    return T2IModel(unet=unet, text_encoder=te, scheduler=sched, vae=vae, tokenizer=tok)


def save_t2i(model: T2IModel, path: str | Path) -> Path:
    path = Path(path)
    model.unet.save_pretrained(path / "unet")
    model.text_encoder.save_pretrained(path / "text_encoder")
    model.scheduler.save_pretrained(path / "scheduler")
    if model.vae is not None:
        model.vae.save_pretrained(path / "vae")
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}\n')
    return path


@torch.no_grad()
def t2i_sample(model: T2IModel, prompts: list[str], noise: torch.Tensor, steps: int = 50,
               guidance: float = 5.0, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """DDIM with classifier-free guidance (the unconditional branch is the empty prompt; guidance 1 runs the
    conditional model alone); images in [-1, 1]. ``callback(i, n)`` after each of the n DDIM steps (i from 0), as
    :func:`diffusion_adapt.sampling.ddim_sample`'s."""
    sched = _ddim(model.scheduler, steps)
    cond = model.encode_prompts(prompts)
    uncond = model.encode_prompts([""] * len(prompts)) if guidance != 1.0 else None  # 1: no guidance needed
    x = noise.to(cond.device)
    for i, t in enumerate(sched.timesteps):
        if uncond is None:
            eps = model.unet(x, t, encoder_hidden_states=cond).sample
        else:
            e_u, e_c = model.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            eps = e_u + guidance * (e_c - e_u)
        x = sched.step(eps, t, x).prev_sample
        if callback is not None:
            callback(i, len(sched.timesteps))
    return model.to_images(x).clamp(-1, 1)


def apply_t2i_shifts(model: T2IModel, unet_files: list[tuple[str, float]] = (),
                     text_encoder_files: list[tuple[str, float]] = ()) -> T2IModel:
    """Shift the UNet and the text encoder (in place) by weighted sums of shift files (the two files a text-to-image
    SVDiff run writes: ``spectral_shifts.safetensors`` and ``spectral_shifts_te.safetensors``)."""
    if unet_files:
        svdiff.apply_shift_files(model.unet, list(unet_files))
    if text_encoder_files:
        svdiff.apply_shift_files(model.text_encoder, list(text_encoder_files))
    return model


def bake_t2i(model: T2IModel) -> T2IModel:
    """Every shifted weight replaced by its value: a plain model again (saved by :func:`save_t2i`)."""
    svdiff.bake(model.unet)
    svdiff.bake(model.text_encoder)
    return model


def _encode_exact(model: T2IModel, images: torch.Tensor) -> torch.Tensor:
    """Latents of ``images`` for inversion: the VAE posterior's mean (a sample would make the round trip noisy)."""
    if model.vae is None:
        return images
    return model.vae.encode(images).latent_dist.mean * model.latent_scale


@torch.no_grad()
def t2i_invert(model: T2IModel, images: torch.Tensor, prompt: str, steps: int = 50,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """x_T of ``images`` ([-1, 1], the VAE's size) by the deterministic DDIM ODE conditioned on ``prompt`` (no
    guidance: the inverse of :func:`t2i_decode` with ``guidance=1``); ``callback(i, n)`` after each step, as
    :func:`t2i_sample`'s."""
    from diffusers import DDIMInverseScheduler

    from .sampling import _schedule_args
    device = next(model.unet.parameters()).device
    inv = DDIMInverseScheduler(**_schedule_args(model.scheduler))
    inv.set_timesteps(steps)
    cond = model.encode_prompts([prompt] * images.shape[0])
    x = _encode_exact(model, images.to(device).float())
    for i, t in enumerate(inv.timesteps):
        x = inv.step(model.unet(x, t, encoder_hidden_states=cond).sample, t, x).prev_sample
        if callback is not None:
            callback(i, len(inv.timesteps))
    return x


@torch.no_grad()
def t2i_decode(model: T2IModel, latents: torch.Tensor, prompt: str, steps: int = 50,
               guidance: float = 1.0, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Images in [-1, 1] from x_T by the DDIM ODE conditioned on ``prompt``, with classifier-free ``guidance``
    (1: none, the exact inverse of :func:`t2i_invert`); ``callback(i, n)`` after each step, as :func:`t2i_sample`'s."""
    return t2i_sample(model, [prompt] * latents.shape[0], latents, steps, guidance, callback=callback)


@torch.no_grad()
def t2i_translate(source: T2IModel, target: T2IModel, images: torch.Tensor, prompt: str,
                  target_prompt: str | None = None, steps: int = 50, guidance: float = 1.0) -> torch.Tensor:
    """DDIB with prompts: invert ``images`` with the source model and ``prompt``, decode with the target model and
    ``target_prompt`` (default: the same prompt)."""
    return t2i_decode(target, t2i_invert(source, images, prompt, steps), target_prompt or prompt, steps, guidance)


@dataclass
class T2IData:
    source: str = setting("synthfaces:sketch@10", "the instance images: a folder or synthfaces:<domain>@<shots>")
    instance_prompt: str = setting("a sks sketch of a face", "the prompt of the instance images")
    class_prompt: str = setting("a photo of a face", "the prompt of the prior images (the base model's own class)")
    num_class_images: int = setting(50, "prior images the base model generates once (cached in the run folder)")
    hflip: bool = setting(True, "random horizontal flips")


@dataclass
class T2ITraining:
    parameterization: str = setting("svdiff", "what trains: svdiff (spectral shifts) or full")
    train_text_encoder: bool = setting(False, "train the text encoder too (its own shift file with svdiff)")
    iters: int = setting(500, "training steps")
    batch: int = setting(2, "instance images per step (and as many prior images)")
    lr: float = setting(5e-6, "AdamW learning rate of full fine-tuning (DomainStudio's recipe)")
    lr_shift: float = setting(1e-3, "SVDiff: learning rate of the spectral shifts")
    lr_1d: float = setting(1e-6, "SVDiff: learning rate of the norm shifts")
    norm_shifts: str = setting("public", "SVDiff norm shifts: public (one value per norm, as svdiff-pytorch), "
                                         "per_channel or none")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    grad_clip: float = setting(1.0, "the largest gradient norm (0: no clipping)")


@dataclass
class T2ILoss:
    prior: float = setting(1.0, "weight of DreamBooth's prior preservation (the class images' noise MSE)")
    pair: float = setting(100.0, "DomainStudio: weight of the relative-distance term (class half as the source, "
                                 "instance half as the adapted; 0: off)")
    hf_pair: float = setting(100.0, "DomainStudio: weight of the same term on the high-frequency (Haar) details")
    hf_mse: float = setting(0.1, "DomainStudio: weight of the MSE between the high frequencies of the instances' "
                                 "predictions and of the instance images")


@dataclass
class T2ILogging(LoggingSection):
    sample_steps: int = setting(30, "DDIM steps of the sample grids and of the prior images")
    guidance: float = setting(5.0, "classifier-free guidance scale of the sample grids and of the prior images")


@dataclass
class T2IConfig:
    """``python -m diffusion_adapt train`` with ``exp.trainer: t2i`` (writes no evaluation report)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"training.pretrained": "base"}

    exp: ExpSection = section(ExpSection, "the run", trainer="t2i", name="t2i", run_dir="runs/t2i")
    base: str = base_setting("")
    data: T2IData = section(T2IData, "the instance and prior images")
    training: T2ITraining = section(T2ITraining, "what trains, and how")
    loss: T2ILoss = section(T2ILoss, "DreamBooth's and DomainStudio's losses")
    # 4 images per grid, not 8: a text-to-image grid is two rows (instance and class prompt) of a large model with
    # classifier-free guidance, the costliest samples of any trainer.
    logging: T2ILogging = section(T2ILogging, "log, sample and checkpoint cadences", n_samples=4)


class T2ITrainer(LoopTrainer):
    def __init__(self, cfg: T2IConfig, *, quiet: bool = False):
        self.cfg = cfg
        self.rank, self.world = world_info()
        self.quiet = quiet or self.rank != 0
        tr = cfg.training
        if tr.parameterization not in ("svdiff", "full"):
            raise ValueError(f"training.parameterization={tr.parameterization!r}; choose svdiff or full")
        if tr.norm_shifts not in svdiff.NORM_CONVENTIONS:
            raise ValueError(f"training.norm_shifts={tr.norm_shifts!r}; choose one of {svdiff.NORM_CONVENTIONS}")
        if not cfg.base:
            raise ValueError("base: give the text-to-image model folder to adapt (a StableDiffusionPipeline folder)")
        set_threads(cfg.exp.threads, "exp.threads")
        torch.manual_seed(cfg.exp.seed)
        self.device = torch.device(cfg.exp.device)
        self.model = load_t2i(cfg.base, self.device)
        self.base_hash = model_hash(self.model.unet)
        self.run_dir = Path(cfg.exp.run_dir)
        m = self.model
        factor = 2 ** (len(m.vae.config.block_out_channels) - 1) if m.vae is not None else 1  # VAE downsampling
        size = self.image_size = m.unet.config.sample_size * factor
        self.instances = ImageSource(cfg.data.source, size, quiet=self.quiet)
        self.class_images = self._prior_images()
        modules = [m.unet] + ([m.text_encoder] if tr.train_text_encoder else [])
        groups = []
        for mod in modules:
            if tr.parameterization == "svdiff":
                svdiff.add_spectral_shifts(mod, norms=tr.norm_shifts)
                groups += svdiff.shift_parameter_groups(mod, tr.lr_shift, tr.lr_1d)
            else:
                mod.requires_grad_(True)
                groups.append({"params": list(mod.parameters()), "lr": tr.lr})
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=tr.weight_decay)
        self.step, self.elapsed = 0, 0.0
        lat = m.unet.config.sample_size
        self.sample_noise = noise_from_seeds(range(cfg.logging.sample_seed, cfg.logging.sample_seed +
                                                   cfg.logging.n_samples), (m.unet.config.in_channels, lat, lat))

    def _prior_images(self) -> torch.Tensor:
        """Class-prompt images of the base model, generated once and cached in the run folder."""
        path = self.run_dir / "class_images.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        n = self.cfg.data.num_class_images
        lat = self.model.unet.config.sample_size
        noise = noise_from_seeds(range(10_000, 10_000 + n), (self.model.unet.config.in_channels, lat, lat))
        images = torch.cat([t2i_sample(self.model, [self.cfg.data.class_prompt] * len(chunk), chunk,
                                       self.cfg.logging.sample_steps, self.cfg.logging.guidance)
                            for chunk in noise.split(8)]).cpu()
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            torch.save(images, path)
        return images

    def train_step(self) -> dict:
        cfg, tr, lc = self.cfg, self.cfg.training, self.cfg.loss
        m = self.model
        b = tr.batch
        inst = self.instances.batch(self.step, b, self.rank, self.world, cfg.exp.seed).to(self.device)
        idx = torch.randint(len(self.class_images), (b,))
        cls = self.class_images[idx].to(self.device)
        x = torch.cat([inst, cls])
        if cfg.data.hflip:
            flip = (torch.rand(x.shape[0]) < 0.5).reshape(-1, 1, 1, 1).to(x.device)
            x = torch.where(flip, x.flip(3), x)
        z0 = m.to_latents(x)
        text = m.encode_prompts([cfg.data.instance_prompt] * b + [cfg.data.class_prompt] * b)
        if not tr.train_text_encoder:
            text = text.detach()
        T = m.scheduler.config.num_train_timesteps
        eps = torch.randn_like(z0)
        t = torch.randint(0, T, (2 * b,), device=self.device)
        pred = m.unet(m.scheduler.add_noise(z0, eps, t), t, encoder_hidden_states=text).sample
        l_inst, l_prior = F.mse_loss(pred[:b], eps[:b]), F.mse_loss(pred[b:], eps[b:])
        loss = l_inst + lc.prior * l_prior
        stats = {"instance": l_inst.item(), "prior": l_prior.item()}
        if lc.pair > 0 or lc.hf_pair > 0 or lc.hf_mse > 0:
            t1 = torch.randint(0, T, (1,), device=self.device).expand(2 * b)
            z_t = m.scheduler.add_noise(z0, eps, t1)
            z0_hat = predicted_x0(z_t, m.unet(z_t, t1, encoder_hidden_states=text).sample,
                                  m.scheduler.alphas_cumprod.to(self.device)[t1])
            img = m.to_images(z0_hat)
            x_inst, x_cls = img[:b], img[b:]
            terms = {"pair": pair_kl(x_cls, x_inst) if b > 1 else None,
                     "hf_pair": pair_kl(haar_hf(x_cls), haar_hf(x_inst)) if b > 1 else None,
                     "hf_mse": (haar_hf(x_inst) - haar_hf(x[:b])).square().mean()}
            for k, v in terms.items():
                w = getattr(lc, k)
                if v is not None and w > 0:
                    loss = loss + w * v
                    stats[k] = v.item()
        optimiser_step(loss, self.opt, self.params, tr.grad_clip)
        stats["loss"] = loss.item()
        self.step += 1
        return stats

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed, "params": [p.detach().clone() for p in self.params],
                "opt": self.opt.state_dict(), "rng": rng_state(), "base_hash": self.base_hash}

    def load_state_dict(self, state: dict) -> None:
        if state["base_hash"] != self.base_hash:
            raise ValueError("the checkpoint adapts another base model; choose another exp.run_dir")
        svdiff.restore_trained(self.params, state["params"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    def write_samples(self, path: Path) -> Path:
        n = self.sample_noise.shape[0]
        with torch.no_grad():
            rows = [t2i_sample(self.model, [p] * n, self.sample_noise, self.cfg.logging.sample_steps,
                               self.cfg.logging.guidance)
                    for p in (self.cfg.data.instance_prompt, self.cfg.data.class_prompt)]
        return save_grid(torch.cat(rows).cpu(), path, nrow=n)

    def export(self, path: str | Path | None = None) -> list[Path]:
        """The result at ``path`` (default in the run folder): the UNet's shift file, and the text encoder's beside
        it as ``<name>_te.safetensors`` (svdiff), or the model folder (full)."""
        extra = {"steps": self.step, "instance_prompt": self.cfg.data.instance_prompt,
                 "training_config": to_dict(self.cfg)}
        if self.cfg.training.parameterization == "svdiff":
            unet_file = Path(path or self.run_dir / svdiff.SHIFTS_FILE)
            out = [svdiff.SpectralShifts.from_model(self.model.unet, base_hash=self.base_hash,
                                                    extra=extra).save_pretrained(unet_file)]
            if self.cfg.training.train_text_encoder:
                te = svdiff.SpectralShifts.from_model(self.model.text_encoder,
                                                      base_hash=model_hash(self.model.text_encoder), extra=extra)
                out.append(te.save_pretrained(unet_file.with_name(f"{unet_file.stem}_te{unet_file.suffix}")))
            return out
        return [save_t2i(self.model, path or self.run_dir / "model")]

    def fit(self, resume: bool = False) -> dict:
        self.start(resume)
        self._log(f"text-to-image {self.cfg.training.parameterization}: {sum(p.numel() for p in self.params):,} "
                  f"trainable values; {len(self.class_images)} prior images")
        self.loop(self.cfg.training.iters, resume)
        out = self.export() if self.rank == 0 else []
        return {"steps": self.step, "files": [str(p) for p in out]}


def train(cfg: T2IConfig, resume: bool = False, quiet: bool = False) -> T2ITrainer:
    init_distributed()
    trainer = T2ITrainer(cfg, quiet=quiet)
    try:
        trainer.fit(resume=resume)
    finally:
        finish_distributed()
    return trainer
