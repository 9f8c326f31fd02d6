"""One-shot, CLIP-guided adaptation: a text prompt (StyleGAN-NADA) or one reference image (DiFa/MTG direction).

    python -m gan_adapt train --config configs/oneshot_<name>.yaml [key=value ...] [--resume]

The adapted generator G_B (a parameterization of the frozen source G_A: by default a StyleDomain direction,
6,048 numbers at 1024 px) and G_A render the same latents each step; the losses of
:mod:`adapt_common.clip_guidance` pull CLIP(G_B) − CLIP(G_A) along the domain direction while keeping the
batch's pairwise geometry (in-domain angle consistency). Defaults follow the papers (300 iterations, batch 4,
Adam lr 0.08 with betas (0.9, 0.999) and a 30-step warm-up for Δs, style mixing 0.9).

The run folder gets ``config.yaml``, ``log.csv``, ``samples/stepNNNNNN.png`` (source row over adapted row at
fixed latents), an atomic ``checkpoint.pt`` every ``checkpoint_every`` steps (``--resume`` continues exactly),
``before_after.png``, and the result: ``direction.safetensors`` for ``direction`` / ``dommod`` (else
``adapter.safetensors``), written before any evaluation so that a failing evaluation never costs it. The target's
name (``target.domain``) defaults to the SynthFaces domain of ``synthfaces:<domain>`` or of that domain's own
prompt, else the reference image's file stem, else a short form of the prompt. With ``evaluation.n > 0``,
``eval/report.json`` holds, for a SynthFaces domain, the ground-truth domain error against T(G_A), FID/KID and CLIP
scores; for any other target only the CLIP scores (quality against the reference image or the prompt) and a note
of what was skipped. The numbers also go into the result's manifest.
"""
from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from adapt_common.clip_guidance import ClipGuide
from adapt_common.config import to_dict
from adapt_common.config_sections import EvaluationSection, ExpSection, LoggingSection, base_setting, section, setting
from adapt_common.image_io import load_image, save_grid
from adapt_common.loop import LoopHooks, LoopTrainer, rng_state, set_rng_state, set_threads
from ..parameterizations import DIRECTION_KINDS, Parameterization

DEFAULT_SOURCE = "checkpoints/synthfaces_stylegan2.safetensors"
#: What a source-domain inversion must not look like: the prompts of the SynthFaces domains other than the photo
#: source (styles the bundled CLIP knows; none of them is a validation or test style). At real scale, list styles
#: in words your CLIP reads.
CONTRAST_PROMPTS = ("a pencil sketch of a face", "a pop art painting of a face", "a pixel art image of a face",
                    "a negative photo of a face", "a sepia photo of a face", "a watercolor painting of a face",
                    "a photo of a zombie face", "a cartoon of a face", "a thermal image of a face", "a photo of a cat",
                    "a photo of a robot", "a tinted photo of a face", "a saturated photo of a face",
                    "a washed out photo of a face", "a black and white photo of a face", "a blurry photo of a face",
                    "a noisy photo of a face")


@dataclass
class TargetConfig:
    text: str = setting("", "the target prompt (text-guided), e.g. \"a pencil sketch of a face\"")
    source_text: str = setting("a photo of a face", "the source prompt of the text direction")
    image: str = setting("", "one reference image: a path, or synthfaces:<domain>[/<index>] (a SynthFaces few-shot "
                             "image)")
    more_images: list = setting([], "further reference images of the same style, as target.image: each is inverted "
                                    "and gets its own analogy (and mirror view), and the analogies are averaged "
                                    "(loss.analogy_l1 only; a few-shot analogy)")
    domain: str = setting("", "the target's name in reports and the result's manifest (default: the SynthFaces "
                              "domain of the image or prompt, the image's stem, or a short form of the prompt); a "
                              "SynthFaces domain name enables the ground-truth evaluation")
    templates: list = setting(["{}"], "prompt templates of the text direction, \"{}\" is the prompt")
    source_mean_n: int = setting(256, "source samples averaged for the image direction's anchor")
    invert_steps: int = setting(300, "steps inverting the reference into the source generator, for MTG's reference "
                                     "terms and the analogy")
    invert_space: str = setting("w+", "the latent space of the reference's inversion: w+ (closest reconstruction) or "
                                      "w (one row: least room to imitate the style)")
    invert_prompt_weight: float = setting(0.0, "a source-domain inversion: weight of the cross-entropy of reading the "
                                               "reconstruction as target.source_text among target.contrast_prompts "
                                               "(0: a plain inversion, which may reproduce the style itself)")
    contrast_prompts: list = setting(list(CONTRAST_PROMPTS), "the styles a source-domain inversion must not look "
                                                             "like (default: the other SynthFaces domains' prompts)")
    invert_encoder: str = setting("", "a style-invariant encoder file (exp.trainer: encoder) that inverts the "
                                      "reference to its source face in one pass, instead of the optimisation (the "
                                      "invert_* keys above then do not apply)")


