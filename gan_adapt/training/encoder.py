"""Training the style-invariant encoder (``exp.trainer: encoder``; the model is :mod:`gan_adapt.encoder`).

    python -m gan_adapt train --config configs/encoder_synthfaces.yaml [key=value ...] [--resume]

The source generator draws a bank of (w, G(w)) pairs once (``data.bank`` of them, from ``exp.seed``). Each step
takes a batch from the bank, gives every image a random procedural style of its own
(:mod:`adapt_common.random_styles`; ``data.p_identity`` of them stay unstyled) and trains the encoder to return
the *unstyled* face's latent: ``loss.latent`` × the mean square error of E(T(G(w))) − w in units of W's spread,
plus ``loss.pixel`` × the L1 between G(E(T(G(w)))) and G(w) (through the frozen generator; slower).

Outputs: ``encoder.safetensors`` (+ manifest: the base generator's hash, steps, the config), ``samples/`` grids
(rows: source faces, their random styles, the encoder's reconstruction of the source from the styled image),
``log.csv``, ``checkpoint.pt``; with ``evaluation.n > 0``, ``eval.json``: for each SynthFaces validation style, the
L1 between G(E(reference)) and the reference's true source face over ``evaluation.n`` rendered faces, beside
the same for unstyled faces and for the average face (doing nothing).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from adapt_common.config import to_dict
from adapt_common.config_sections import EvaluationSection, ExpSection, LoggingSection, base_setting, section, setting
from adapt_common.image_io import save_grid
from adapt_common.loop import LoopTrainer, optimiser_step, rng_state, set_rng_state, set_threads
from adapt_common.random_styles import random_styles
from ..encoder import StyleEncoder
from .clip_guided import DEFAULT_SOURCE


@torch.no_grad()
def generated_faces(g, n: int, seed: int, resize=None) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents w [n, D] of ``g`` from ``seed`` and their images [n, 3, H, W] in [-1, 1] (stored noise; ``resize``
    applied to each batch), both on the CPU: the training banks of the encoder and the analogy net."""
    gen = torch.Generator().manual_seed(seed)
    device = next(g.parameters()).device
    ws, xs = [], []
    for i in range(0, n, 64):
        z = torch.randn(min(64, n - i), g.style_dim, generator=gen).to(device)
        w = g.get_latent(z)
        x = g.generate(w=w).clamp(-1, 1)
        ws.append(w.cpu())
        xs.append((resize(x) if resize is not None else x).cpu())
    return torch.cat(ws), torch.cat(xs)


@dataclass
class EncoderData:
    bank: int = setting(8192, "generated (latent, image) pairs drawn once from exp.seed and restyled every step")
    p_identity: float = setting(0.1, "fraction of training images left unstyled")
    max_ops: int = setting(3, "most operations (of different kinds) in one random style")


@dataclass
class EncoderNet:
    input_size: int = setting(0, "images are resized to this before encoding (a power of two; 0: the generator's "
                                 "size, at most 256)")
    width: int = setting(16, "channels of the first block, doubled at each halving")
    max_width: int = setting(256, "most channels of a block")


@dataclass
class EncoderTraining:
    iters: int = setting(6000, "training steps")
    batch: int = setting(32, "images per step")
    lr: float = setting(0.001, "Adam learning rate (cosine decay to 5 % of it)")
    betas: list = setting([0.9, 0.99], "Adam betas")


@dataclass
class EncoderLoss:
    latent: float = setting(1.0, "weight of the mean square latent error, in units of W's spread per dimension")
    pixel: float = setting(0.0, "weight of the pixel L1 between G(E(T(x))) and x, through the generator")


@dataclass
class EncoderEval(EvaluationSection):
    styles: list = setting(["validation"], "SynthFaces styles of the report, or a family name (validation)")
    offset: int = setting(0, "index of the report's first rendered face: 0 validation, 100000 test")


