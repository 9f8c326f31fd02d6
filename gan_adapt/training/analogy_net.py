"""Training the learned image analogy (``exp.trainer: analogy_net``; the model is :mod:`adapt_common.analogy_net`).

    python -m gan_adapt train --config configs/analogy_net_synthfaces.yaml [key=value ...] [--resume]

The source generator draws a bank of faces once (``data.bank`` of them, from ``exp.seed``). Each step takes pairs
of different faces (A, B) from the bank, puts both faces of a pair in one random procedural style of their own
(:func:`adapt_common.random_styles.paired_random_styles`; ``data.p_identity`` of the pairs stay unstyled), inverts
A' = T(A) with the style encoder (``encoder``) into A_inv = G(E(A')), what a one-shot user has, and trains the net
to predict T(B) from (A_inv, A', B): ``loss.l1`` × the mean L1 (0..1 scale).

Outputs: ``analogy_net.safetensors`` (+ manifest: the base generator's and the encoder's hashes, steps, the config),
``samples/`` grids (rows: example A', face B, the net's B', the true B'), ``log.csv``, ``checkpoint.pt``; with
``evaluation.n > 0``, ``eval.json``: for each SynthFaces style of ``evaluation.styles`` (validation by default),
the ground-truth gap closed on ``evaluation.n`` generated faces by the net and by the colour map, both from
``evaluation.refs`` references inverted by the encoder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from adapt_common.analogy_net import AnalogyNet, AnalogyNetConfig
from adapt_common.config import to_dict
from adapt_common.config_sections import EvaluationSection, ExpSection, LoggingSection, base_setting, section, setting
from adapt_common.image_io import save_grid
from adapt_common.loop import LoopTrainer, optimiser_step, rng_state, set_rng_state, set_threads
from adapt_common.random_styles import paired_random_styles
from .clip_guided import DEFAULT_SOURCE
from .encoder import generated_faces

DEFAULT_ENCODER = "checkpoints/synthfaces_encoder.safetensors"


@dataclass
class AnalogyNetData:
    bank: int = setting(8192, "generated faces drawn once from exp.seed and paired and restyled every step")
    p_identity: float = setting(0.05, "fraction of training pairs left unstyled")
    max_ops: int = setting(3, "most operations (of different kinds) in one random style")
    invert: bool = setting(True, "give the net the encoder's inversion of the styled example as its source face "
                                 "(what a one-shot user has); off: the true source face")


@dataclass
class AnalogyNetNet:
    size: int = setting(0, "the working size (a power of two; 0: the generator's size, at most 256)", minimum=0)
    width: int = setting(24, "channels at the working size, doubled at each of the two halvings")
    style_dim: int = setting(128, "size of the example pair's code")
    degree: int = setting(3, "degree of the colour map fitted on the example pair (the net's starting point)")


@dataclass
class AnalogyNetTraining:
    iters: int = setting(3000, "training steps")
    batch: int = setting(16, "pairs per step")
    lr: float = setting(0.001, "Adam learning rate (cosine decay to 5 % of it)")
    betas: list = setting([0.9, 0.99], "Adam betas")


@dataclass
class AnalogyNetLoss:
    l1: float = setting(1.0, "weight of the mean L1 (0..1 scale) between the net's B' and the true T(B)")


@dataclass
class AnalogyNetEval(EvaluationSection):
    styles: list = setting(["validation"], "SynthFaces styles of the report, or a family name (validation)")
    refs: int = setting(2, "reference images per style (the first of its few-shot stream)", minimum=1)


@dataclass
class AnalogyNetTrainConfig:
    """``python -m gan_adapt train`` with ``exp.trainer: analogy_net``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {}

    exp: ExpSection = section(ExpSection, "the run", trainer="analogy_net", name="analogy_net",
                              run_dir="runs/analogy_net")
    base: str = base_setting(DEFAULT_SOURCE)
    encoder: str = setting(DEFAULT_ENCODER, "the style encoder that inverts each styled example (a file of "
                                            "exp.trainer: encoder, trained for this generator; empty: none, with "
                                            "data.invert=false and no report)")
    data: AnalogyNetData = section(AnalogyNetData, "the training pairs: the generator's faces, in random styles")
    net: AnalogyNetNet = section(AnalogyNetNet, "the analogy network")
    training: AnalogyNetTraining = section(AnalogyNetTraining, "the optimisation")
    loss: AnalogyNetLoss = section(AnalogyNetLoss, "the losses")
    logging: LoggingSection = section(LoggingSection, "log, sample and checkpoint cadences", sample_every=500,
                                      checkpoint_every=250, log_every=50)
    evaluation: AnalogyNetEval = section(AnalogyNetEval, "the end-of-run report on SynthFaces styles the net never "
                                                         "saw")