@dataclass
class AnalogySection:
    steps: int = setting(600, "most training steps of the analogy's residual net; the count used is chosen on the "
                              "right half of the (inverted source, reference) pair, after fitting on the left half "
                              "(0: the colour map alone)", minimum=0)
    width: int = setting(32, "channels of the residual net")
    depth: int = setting(3, "conv layers of the residual net")
    degree: int = setting(3, "degree of the colour map's polynomial")
    lr: float = setting(0.002, "Adam learning rate of the residual net")
    mirror: bool = setting(False, "also fit an analogy on the mirror image of each reference, inverted on its own, "
                                  "and average them: the inversions err differently, the style is the same")
    shrink: float = setting(0.0, "k of the pull towards the unchanged face (needs two views or more: mirror, or "
                                 "target.more_images): the averaged analogy's change is scaled by signal^2 / (signal^2 "
                                 "+ k * disagreement^2 * 2 / views), measured on probe_faces source faces; 0: no "
                                 "pull", minimum=0)
    probe_faces: int = setting(16, "source faces (training latents) on which shrink measures the views' change and "
                                   "disagreement", minimum=1)
    net: str = setting("", "a learned analogy file (exp.trainer: analogy_net, trained on random procedural styles) "
                           "that gives each view's analogy from its (source face, reference) pair in one pass, "
                           "instead of a fit on the pair alone (steps, width, depth, degree and lr then do not "
                           "apply)")

    def describe(self, fit) -> str:
        """What :meth:`fit` measured (its second value), for a log line."""
        if fit is None:
            return f"learned ({self.net})"
        return (f"residual net trained {fit.steps} steps (chosen on the pair's right half: L1 {fit.holdout_best:.4f}, "
                f"colour map alone {fit.holdout_colour_map:.4f}, unchanged {fit.holdout_identity:.4f})")

    def fit(self, source_face: torch.Tensor, reference: torch.Tensor, seed: int, invert=None, source=None,
            more_references: list = ()):
        """(analogy, what the fit measured, the shrinkage or None) of this section's settings on one (source face,
        reference) pair: the one place the one-shot and the hypernetwork trainers turn the section into an
        :class:`adapt_common.analogy.ImageAnalogy`, or with ``mirror`` or ``more_references`` (further images of
        the style, [1, 3, H, W] each) an :class:`adapt_common.analogy.AnalogyEnsemble` of every reference and, with
        ``mirror``, its mirror image. ``invert`` (image -> its source face, as ``source_face`` was found) inverts
        the other views; ``shrink`` is measured on faces of the ``source`` generator, from training latents of their
        own random stream (seed ``seed``), so that the training's stream of latents stays as it was. The fit
        measured is the first pair's (None with ``net``: a learned analogy is not fitted)."""
        from adapt_common.analogy import AnalogyEnsemble, ImageAnalogy, shrinkage
        learned = None
        if self.net:
            from adapt_common.analogy_net import AnalogyNet
            learned = AnalogyNet.from_pretrained(self.net).to(source_face.device)

        def one(face, ref):
            if learned is not None:
                return learned.bind(face, ref), None
            return ImageAnalogy.fit(face, ref, steps=self.steps, lr=self.lr, degree=self.degree, width=self.width,
                                    depth=self.depth, seed=seed)
        if self.shrink > 0 and not self.mirror and not more_references:
            raise ValueError("analogy.shrink compares the analogies of several views of the style: set "
                             "analogy.mirror=true or give more reference images (or analogy.shrink=0)")
        analogy, fit = one(source_face, reference)
        if not self.mirror and not more_references:
            return analogy, fit, None
        if invert is None:
            raise ValueError("analogy.mirror and further references need the trainer's inversion to find each "
                             "view's source face")
        views = [reference.flip(-1)] if self.mirror else []
        for ref in more_references:
            views += [ref, ref.flip(-1)] if self.mirror else [ref]
        members = [analogy, *(one(invert(view).clamp(-1, 1), view)[0] for view in views)]
        shrunk = None
        if self.shrink > 0:
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(self.probe_faces, source.style_dim, generator=gen).to(source_face.device)
            with torch.no_grad():
                probe = source.generate(z).clamp(-1, 1)
            shrunk = shrinkage(members, probe, self.shrink)
        ensemble = AnalogyEnsemble(members, strength=shrunk.strength if shrunk else 1.0)
        return ensemble.requires_grad_(False).eval(), fit, shrunk