@dataclass
class EncoderTrainConfig:
    """``python -m gan_adapt train`` with ``exp.trainer: encoder``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {}

    exp: ExpSection = section(ExpSection, "the run", trainer="encoder", name="encoder", run_dir="runs/encoder")
    base: str = base_setting(DEFAULT_SOURCE)
    data: EncoderData = section(EncoderData, "the training images: the generator's, in random styles")
    encoder: EncoderNet = section(EncoderNet, "the encoder network")
    training: EncoderTraining = section(EncoderTraining, "the optimisation")
    loss: EncoderLoss = section(EncoderLoss, "the losses")
    logging: LoggingSection = section(LoggingSection, "log, sample and checkpoint cadences", sample_every=500,
                                      checkpoint_every=500, log_every=50)
    evaluation: EncoderEval = section(EncoderEval, "the end-of-run report on SynthFaces styles the encoder never saw")


class EncoderTrainer(LoopTrainer):
    def __init__(self, cfg: EncoderTrainConfig, *, quiet: bool = False):
        from ..formats import load_generator
        self.cfg, self.quiet = cfg, quiet
        set_threads(cfg.exp.threads, "exp.threads")
        if cfg.data.bank < cfg.training.batch:
            raise ValueError(f"data.bank ({cfg.data.bank}) must hold at least one batch ({cfg.training.batch})")
        if cfg.evaluation.features != "auto":
            raise ValueError("evaluation.features: the encoder's report has no FID/KID; leave it unset")
        self.device = torch.device(cfg.exp.device)
        self.g = load_generator(cfg.base, device=self.device).eval().requires_grad_(False)
        torch.manual_seed(cfg.exp.seed)
        net = cfg.encoder
        self.encoder = StyleEncoder.for_generator(self.g, input_size=net.input_size or None, width=net.width,
                                                  max_width=net.max_width, seed=cfg.exp.seed).to(self.device)
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.training.lr, betas=tuple(cfg.training.betas))
        self.styles_gen = torch.Generator().manual_seed(cfg.exp.seed + 1)
        self.step, self.elapsed = 0, 0.0
        self.run_dir = Path(cfg.exp.run_dir)
        self._bank: tuple[torch.Tensor, torch.Tensor] | None = None  # drawn at the first step (an export needs none)
        self.sample_w, self.sample_x = self.draw(cfg.logging.n_samples, cfg.logging.sample_seed)
        self.sample_styled = random_styles(self.sample_x, torch.Generator().manual_seed(cfg.logging.sample_seed),
                                           p_identity=0.0, max_ops=cfg.data.max_ops)

    def draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n latents w [n, D] and their images at the encoder's input size [n, 3, s, s] (stored noise)."""
        return generated_faces(self.g, n, seed, self.encoder.to_input)

    @property
    def bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training bank (w, image) of ``data.bank`` faces from ``exp.seed``: the same whenever it is drawn, so a
        resumed run draws the one an uninterrupted run had."""
        if self._bank is None:
            self._bank = self.draw(self.cfg.data.bank, self.cfg.exp.seed + 2)
        return self._bank

    def train_step(self) -> dict:
        tr, lc, data = self.cfg.training, self.cfg.loss, self.cfg.data
        for group in self.opt.param_groups:  # cosine decay to 5 %
            t = torch.tensor(self.step / max(tr.iters, 1) * torch.pi)
            group["lr"] = tr.lr * (0.525 + 0.475 * torch.cos(t).item())
        bank_w, bank_x = self.bank
        idx = torch.randint(0, bank_w.shape[0], (tr.batch,))
        w, x = bank_w[idx].to(self.device), bank_x[idx]
        styled = random_styles(x, self.styles_gen, p_identity=data.p_identity, max_ops=data.max_ops).to(self.device)
        self.encoder.train()
        w_hat = self.encoder(styled)
        stats = {}
        loss = torch.zeros((), device=self.device)
        if lc.latent > 0:
            lat = self.encoder.normalised_error(w_hat, w)
            loss = loss + lc.latent * lat
            stats["latent"] = lat.item()
        if lc.pixel > 0:
            rec = self.encoder.to_input(self.g.generate(w=w_hat))
            pix = (rec - x.to(self.device)).abs().mean()
            loss = loss + lc.pixel * pix
            stats["pixel"] = pix.item()
        optimiser_step(loss, self.opt, list(self.encoder.parameters()))
        stats["loss"] = loss.item()
        self.step += 1
        return stats

    # -- state ---------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed, "encoder": self.encoder.state_dict(),
                "opt": self.opt.state_dict(), "rng": rng_state(), "styles_rng": self.styles_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.styles_gen.set_state(state["styles_rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    # -- outputs -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def write_samples(self, path: Path) -> Path:
        """Rows: source faces, a random style of each, the encoder's source face from the styled image."""
        self.encoder.eval()
        rec = self.encoder.to_input(self.g.generate(w=self.encoder(self.sample_styled.to(self.device))).clamp(-1, 1))
        return save_grid(torch.cat([self.sample_x, self.sample_styled, rec.cpu()]), path,
                         nrow=self.sample_x.shape[0])

    def export(self, path: str | Path | None = None) -> Path:
        """The encoder with its manifest (default: ``encoder.safetensors`` in the run folder)."""
        from adapt_common.files import tensors_hash
        return self.encoder.save_pretrained(path or self.run_dir / StyleEncoder.FILE_NAME, steps=self.step,
                                            base_generator={"hash": tensors_hash(self.g.state_dict()),
                                                            "size": self.g.size},
                                            training_config=to_dict(self.cfg))

    @torch.no_grad()
    def evaluate(self, n: int) -> dict:
        """Per style: mean L1 (0..1 scale) between G(E(styled face)) and the true source face, over n rendered
        SynthFaces faces from ``evaluation.offset``; "photo" is the unstyled faces, "average face" G(w_avg)."""
        from adapt_common import synthfaces as sf
        ev = self.cfg.evaluation
        styles = sf.expand_families(ev.styles)
        self.encoder.eval()
        truth, _ = sf.eval_set("photo", n, size=self.g.size, offset=ev.offset)

        def l1(images):
            return float(((images.clamp(-1, 1) - truth).abs() / 2).mean())

        avg = self.g.generate(w=self.encoder.w_avg[None].expand(n, -1).to(self.device)).cpu()
        out = {"average face": l1(avg)}
        for style in ["photo", *styles]:
            x, _ = sf.eval_set(style, n, size=self.g.size, offset=ev.offset)
            w = torch.cat([self.encoder(x[i:i + 64].to(self.device)) for i in range(0, n, 64)])
            out[style] = l1(torch.cat([self.g.generate(w=w[i:i + 64]) for i in range(0, n, 64)]).cpu())
        return out

    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.start(resume)
        n_params = sum(p.numel() for p in self.encoder.parameters())
        self._log(f"encoder: {n_params:,} parameters, input {self.encoder.config.input_size} px; bank of "
                  f"{cfg.data.bank} generated faces")
        self.loop(cfg.training.iters, resume)
        result = {"steps": self.step, "wall_time_s": self.elapsed, "file": str(self.export())}
        if cfg.evaluation.n > 0:
            result["eval"] = self.evaluate(cfg.evaluation.n)
            (self.run_dir / "eval.json").write_text(json.dumps(result["eval"], indent=2))
            self._log("source-face L1 of the encoder's reconstruction: " +
                      ", ".join(f"{k} {v:.4f}" for k, v in result["eval"].items()))
        self.result = result
        return result


def train(cfg: EncoderTrainConfig, resume: bool = False, quiet: bool = False) -> EncoderTrainer:
    trainer = EncoderTrainer(cfg, quiet=quiet)
    trainer.fit(resume=resume)
    return trainer