class AnalogyNetTrainer(LoopTrainer):
    def __init__(self, cfg: AnalogyNetTrainConfig, *, quiet: bool = False):
        from ..encoder import StyleEncoder
        from ..formats import load_generator
        self.cfg, self.quiet = cfg, quiet
        set_threads(cfg.exp.threads, "exp.threads")
        if cfg.data.bank < 2 * cfg.training.batch:
            raise ValueError(f"data.bank ({cfg.data.bank}) must hold at least two batches ({cfg.training.batch})")
        if cfg.evaluation.features != "auto":
            raise ValueError("evaluation.features: the analogy net's report has no FID/KID; leave it unset")
        self.device = torch.device(cfg.exp.device)
        self.g = load_generator(cfg.base, device=self.device).eval().requires_grad_(False)
        if not cfg.encoder and (cfg.data.invert or cfg.evaluation.n > 0):
            raise ValueError("data.invert and the report (evaluation.n > 0) invert styled faces with the style "
                             "encoder: give encoder=PATH (a file of exp.trainer: encoder for this generator), or set "
                             "data.invert=false evaluation.n=0")
        self.encoder = None
        if cfg.encoder:
            self.encoder = StyleEncoder.from_pretrained(cfg.encoder).to(self.device).requires_grad_(False)
            self.encoder.check_generator(self.g)
        torch.manual_seed(cfg.exp.seed)
        size = cfg.net.size or min(self.g.size, 256)
        self.net = AnalogyNet(AnalogyNetConfig(size=size, width=cfg.net.width, style_dim=cfg.net.style_dim,
                                               degree=cfg.net.degree)).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.training.lr, betas=tuple(cfg.training.betas))
        self.styles_gen = torch.Generator().manual_seed(cfg.exp.seed + 1)
        self.step, self.elapsed = 0, 0.0
        self.run_dir = Path(cfg.exp.run_dir)
        self._bank: torch.Tensor | None = None  # drawn at the first step (an export needs none)
        n = cfg.logging.n_samples
        _, faces = generated_faces(self.g, 2 * n, cfg.logging.sample_seed)
        self.sample = self.examples(faces[:n], faces[n:], torch.Generator().manual_seed(cfg.logging.sample_seed),
                                    p_identity=0.0)

    @property
    def bank(self) -> torch.Tensor:
        """The training bank of ``data.bank`` faces from ``exp.seed``: the same whenever it is drawn, so a resumed
        run draws the one an uninterrupted run had."""
        if self._bank is None:
            self._bank = generated_faces(self.g, self.cfg.data.bank, self.cfg.exp.seed + 2)[1]
        return self._bank

    @torch.no_grad()
    def examples(self, a: torch.Tensor, b: torch.Tensor, gen: torch.Generator, p_identity: float
                 ) -> tuple[torch.Tensor, ...]:
        """(A's source face as the net gets it, A', B, B') for faces A and B in paired random styles."""
        styled_a, styled_b = paired_random_styles(a, b, gen, p_identity=p_identity, max_ops=self.cfg.data.max_ops)
        source = a
        if self.cfg.data.invert:
            w = self.encoder(styled_a.to(self.device))
            source = self.g.generate(w=w).clamp(-1, 1).cpu()
        return source, styled_a, b, styled_b

    def train_step(self) -> dict:
        tr, lc = self.cfg.training, self.cfg.loss
        for group in self.opt.param_groups:  # cosine decay to 5 %
            t = torch.tensor(self.step / max(tr.iters, 1) * torch.pi)
            group["lr"] = tr.lr * (0.525 + 0.475 * torch.cos(t).item())
        bank = self.bank
        idx = torch.randperm(bank.shape[0])[:2 * tr.batch]  # two different faces per pair
        source, styled_a, b, styled_b = (x.to(self.device) for x in self.examples(
            bank[idx[:tr.batch]], bank[idx[tr.batch:]], self.styles_gen, self.cfg.data.p_identity))
        self.net.train()
        pred = self.net(source, styled_a, b)
        l1 = (pred - styled_b).abs().mean() / 2
        loss = lc.l1 * l1
        optimiser_step(loss, self.opt, list(self.net.parameters()))
        self.step += 1
        return {"l1": l1.item(), "loss": loss.item()}

    # -- state ---------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed, "net": self.net.state_dict(),
                "opt": self.opt.state_dict(), "rng": rng_state(), "styles_rng": self.styles_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.styles_gen.set_state(state["styles_rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    # -- outputs -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def write_samples(self, path: Path) -> Path:
        """Rows: the example A', face B, the net's B' from (A's inversion, A', B), the true B'."""
        self.net.eval()
        source, styled_a, b, styled_b = self.sample
        pred = self.net(source.to(self.device), styled_a.to(self.device), b.to(self.device)).cpu()
        return save_grid(torch.cat([styled_a, b, pred, styled_b]), path, nrow=b.shape[0])

    def export(self, path: str | Path | None = None) -> Path:
        """The net with its manifest (default: ``analogy_net.safetensors`` in the run folder)."""
        from adapt_common.files import tensors_hash
        return self.net.save_pretrained(path or self.run_dir / AnalogyNet.FILE_NAME, steps=self.step,
                                        base_generator={"hash": tensors_hash(self.g.state_dict()),
                                                        "size": self.g.size},
                                        encoder=({"hash": self.encoder.manifest.get("content_hash"),
                                                  "path": self.cfg.encoder} if self.encoder is not None else None),
                                        training_config=to_dict(self.cfg))

    @torch.no_grad()
    def evaluate(self, n: int) -> dict:
        """Per style: the ground-truth gap closed on ``n`` generated faces (a stream of their own, seed 100000 +
        exp.seed, apart from the training bank's) by the net and by the colour map, both from the encoder's inversion
        of each reference."""
        from adapt_common import synthfaces as sf
        from adapt_common.colour_map import ColourMap

        def gap_closed(images, faces, truth):  # 1 - error / the error of doing nothing
            return 1 - float((images - truth).abs().mean() / (faces - truth).abs().mean())
        ev = self.cfg.evaluation
        styles = sf.expand_families(ev.styles)
        self.net.eval()
        _, faces = generated_faces(self.g, n, 100_000 + self.cfg.exp.seed)
        out = {}
        for style in styles:
            truth = sf.apply_domain(faces, style).clamp(-1, 1)
            rows = {"net": [], "colour_map": []}
            for i in range(ev.refs):
                ref = sf.fewshot_image(style, i, size=self.g.size)
                src = self.encoder.invert(self.g, ref).image.clamp(-1, 1).cpu()
                rows["net"].append(gap_closed(self.net.bind(src, ref)(faces), faces, truth))
                rows["colour_map"].append(gap_closed(ColourMap.fit(src, ref)(faces), faces, truth))
            out[style] = {k: sum(v) / len(v) for k, v in rows.items()}
        out["mean"] = {k: sum(o[k] for o in out.values()) / len(out) for k in ("net", "colour_map")}
        return out

    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.start(resume)
        n_params = sum(p.numel() for p in self.net.parameters())
        self._log(f"analogy net: {n_params:,} parameters, working size {self.net.config.size} px; bank of "
                  f"{cfg.data.bank} generated faces")
        self.loop(cfg.training.iters, resume)
        result = {"steps": self.step, "wall_time_s": self.elapsed, "file": str(self.export())}
        if cfg.evaluation.n > 0:
            result["eval"] = self.evaluate(cfg.evaluation.n)
            (self.run_dir / "eval.json").write_text(json.dumps(result["eval"], indent=2))
            self._log("ground-truth gap closed (net / colour map): " +
                      ", ".join(f"{k} {v['net']:.3f}/{v['colour_map']:.3f}" for k, v in result["eval"].items()))
        self.result = result
        return result


def train(cfg: AnalogyNetTrainConfig, resume: bool = False, quiet: bool = False) -> AnalogyNetTrainer:
    trainer = AnalogyNetTrainer(cfg, quiet=quiet)
    trainer.fit(resume=resume)
    return trainer