@dataclass
class OneShotTraining:
    parameterization: str = setting("direction", "what trains: a direction kind (direction, stylespace, dommod; "
                                                 "written as direction.safetensors) or any other parameterization "
                                                 "(adapter.safetensors)")
    block: int = setting(64, "the block size of the Affine+ / AffineLight+ weight offsets")
    rank: int = setting(5, "the rank of AffineLight+'s offsets")
    iters: int = setting(300, "training steps")
    batch: int = setting(4, "latents per step")
    lr: float | None = setting(None, "Adam learning rate; unset (null): the parameterization's one-shot rate from its "
                                     "spec (gan_adapt.parameterizations.SPECS: 0.08 for directions, 0.002 for full...)")
    betas: list | None = setting(None, "Adam betas; unset (null): the parameterization's (0.9, 0.999 for offsets; 0, "
                                       "0.999 when the generator's own weights train)")
    warmup_iters: int = setting(30, "steps of the linear learning-rate ramp from warmup_start_lr (0: none)")
    warmup_start_lr: float = setting(0.001, "the learning rate of the ramp's first step")
    mixing: float = setting(0.9, "probability of style mixing at a random layer")
    fast_math: bool = setting(False, "faster steps whose float rounding differs (channels-last generators, CLIP's "
                                     "last block on the class token only): 1.15x CPU time on one thread for the demo, "
                                     "each step the same within 1e-6, but the training grows any change of rounding "
                                     "to a few 1e-3 of a 300-step direction (4e-3 for the demo; a 1e-7 change of CLIP "
                                     "alone gave 3e-3); off: bit for bit the result of the step as first written")


@dataclass
class OneShotLoss:
    clip: list = setting(["synthfaces"], "the guiding CLIPs (names or paths); the losses are summed over them")
    clip_direction: float = setting(1.0, "weight of the CLIP-space direction loss: CLIP(G_B) - CLIP(G_A) along the "
                                         "target's direction (StyleGAN-NADA; formerly loss.direction)")
    indomain: float = setting(0.5, "weight of the in-domain angle consistency (the batch's pairwise CLIP geometry)")
    offsets_l2: float = setting(0.0, "weight of HyperDomainNet's norm of the trained vectors (mean square per layer)")
    # MTG's reference terms (image targets; they invert the reference into the source generator first):
    clip_ref: float = setting(0.0, "MTG: weight of 1 - cos(E(G_B(w_ref)), E(I_ref)) (image targets)")
    clip_within: float = setting(0.0, "MTG: weight of 1 - cos(E(G_B(z)) - E(I_ref), E(G_A(z)) - E(G_A(w_ref))) "
                                      "(image targets)")
    rec_l2: float = setting(0.0, "MTG: weight of MSE(G_B(w_ref), I_ref) (image targets)")
    analogy_l1: float = setting(0.0, "weight of the pixel L1 between G_B(w) and T̂(G_A(w)), T̂ the image analogy "
                                     "fitted on the (inverted source, reference) pair (image targets; section "
                                     "analogy)")
    truth_l1: float = setting(0.0, "PRIVILEGED, SynthFaces styles only: weight of the pixel L1 between G_B(w) and the "
                                   "ground truth T(G_A(w)) of the target style; with the CLIP weights at 0 this trains "
                                   "the oracle of the one-shot tables (the reachable best of a parameterization), "
                                   "never a method")


@dataclass
class OneShotConfig:
    """``python -m gan_adapt train`` with ``exp.trainer: clip``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"generator_args.ckpt": "base", "loss.direction": "loss.clip_direction"}

    exp: ExpSection = section(ExpSection, "the run", trainer="clip", name="oneshot", run_dir="runs/oneshot")
    base: str = base_setting(DEFAULT_SOURCE)
    target: TargetConfig = section(TargetConfig, "the target domain: a prompt or one reference image")
    training: OneShotTraining = section(OneShotTraining, "what trains, and how")
    loss: OneShotLoss = section(OneShotLoss, "the CLIP guidance")
    analogy: AnalogySection = section(AnalogySection, "the image analogy of loss.analogy_l1")
    logging: LoggingSection = section(LoggingSection, "log, sample and checkpoint cadences", sample_every=50,
                                      checkpoint_every=50)
    evaluation: EvaluationSection = section(EvaluationSection, "the end-of-run report")


def reference_image(spec: str, size: int) -> tuple[torch.Tensor, str]:
    """(image [1, 3, size, size], content hash) from a path or ``synthfaces:<domain>[@<shots>][/<index>]`` (the
    image at ``index`` of the few-shot stream, the first by default: adapt_common.datasets.parse_data_spec)."""
    from adapt_common.datasets import parse_data_spec
    parsed = parse_data_spec(spec)
    if parsed.is_synthfaces:
        img = parsed.reference_image(size)
    else:
        img = load_image(spec, size=size)
    digest = hashlib.sha256(img.numpy().tobytes()).hexdigest()[:16]
    return img, digest


def target_domain(tg: TargetConfig) -> str:
    """The target's name: ``target.domain`` when set; else the domain of a ``synthfaces:<domain>`` image, the
    image file's stem, the SynthFaces domain whose own prompt the text is, or the prompt as a short name."""
    if tg.domain:
        return tg.domain
    if tg.image.startswith("synthfaces:"):
        from adapt_common.datasets import parse_data_spec
        return parse_data_spec(tg.image).domain
    if tg.image:
        return Path(tg.image).stem
    from adapt_common import synthfaces as sf
    text = " ".join(tg.text.split())
    for name in (*sf.DOMAINS, *sf.HELDOUT_STYLES):
        if sf.domain_prompt(name).lower() == text.lower():
            return name
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48].rstrip("_") or "prompt"


@contextmanager
def channels_last_input(*generators):
    """For the duration, each generator's frozen constant input in channels-last layout (the same values): every
    activation after it is channels-last too, which oneDNN convolves without reordering to its blocked layout
    and back (up to 30% less time for a batch-4 source forward of the bundled 64 px generator on one CPU thread,
    about 15% for the adapted generator's forward and backward; not bit for bit: about 1e-6). Images come out
    channels-last; outside the block nothing changes. A trained input (``full``) is left as it is."""
    swapped = []
    for g in generators:
        p = getattr(getattr(g, "input", None), "input", None)
        if p is None or p.requires_grad or p.dim() != 4 or p.is_cuda:
            continue
        swapped.append((p, p.data))
        p.data = p.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, data in swapped:
            p.data = data


class ClipTrainer(LoopTrainer):
    """``optimised`` (default): the step of :meth:`train_step_optimised`, bit for bit the training of the step as
    first written (and with ``training.fast_math``, the same within float rounding in less time); False:
    :meth:`train_step_reference`, the step as first written, with the package's own CLIP forward everywhere (the
    benchmark's "before" and the tests' independent reference)."""

    def __init__(self, cfg: OneShotConfig, *, quiet: bool = False, optimised: bool = True):
        from ..formats import load_generator
        self.cfg, self.quiet, self.optimised = cfg, quiet, optimised
        self.fast_math = optimised and cfg.training.fast_math
        tg, tr = cfg.target, cfg.training
        if bool(tg.text) == bool(tg.image):
            raise ValueError("set exactly one of target.text (text-guided) and target.image (one reference image)")
        if tg.more_images and (not tg.image or cfg.loss.analogy_l1 <= 0):
            raise ValueError("target.more_images are further images for the image analogy: they need target.image "
                             "and loss.analogy_l1 > 0 (or leave target.more_images empty)")
        if tr.batch < 2 and cfg.loss.indomain > 0:
            raise ValueError("loss.indomain needs training.batch >= 2")
        set_threads(cfg.exp.threads, "exp.threads")
        torch.manual_seed(cfg.exp.seed)
        self.device = torch.device(cfg.exp.device)
        self.domain = target_domain(tg)
        self.evaluation_error: str | None = None
        self.source = load_generator(cfg.base, device=self.device).eval().requires_grad_(False)
        self.param = Parameterization(tr.parameterization, self.source, block=tr.block, rank=tr.rank,
                                      seed=cfg.exp.seed)
        self.guide = ClipGuide(list(cfg.loss.clip), self.device, fast=optimised, cls_only_last=self.fast_math)
        self.reference, self.reference_hash, self.more_references = None, None, []
        if tg.text:
            self.directions = self.guide.text_direction(tg.source_text, tg.text, list(tg.templates))
        else:
            self.reference, self.reference_hash = reference_image(tg.image, self.source.size)
            more = [reference_image(spec, self.source.size) for spec in tg.more_images]
            self.more_references = [img for img, _ in more]
            if more:  # one hash for the whole set, in order
                self.reference_hash = hashlib.sha256(" ".join([self.reference_hash, *(h for _, h in more)])
                                                     .encode()).hexdigest()[:16]
            gen = torch.Generator().manual_seed(cfg.exp.seed + 1)

            def sample(k):
                z = torch.randn(k, self.source.style_dim, generator=gen).to(self.device)
                if not self.fast_math:
                    return self.source.generate(z)
                with channels_last_input(self.source):
                    return self.source.generate(z).contiguous()
            self.source_mean = self.guide.mean_embedding(sample, tg.source_mean_n)
            self.directions = self.guide.image_direction(self.reference.to(self.device), self.source_mean)
        self.w_ref, self.inverted, self.analogy, self.analogy_fit = None, None, None, None
        self.analogy_shrinkage = None
        lc = cfg.loss
        if lc.truth_l1 > 0:
            from adapt_common import synthfaces as sf
            try:
                truth = sf.get_domain(self.domain)
            except KeyError:
                truth = None
            if truth is None or truth.kind != "similar":
                raise ValueError(f"loss.truth_l1 needs a SynthFaces style with a ground-truth transform as the target "
                                 f"(target.domain, or a synthfaces:<style> image); {self.domain!r} has none")
        if lc.clip_ref > 0 or lc.clip_within > 0 or lc.rec_l2 > 0 or lc.analogy_l1 > 0:
            if self.reference is None:
                raise ValueError("loss.clip_ref / clip_within / rec_l2 / analogy_l1 need an image target "
                                 "(target.image)")
            if tg.invert_encoder:
                from ..encoder import StyleEncoder
                if tg.invert_prompt_weight > 0:
                    raise ValueError("target.invert_encoder inverts in one pass, without the source-domain prompt "
                                     "term: set target.invert_prompt_weight=0")
                encoder = StyleEncoder.from_pretrained(tg.invert_encoder).to(self.device)

                def invert_reference(image):
                    return encoder.invert(self.source, image)
            else:
                from ..inversion import invert
                source_domain = dict(source_prompt=tg.source_text, contrast_prompts=list(tg.contrast_prompts),
                                     prompt_weight=tg.invert_prompt_weight) if tg.invert_prompt_weight > 0 else {}

                def invert_reference(image):
                    return invert(self.source, image, steps=tg.invert_steps, space=tg.invert_space,
                                  clip=self.guide.clips[0], seed=cfg.exp.seed, **source_domain)
            inv = invert_reference(self.reference)
            self.w_ref, self.inverted = inv.w, inv.image.clamp(-1, 1)
            with torch.no_grad():
                self.emb_ref = self.guide.encode_images(self.reference.to(self.device))
                self.emb_a_ref = self.guide.encode_images(inv.image)
            if lc.analogy_l1 > 0:
                self.analogy, self.analogy_fit, self.analogy_shrinkage = cfg.analogy.fit(
                    self.inverted, self.reference.to(self.device), seed=cfg.exp.seed,
                    invert=lambda image: invert_reference(image).image, source=self.source,
                    more_references=[r.to(self.device) for r in self.more_references])
        self.lr, betas = self.optimiser_settings()
        self.opt = torch.optim.Adam(self.param.trainable_parameters(), lr=self.lr, betas=betas)
        self.step, self.elapsed = 0, 0.0
        gen = torch.Generator().manual_seed(cfg.logging.sample_seed)
        self.sample_z = torch.randn(cfg.logging.n_samples, self.source.style_dim, generator=gen)
        self.run_dir = Path(cfg.exp.run_dir)

    def optimiser_settings(self) -> tuple[float, tuple[float, float]]:
        """(lr, betas): the config's, or where unset the parameterization's one-shot values from its spec."""
        from ..parameterizations import spec
        tr = self.cfg.training
        sp = spec(tr.parameterization)
        lr = tr.lr if tr.lr is not None else sp.oneshot_lr
        if lr is None:
            raise ValueError(f"training.lr is unset and no one-shot learning rate is recorded for "
                             f"{tr.parameterization!r}; set training.lr")
        betas = tuple(float(b) for b in (tr.betas if tr.betas is not None else sp.oneshot_betas))
        if len(betas) != 2:
            raise ValueError(f"training.betas must be two numbers, got {list(betas)}")
        return float(lr), betas

    def lr_at(self, step: int) -> float:
        tr = self.cfg.training
        if step >= tr.warmup_iters or tr.warmup_iters <= 0:
            return self.lr
        return tr.warmup_start_lr + (self.lr - tr.warmup_start_lr) * step / tr.warmup_iters

    # -- one step ------------------------------------------------------------------------------------------

    def _latents(self) -> tuple[list[torch.Tensor], int | None]:
        tr, dim = self.cfg.training, self.source.style_dim
        if tr.mixing > 0 and torch.rand(()) < tr.mixing:
            z = list(torch.randn(2, tr.batch, dim).unbind(0))
            return [x.to(self.device) for x in z], int(torch.randint(1, self.source.n_latent, ()))
        return [torch.randn(tr.batch, dim).to(self.device)], None

    def train_step(self) -> dict:
        return self.train_step_optimised() if self.optimised else self.train_step_reference()

    def train_step_reference(self) -> dict:
        """The step as first written: each generator maps its own z and renders; the package's CLIP forward."""
        z, inject = self._latents()
        with torch.no_grad():
            img_a = self.source(z, inject_index=inject, randomize_noise=False)[0]
            emb_a = self.guide.encode_images(img_a)
        img_b = self.param.generator(z, inject_index=inject, randomize_noise=False)[0]
        emb_b = self.guide.encode_images(img_b)
        return self._losses_and_update(img_a, img_b, emb_a, emb_b)

    def _adapted_maps_like_source(self) -> bool:
        """Whether G_B's mapping network is G_A's: frozen and not reparameterized (every kind but ``full`` and
        ``mapping``), so that the source's w serves both."""
        g = self.param.generator
        return not any(p.requires_grad for p in g.style.parameters()) and not any(
            parametrize.is_parametrized(m) for m in g.style.modules())

    def train_step_optimised(self) -> dict:
        """The same step with less work: one mapping for both generators where G_B's is G_A's (the source's mixed
        w+ is G_B's input: the numbers G_B's own mapping gives), and CLIP through
        :func:`adapt_common.clip_models.vit_cls_features`; the same latents, random stream, losses and update, and
        bit for bit the same result as :meth:`train_step_reference`. With ``training.fast_math`` also both
        generators in channels-last layout (:func:`channels_last_input`) and CLIP's last block on the class token
        only: images and gradients then agree with the reference step's within float rounding (1e-6 relative), which
        the training's sensitivity grows to a few 1e-3 of the direction over 300 steps. A recipe whose losses read
        no CLIP embedding of the batch (the encoder recipe: pixels against the analogy only) skips CLIP altogether,
        which changes nothing of the result (CLIP's forward draws no random numbers)."""
        z, inject = self._latents()
        g_b = self.param.generator
        embed = self.losses_read_embeddings()
        with channels_last_input(self.source, g_b) if self.fast_math else nullcontext():
            with torch.no_grad():
                img_a, latent = self.source(z, inject_index=inject, randomize_noise=False, return_latents=True)
                img_a = img_a.contiguous()
                emb_a = self.guide.encode_images(img_a) if embed else None
            if self._adapted_maps_like_source():
                img_b = g_b(latent, input_is_latent=True, randomize_noise=False)[0]
            else:
                img_b = g_b(z, inject_index=inject, randomize_noise=False)[0]
        img_b = img_b.contiguous()
        emb_b = self.guide.encode_images(img_b) if embed else None
        return self._losses_and_update(img_a, img_b, emb_a, emb_b)

    def losses_read_embeddings(self) -> bool:
        """Whether a loss of the step reads the CLIP embeddings of the batch (G_A's or G_B's images)."""
        lc = self.cfg.loss
        return lc.clip_direction > 0 or lc.indomain > 0 or (self.w_ref is not None and lc.clip_within > 0)

    def _losses_and_update(self, img_a, img_b, emb_a, emb_b) -> dict:
        """The losses of one step from the source and adapted images and their CLIP embeddings; one Adam step."""
        loss, stats = self.step_loss(img_a, img_b, emb_a, emb_b)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        stats["loss"] = loss.item()
        self.step += 1
        return stats

    def step_loss(self, img_a, img_b, emb_a, emb_b) -> tuple[torch.Tensor, dict]:
        """(the step's loss, each term's value) from the source and adapted images and their CLIP embeddings."""
        lc = self.cfg.loss
        stats = {}
        loss = torch.zeros((), device=self.device)
        if lc.clip_direction > 0:
            d = self.guide.direction_loss(emb_b, emb_a, self.directions)
            loss = loss + lc.clip_direction * d
            stats["direction"] = d.item()
        if lc.indomain > 0:
            d = self.guide.indomain_loss(emb_b, emb_a)
            loss = loss + lc.indomain * d
            stats["indomain"] = d.item()
        if lc.offsets_l2 > 0:
            d = sum(p.square().mean() for p in self.param.trainable_parameters())
            loss = loss + lc.offsets_l2 * d
            stats["offsets_l2"] = float(d.detach())
        # G_B's image of the inverted reference, for the reference-pair terms; the step as first written renders it
        # whenever there is an inversion (the encoder recipe has one for its analogy), the optimised one only when a
        # term reads it (rendered with constant noise, it draws no random numbers: skipping it changes nothing)
        ref_terms = lc.clip_ref > 0 or lc.rec_l2 > 0 or lc.clip_within > 0
        if self.w_ref is not None and (ref_terms or not self.optimised):
            img_ref = self.param.generator.generate(w=self.w_ref)
            if lc.clip_ref > 0:
                d = self.guide.clip_ref_loss(self.guide.encode_images(img_ref), self.emb_ref)
                loss = loss + lc.clip_ref * d
                stats["clip_ref"] = d.item()
            if lc.rec_l2 > 0:
                d = F.mse_loss(img_ref, self.reference.to(img_ref.device))
                loss = loss + lc.rec_l2 * d
                stats["rec_l2"] = d.item()
            if lc.clip_within > 0:
                d = self.guide.clip_within_loss(emb_b, self.emb_ref, emb_a, self.emb_a_ref)
                loss = loss + lc.clip_within * d
                stats["clip_within"] = d.item()
        if self.analogy is not None:  # the analogy's term: pixels against T̂ of the source image
            with torch.no_grad():
                pseudo = self.analogy(img_a)
            d = (img_b.clamp(-1, 1) - pseudo).abs().mean()
            loss = loss + lc.analogy_l1 * d
            stats["analogy_l1"] = d.item()
        if lc.truth_l1 > 0:  # the oracle's term: pixels against the true style of the source image
            from adapt_common import synthfaces as sf
            d = (img_b.clamp(-1, 1) - sf.apply_domain(img_a, self.domain).clamp(-1, 1)).abs().mean()
            loss = loss + lc.truth_l1 * d
            stats["truth_l1"] = d.item()
        return loss, stats

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {"step": self.step, "elapsed_s": self.elapsed, "trained": self.param.trained_state_dict(),
                 "opt": self.opt.state_dict(), "rng": rng_state(), "parameterization": self.param.name,
                 "source_hash": self.param.source_hash}
        if self.analogy is not None:  # refitting at --resume would cost seconds; the saved one is exact
            state["analogy"] = self.analogy.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["parameterization"] != self.param.name or state["source_hash"] != self.param.source_hash:
            raise ValueError(f"the checkpoint is a {state['parameterization']} run of generator "
                             f"{state['source_hash']}; this config is {self.param.name} of {self.param.source_hash}")
        self.param.load_trained_state_dict(state["trained"])
        if self.analogy is not None and "analogy" in state:
            self.analogy.load_state_dict(state["analogy"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    # -- outputs -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def before_after(self, path: Path, z: torch.Tensor | None = None) -> Path:
        """Source row over adapted row (with the reference image first in both rows when there is one)."""
        z = (self.sample_z if z is None else z).to(self.device)
        src, out = self.source.generate(z), self.param.generator.generate(z)
        if self.reference is not None:
            ref = self.reference.to(src.device)
            src, out = torch.cat([ref, src]), torch.cat([ref, out])
        return save_grid(torch.cat([src, out]).cpu(), path, nrow=src.shape[0])

    @torch.no_grad()
    def analogy_grid(self, path: Path) -> Path:
        """What the analogy learned: reference, its source-domain inversion A and T̂(A) on top; source samples over
        their T̂ (the pixel targets of training) below."""
        z = self.sample_z.to(self.device)
        src = self.source.generate(z)
        pair = torch.cat([self.reference.to(src.device), self.inverted, self.analogy(self.inverted)])
        pad = torch.zeros(max(src.shape[0] - 3, 0), *src.shape[1:], device=src.device)
        return save_grid(torch.cat([pair, pad, src, self.analogy(src)]).cpu(), path, nrow=max(src.shape[0], 3))

    def result_meta(self) -> dict:
        tg = self.cfg.target
        meta = {"domain": self.domain, "steps": self.step,
                "training_config": to_dict(self.cfg), "clip": self.guide.names}
        if tg.text:
            meta.update(prompt=tg.text, source_prompt=tg.source_text)
        else:
            meta.update(reference=tg.image, reference_hash=self.reference_hash)
            if tg.more_images:
                meta.update(more_references=list(tg.more_images))
        return meta

    def export(self, metrics: dict | None = None) -> Path:
        meta = self.result_meta()
        if metrics:
            meta["metrics"] = metrics
        if self.param.name in DIRECTION_KINDS:
            from ..directions import Direction
            return Direction.from_parameterization(self.param, **meta).save_pretrained(
                self.run_dir / Direction.FILE_NAME)
        from ..adapter_files import Adapter
        return Adapter.from_parameterization(self.param, domain=meta.pop("domain"), extra=meta).save_pretrained(
            self.run_dir / Adapter.FILE_NAME)

    # -- `python -m gan_adapt export RUN`: the state of a checkpoint in any of the result's forms ----------------

    def export_direction(self, path: str | Path) -> Path:
        if self.param.name not in DIRECTION_KINDS:
            raise ValueError(f"this run trains {self.param.name!r}, not a direction kind ({', '.join(DIRECTION_KINDS)})"
                             "; export it with --adapter")
        from ..directions import Direction
        return Direction.from_parameterization(self.param, **self.result_meta()).save_pretrained(path)

    def export_adapter(self, path: str | Path) -> Path:
        from ..adapter_files import Adapter
        meta = self.result_meta()
        return Adapter.from_parameterization(self.param, domain=meta.pop("domain"), extra=meta).save_pretrained(path)

    def export_generator(self, path: str | Path) -> Path:
        """The adapted generator with the trained tensors merged, as a full checkpoint (without a discriminator:
        one-shot training has none)."""
        import json

        from ..formats import StyleGANCheckpoint, save_checkpoint
        meta = {"trained_with": self.param.name, "source": self.cfg.base, "source_hash": self.param.source_hash,
                "steps": self.step, "config": json.dumps(to_dict(self.cfg))}
        return save_checkpoint(StyleGANCheckpoint(g_ema=self.param.merged_generator(), meta=meta), path)

    def evaluate(self) -> dict:
        """The end-of-run report: the SynthFaces metrics for a SynthFaces target, else CLIP quality (against the
        reference image, or the prompt) and diversity, with a note of what was skipped."""
        from adapt_common.metrics.evaluate import eval_domain, evaluate, gan_sampler, summary_lines
        ev = self.cfg.evaluation
        make_batch, sample = gan_sampler(self.param.generator.eval())
        _, source = gan_sampler(self.source)
        domain = eval_domain(self.domain, prompt=self.cfg.target.text, reference=self.reference)
        report = evaluate(sample, domain, sample_source=source, make_batch=make_batch, n=ev.n,
                          clip=ev.clip, features=ev.features, out_dir=self.run_dir / "eval", seed=self.cfg.exp.seed,
                          settings={"steps": self.step, "parameterization": self.param.name}, quiet=True)
        report["judge_is_guide"] = self.judge_is_guide()
        for line in summary_lines(report):
            self._log(line)
        if report["judge_is_guide"]:
            self._log(f"warning: evaluation.clip={ev.clip!r} also guided this run, so its CLIP scores grade the run "
                      "by its own loss; judge with a CLIP that guided nothing (the default, synthfaces_judge)")
        return report

    def judge_is_guide(self) -> bool:
        """Whether the report's judge CLIP (``evaluation.clip``) is one of the CLIPs that guided the training."""
        from adapt_common.clip_models import same_clip
        return any(same_clip(self.cfg.evaluation.clip, g) for g in self.guide.names)

    # -- the loop ------------------------------------------------------------------------------------------

    def log_extra(self) -> dict:
        return {"lr": self.lr_at(self.step - 1)}

    def write_samples(self, path: Path) -> Path:
        return self.before_after(path)

    def fit(self, resume: bool = False, hooks: LoopHooks | None = None) -> dict:
        """Train, then write before_after.png, the result and (``evaluation.n > 0``) the report. Stopped early by
        ``hooks.should_stop``: only the checkpoint (``--resume`` continues it), no result, ``"stopped": True``."""
        cfg = self.cfg
        self.start(resume)
        target = cfg.target.text or f"image {cfg.target.image}"
        self._log(f"{self.param.describe()} of {cfg.base}; target: {target}; "
                  f"CLIP: {', '.join(self.guide.names)}")
        if self.analogy is not None:
            self._log(f"analogy: {cfg.analogy.describe(self.analogy_fit)}; "
                      f"{self.analogy_grid(self.run_dir / 'analogy.png').name}")
            if self.analogy_shrinkage is not None:
                sh = self.analogy_shrinkage
                views = "the reference and its mirror image" if not cfg.target.more_images else \
                    f"{len(self.analogy.members)} views of {1 + len(cfg.target.more_images)} reference images"
                self._log(f"analogy of {views}: change {sh.signal:.4f}, disagreement "
                          f"{sh.disagreement:.4f}, strength {sh.strength:.3f}")
        self.loop(cfg.training.iters, resume, hooks)
        if self.stopped:
            return {"steps": self.step, "wall_time_s": self.elapsed, "result": None, "evaluation_error": None,
                    "stopped": True}
        self.before_after(self.run_dir / "before_after.png")
        out = self.result = self.export()  # the result first: nothing after this may cost it
        self._log(f"wrote {out} ({self.param.num_trainable():,} values) and before_after.png in {self.run_dir}; "
                  f"{self.step} steps in {self.elapsed:.0f} s")
        if cfg.evaluation.n > 0:
            try:
                report = self.evaluate()
            except Exception as e:  # any failure of the metrics leaves the written result as it is
                self.evaluation_error = f"{type(e).__name__}: {e}"
                self._log(f"the evaluation failed ({self.evaluation_error}); {out} is written without metrics")
            else:
                metrics = {k: report.get(k) for k in ("fid", "kid", "domain_error", "clip_quality", "clip_diversity",
                                                      "domain_accuracy", "skipped") if k in report}
                if metrics.get("domain_error"):  # the summary goes in the file's manifest; per image stays in eval/
                    metrics["domain_error"] = {k: v for k, v in metrics["domain_error"].items() if k != "per_image"}
                out = self.result = self.export(metrics)
        return {"steps": self.step, "wall_time_s": self.elapsed, "result": str(out),
                "evaluation_error": self.evaluation_error, "stopped": False}


def train(cfg: OneShotConfig, resume: bool = False, quiet: bool = False) -> ClipTrainer:
    trainer = ClipTrainer(cfg, quiet=quiet)
    trainer.fit(resume=resume)
    return trainer
