"""Multi-domain training of the HyperDomainNet hypernetwork from text (``exp.trainer: hyper``).

    python -m gan_adapt train --config configs/hyper_synthfaces.yaml [key=value ...] [--resume]
    torchrun --nproc_per_node 2 -m gan_adapt train --config configs/hyper_synthfaces.yaml

Each step (HyperDomainNet's ``td_multiple_resample_and_convex``): draw B domains from the list; with
``convex``, mix them with Dirichlet(2/B) weights so the mapper sees points of the convex hull of the domain
embeddings, not only the corners; the mapper's input is the normalised mix of the targets' CLIP text
embeddings (template "{}"); the loss targets are the same mixes of target and source embeddings, optionally
``resample``d to a random unit vector at cosine U[min_cos, 1] from the target (so the mapper generalises to
embeddings near, not only at, the training ones). Losses: the per-sample CLIP direction loss (``clip_direction``) and
``tt_direction`` (samples of different targets must differ along the difference of their directions, which
keeps domains apart). With ``training.per_domain`` = k each drawn target serves k latents and ``loss.indomain``
keeps the pairwise CLIP geometry within each group (HyperDomainNet's single-domain diversity term, added here
because the small CLIP collapses every domain to one image without it). Under torchrun every process draws its own batch and gradients are averaged.

With ``loss.analogy_l1`` (``configs/hyper_synthfaces_analogy.yaml``) each domain is learned from one reference
image instead of its caption's CLIP direction: the style encoder inverts the reference to its source face, an image
analogy T̂_k is fitted on that pair (as in the one-shot encoder recipe), and a sample of domain k is pulled towards
T̂_k of its source image in pixels. The mapper's input stays the caption's embedding, so a caption still names a
domain (and an unseen caption can be tried); the CLIP terms can be combined with it or set to 0.

Outputs: ``hypernet.safetensors`` (+ manifest: domains, the mapper's CLIP, the base generator's hash),
``samples/`` grids with one row per training domain (source first), and ``eval.json`` with each similar
SynthFaces domain's ground-truth error of the predicted modulation when ``evaluation.n > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from adapt_common.clip_guidance import ClipGuide
from adapt_common.config import to_dict
from adapt_common.config_sections import EvaluationSection, ExpSection, LoggingSection, base_setting, section, setting
from adapt_common.image_io import save_grid
from adapt_common.loop import (LoopTrainer, average_gradients, finish_distributed, init_distributed, rng_state,
                                   set_rng_state, set_threads, world_info)
from ..hypernetwork import Hypernetwork
from .clip_guided import DEFAULT_SOURCE, AnalogySection


@dataclass
class HyperDomains:
    train: list = setting([], "the training domains: \"target - source\" lines (the official domain-list format); a "
                              "lone target uses `source`")
    source: str = setting("a photo of a face", "the source prompt of lines that name none")
    templates: list = setting(["{}"], "prompt templates of the text embeddings, \"{}\" is the prompt")
    names: list = setting([], "the SynthFaces domain name of each line of `train` (optional), for the evaluation")
    unseen: list = setting([], "held-out prompts evaluated at the end: \"prompt = dom1+dom2\" (the ground truth: "
                               "dom2's transform of dom1's)")
    references: list = setting([], "one reference image per line of `train` (a path, or synthfaces:<domain>[/<index>]): "
                                   "loss.analogy_l1 learns each domain from its reference's image analogy")
    invert_encoder: str = setting("", "the style-invariant encoder that inverts each reference to its source face, "
                                      "for the analogies of loss.analogy_l1")


@dataclass
class HyperMapper:
    width: int = setting(512, "width of the mapper's hidden layers")
    depth: int = setting(4, "layers of the mapper")


@dataclass
class HyperTraining:
    iters: int = setting(2000, "training steps")
    batch: int = setting(8, "latents per step and process")
    lr: float = setting(0.0005, "Adam learning rate")
    betas: list = setting([0.9, 0.999], "Adam betas")
    per_domain: int = setting(1, "latents per drawn target (batch a multiple of it): groups of one target give "
                                 "loss.indomain its same-domain pairs; 1 is the official recipe")
    convex: bool = setting(True, "mix the drawn domains with Dirichlet weights (points of the convex hull of the "
                                 "embeddings)")
    resample: bool = setting(True, "replace each target embedding by a random unit vector near it")
    resample_min_cos: float = setting(0.95, "the resampled vector's cosine to the target: uniform in [this, 1]")
    mixing: float = setting(0.9, "probability of style mixing at a random layer")


@dataclass
class HyperLoss:
    clip: list = setting(["synthfaces"], "the guiding CLIPs (names or paths); the first also embeds the mapper's "
                                         "input")
    clip_direction: float = setting(1.0, "weight of the CLIP-space direction loss of each sample along its target's "
                                         "direction (formerly loss.direction)")
    tt_direction: float = setting(0.4, "weight of the target-target direction loss: samples of different targets "
                                       "differ along the difference of their directions")
    # not in the official multi-domain recipe; without it the small SynthFaces CLIP lets every domain collapse to
    # one image
    indomain: float = setting(0.0, "weight of the in-domain angle consistency within each group of one target "
                                   "(needs training.per_domain >= 2)")
    offsets_l2: float = setting(0.0, "weight of the mean square of the predicted modulation offsets")
    analogy_l1: float = setting(0.0, "weight of the pixel L1 between each sample and its domain's image analogy of the "
                                     "source sample (the one-shot encoder recipe's guide, one reference per domain: "
                                     "needs domains.references and domains.invert_encoder, and training.convex false)")


@dataclass
class HyperEval(EvaluationSection):
    seed: int = setting(0, "the report's latents are z of seeds seed .. seed+n-1: 0 is the validation split (choose "
                           "recipes on it), 100000 the test split (numbers to report)")


@dataclass
class HyperConfig:
    """``python -m gan_adapt train`` with ``exp.trainer: hyper``."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"generator_args.ckpt": "base", "loss.direction": "loss.clip_direction"}

    exp: ExpSection = section(ExpSection, "the run", trainer="hyper", name="hyper", run_dir="runs/hyper")
    base: str = base_setting(DEFAULT_SOURCE)
    domains: HyperDomains = section(HyperDomains, "the domains the hypernetwork learns, as text")
    mapper: HyperMapper = section(HyperMapper, "the hypernetwork (CLIP text embedding -> domain modulation)")
    training: HyperTraining = section(HyperTraining, "the optimisation")
    loss: HyperLoss = section(HyperLoss, "the guidance: CLIP terms and/or the reference images' analogies")
    analogy: AnalogySection = section(AnalogySection, "the image analogies of loss.analogy_l1")
    logging: LoggingSection = section(LoggingSection, "log, sample and checkpoint cadences")
    # The report has no FID/KID, so evaluation.features is refused unless auto. Its judge is the shared default
    # (a CLIP that guided nothing), not the first guide.
    evaluation: HyperEval = section(HyperEval, "the end-of-run report: each named domain's ground-truth error and "
                                    "the judge CLIP's domain calls")


def parse_domains(lines: list[str], source: str) -> list[tuple[str, str]]:
    """(target, source) pairs from "target - source" lines (or bare targets)."""
    out = []
    for line in lines:
        target, sep, src = str(line).partition(" - ")
        out.append((target.strip(), src.strip() if sep else source))
    if len(out) < 2:
        raise ValueError(f"multi-domain training needs at least 2 domains in domains.train, got {len(out)}")
    return out


def resample_near(v: torch.Tensor, min_cos: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random unit vectors at cosine ~U[min_cos, 1] from each row of ``v`` (normalised) [N, D]."""
    v = F.normalize(v, dim=-1)
    c = min_cos + (1 - min_cos) * torch.rand(v.shape[0], 1, generator=generator)
    r = torch.randn(v.shape, generator=generator)
    ortho = F.normalize(r - (r * v).sum(-1, keepdim=True) * v, dim=-1)
    return c * v + (1 - c.square()).clamp_min(0).sqrt() * ortho


class HyperTrainer(LoopTrainer):
    def __init__(self, cfg: HyperConfig, *, quiet: bool = False):
        from ..formats import load_generator
        self.cfg = cfg
        self.rank, self.world = world_info()
        self.quiet = quiet or self.rank != 0
        set_threads(cfg.exp.threads, "exp.threads")
        torch.manual_seed(cfg.exp.seed + self.rank)  # every process draws its own domains and latents
        self.device = torch.device(cfg.exp.device)
        self._judge = None  # the report's judge CLIP, loaded when first needed
        self.domains = parse_domains(list(cfg.domains.train), cfg.domains.source)
        tr = cfg.training
        if tr.per_domain < 1 or tr.batch % tr.per_domain:
            raise ValueError(f"training.batch ({tr.batch}) must be a positive multiple of training.per_domain "
                             f"({tr.per_domain})")
        if cfg.loss.indomain > 0 and tr.per_domain < 2:
            raise ValueError("loss.indomain compares samples of one target: set training.per_domain >= 2")
        if cfg.domains.names and len(cfg.domains.names) != len(self.domains):
            raise ValueError(f"domains.names has {len(cfg.domains.names)} entries for {len(self.domains)} domains")
        if cfg.evaluation.features != "auto":
            raise ValueError(f"evaluation.features={cfg.evaluation.features!r}: the hypernetwork's report measures "
                             "ground-truth errors and CLIP's domain calls, no FID/KID; leave evaluation.features "
                             "unset")
        lc = cfg.loss
        if not any(x > 0 for x in (lc.clip_direction, lc.tt_direction, lc.indomain, lc.analogy_l1)):
            raise ValueError("no guidance: set loss.clip_direction, tt_direction, indomain or analogy_l1 above 0")
        self.source = load_generator(cfg.base, device=self.device).eval().requires_grad_(False)
        self.guide = ClipGuide(list(cfg.loss.clip), self.device)
        self.analogies = self.fit_analogies() if lc.analogy_l1 > 0 else []
        tmpl = list(cfg.domains.templates)
        targets = [t for t, _ in self.domains]
        sources = [s for _, s in self.domains]
        # Mapper input: the first CLIP, template "{}" only; loss references: every CLIP, templates averaged.
        self.mapper_emb = self.guide.encode_texts(targets, ["{}"])[0][:, 0]  # [K, D]
        self.trg_emb = [F.normalize(e.mean(1), dim=-1) for e in self.guide.encode_texts(targets, tmpl)]
        self.src_emb = [F.normalize(e.mean(1), dim=-1) for e in self.guide.encode_texts(sources, tmpl)]
        torch.manual_seed(cfg.exp.seed)  # the same initial mapper on every process
        self.mapper = Hypernetwork.for_generator(self.source, input_dim=self.mapper_emb.shape[1],
                                                 width=cfg.mapper.width, depth=cfg.mapper.depth).to(self.device)
        torch.manual_seed(cfg.exp.seed + 1000 * self.rank + 1)
        self.opt = torch.optim.Adam(self.mapper.parameters(), lr=cfg.training.lr, betas=tuple(cfg.training.betas))
        self.step, self.elapsed = 0, 0.0
        gen = torch.Generator().manual_seed(cfg.logging.sample_seed)
        self.sample_z = torch.randn(cfg.logging.n_samples, self.source.style_dim, generator=gen)
        self.run_dir = Path(cfg.exp.run_dir)

    def fit_analogies(self) -> list:
        """One image analogy per domain, fitted on (the encoder's source face of its reference, the reference)."""
        from ..encoder import StyleEncoder
        from .clip_guided import reference_image
        cfg, dm = self.cfg, self.cfg.domains
        if len(dm.references) != len(self.domains):
            raise ValueError(f"loss.analogy_l1 needs one reference image per domain: domains.references has "
                             f"{len(dm.references)} entries for {len(self.domains)} lines of domains.train")
        if not dm.invert_encoder:
            raise ValueError("loss.analogy_l1 needs domains.invert_encoder (a style-invariant encoder file, e.g. "
                             "checkpoints/synthfaces_encoder.safetensors) to find each reference's source face")
        if cfg.training.convex:
            raise ValueError("loss.analogy_l1 has a pixel target for each domain, not for a mix of domains: set "
                             "training.convex=false")
        encoder = StyleEncoder.from_pretrained(dm.invert_encoder).to(self.device)
        out = []
        for spec in dm.references:
            ref = reference_image(str(spec), self.source.size)[0].to(self.device)
            inv = encoder.invert(self.source, ref)
            analogy, fit, shrunk = cfg.analogy.fit(inv.image.clamp(-1, 1), ref, seed=cfg.exp.seed,
                                                   invert=lambda image: encoder.invert(self.source, image).image,
                                                   source=self.source)
            self._log(f"analogy for {spec}: {cfg.analogy.describe(fit)}" +
                      (f"; with its mirror image: strength {shrunk.strength:.3f}" if shrunk else ""))
            out.append(analogy.eval().requires_grad_(False))
        return out

    # -- one step ------------------------------------------------------------------------------------------

    def domain_weights(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, K] weights over the domains, [B] target ids: equal ids = same target). With per_domain = k,
        B/k targets are drawn and each is repeated for k consecutive samples."""
        k, per = len(self.domains), self.cfg.training.per_domain
        n = batch // per
        idx = torch.randint(0, k, (n,))
        weights, ids = F.one_hot(idx, k).float(), idx
        if self.cfg.training.convex:
            alpha = torch.distributions.Dirichlet(torch.full((n,), 2.0 / n)).sample((n,)) if n > 1 else torch.ones(1, 1)
            weights, ids = alpha @ weights, torch.arange(n)
        return weights.repeat_interleave(per, 0), ids.repeat_interleave(per, 0)

    @staticmethod
    def grouped_indomain(emb_b, emb_a, ids: torch.Tensor) -> torch.Tensor:
        """The in-domain angle-consistency loss within each group of equal ids, averaged over the groups."""
        groups = [torch.nonzero(ids == i).flatten() for i in torch.unique(ids)]
        groups = [g for g in groups if len(g) >= 2]
        if not groups:
            raise ValueError("loss.indomain needs same-target pairs: set training.per_domain >= 2")
        return sum(ClipGuide.indomain_loss([b[g] for b in emb_b], [a[g] for a in emb_a]) for g in groups) / len(groups)

    def train_step(self) -> dict:
        tr, lc = self.cfg.training, self.cfg.loss
        g = self.source
        weights, ids = self.domain_weights(tr.batch)
        mapper_in = F.normalize(weights @ self.mapper_emb, dim=-1)
        use_clip = lc.clip_direction > 0 or lc.tt_direction > 0 or lc.indomain > 0
        directions = []
        for trg, src in zip(self.trg_emb, self.src_emb) if use_clip else ():
            t = F.normalize(weights @ trg, dim=-1)
            if tr.resample:
                t = resample_near(t, tr.resample_min_cos)
            directions.append(F.normalize(t - F.normalize(weights @ src, dim=-1), dim=-1))
        z = torch.randn(tr.batch, g.style_dim)
        with torch.no_grad():
            if tr.mixing > 0 and torch.rand(()) < tr.mixing:
                w2 = g.get_latent(torch.randn(tr.batch, g.style_dim).to(self.device))
                k = int(torch.randint(1, g.n_latent, ()))
                wp = g.to_wplus(g.get_latent(z.to(self.device))).clone()
                wp[:, k:] = w2[:, None]
            else:
                wp = g.to_wplus(g.get_latent(z.to(self.device)))
            styles = g.styles_from_latent(wp)
            img_a = g.synthesis(styles, "const")
            emb_a = self.guide.encode_images(img_a) if use_clip else None
            # each sample's domain (pure domains only: fit_analogies refuses convex mixes)
            pseudo = torch.cat([self.analogies[int(k)](img_a[i:i + 1]) for i, k in enumerate(ids)]) \
                if lc.analogy_l1 > 0 else None
        self.mapper.train()
        mults = self.mapper.weight_mults(g, mapper_in.to(self.device))
        img_b = g.synthesis(styles, "const", mults)
        emb_b = self.guide.encode_images(img_b) if use_clip else None
        stats = {}
        loss = img_b.new_zeros(())
        if lc.clip_direction > 0:
            d = self.guide.direction_loss(emb_b, emb_a, directions)
            loss = loss + lc.clip_direction * d
            stats["direction"] = d.item()
        if pseudo is not None:
            d = (img_b.clamp(-1, 1) - pseudo).abs().mean()
            loss = loss + lc.analogy_l1 * d
            stats["analogy_l1"] = d.item()
        if lc.tt_direction > 0:
            tt = self.guide.tt_direction_loss(emb_b, directions, ids)
            loss = loss + lc.tt_direction * tt
            stats["tt_direction"] = float(tt.detach()) if torch.is_tensor(tt) else float(tt)
        if lc.indomain > 0:
            ind = self.grouped_indomain(emb_b, emb_a, ids)
            loss = loss + lc.indomain * ind
            stats["indomain"] = float(ind.detach())
        if lc.offsets_l2 > 0:
            l2 = sum((m - 1).square().mean() for m in mults if m is not None)
            loss = loss + lc.offsets_l2 * l2
            stats["offsets_l2"] = float(l2.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(list(self.mapper.parameters()))
        self.opt.step()
        if self.world > 1:  # BatchNorm statistics: rank 0's, as DistributedDataParallel broadcasts them
            import torch.distributed as dist
            for b in self.mapper.buffers():
                dist.broadcast(b, 0)
        stats["loss"] = loss.item()
        self.step += 1
        return stats

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        # the analogies too: refitting them at --resume would cost a minute; the saved ones are exact
        return {"step": self.step, "elapsed_s": self.elapsed, "mapper": self.mapper.state_dict(),
                "opt": self.opt.state_dict(), "rng": rng_state(), "domains": [list(d) for d in self.domains],
                "analogies": [a.state_dict() for a in self.analogies]}

    def load_state_dict(self, state: dict) -> None:
        if [tuple(d) for d in state["domains"]] != self.domains:
            raise ValueError("the checkpoint was trained on another domain list; choose another exp.run_dir")
        if len(state.get("analogies", [])) != len(self.analogies):
            raise ValueError("the checkpoint was trained with another loss.analogy_l1 setting; choose another "
                             "exp.run_dir")
        for analogy, saved in zip(self.analogies, state.get("analogies", [])):
            analogy.load_state_dict(saved)
        self.mapper.load_state_dict(state["mapper"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    # -- outputs -------------------------------------------------------------------------------------------

    def direction_for(self, text: str):
        emb = self.guide.encode_texts([text], ["{}"])[0][0, 0]
        return self.mapper.direction(emb, prompt=text)

    @torch.no_grad()
    def write_samples(self, path: Path, extra_prompts: tuple[str, ...] = ()) -> Path:
        """Source row, then one row per training domain (and per extra prompt)."""
        from ..directions import DomainEdit
        z = self.sample_z.to(self.device)
        rows = [self.source.generate(z)]
        for text in [t for t, _ in self.domains] + list(extra_prompts):
            rows.append(DomainEdit(self.source, [(self.direction_for(text), 1.0)], check=False).generate(z))
        return save_grid(torch.cat(rows).cpu(), path, nrow=z.shape[0])

    def export(self, path: str | Path | None = None) -> Path:
        """The hypernetwork with its manifest (default: ``hypernet.safetensors`` in the run folder)."""
        from adapt_common.files import tensors_hash
        return self.mapper.save_pretrained(path or self.run_dir / self.mapper.FILE_NAME, clip=self.guide.names[0],
                                           domains=[list(d) for d in self.domains], steps=self.step,
                                           base_generator={"hash": tensors_hash(self.source.state_dict())},
                                           training_config=to_dict(self.cfg))

    def evaluate(self, n: int) -> dict:
        """Ground-truth error of the predicted modulation for each named similar SynthFaces training domain and
        each held-out ``domains.unseen`` prompt (a composition of domains, unseen in training)."""
        from adapt_common import synthfaces as sf
        from adapt_common.metrics.domain import domain_error
        from ..directions import DomainEdit
        cases = [(text, [name]) for (text, _), name in zip(self.domains, self.cfg.domains.names)]
        for line in self.cfg.domains.unseen:
            text, _, names = str(line).partition("=")
            cases.append((text.strip(), [x.strip() for x in names.split("+") if x.strip()]))
        out = {}
        from ..seeds import z_from_seeds
        first = self.cfg.evaluation.seed
        z = z_from_seeds(list(range(first, first + n)), self.source.style_dim).to(self.device)

        def truth(x, names):
            for name in names:
                x = sf.apply_domain(x, name).clamp(-1, 1)
            return x
        with torch.no_grad():
            src = self.source.generate(z)
            for text, names in cases:
                if not names or any(nm not in sf.DOMAINS or sf.DOMAINS[nm].kind != "similar" for nm in names):
                    continue
                tgt = DomainEdit(self.source, [(self.direction_for(text), 1.0)], check=False).generate(z)
                err = domain_error(tgt, src, lambda x, names=names: truth(x, names))
                out["+".join(names)] = {"prompt": text, "seen": len(names) == 1 and text in dict(self.domains),
                                        "pixel_l1": err["pixel_l1"],
                                        "identity_l1": err["identity_baseline"]["pixel_l1"],
                                        "gap_closed": err["gap_closed"]["pixel_l1"],
                                        # the judge CLIP: which domain it calls the images
                                        "clip_domain": self.clip_domains(tgt, names)}
        return out

    @torch.no_grad()
    def clip_domains(self, images: torch.Tensor, names: list[str]) -> dict[str, float]:
        """The fraction of ``images`` the judge (``evaluation.clip``, by default a CLIP that guided nothing)
        classifies as each of ``names`` (zero-shot among photo and every similar SynthFaces domain)."""
        from adapt_common import synthfaces as sf
        from adapt_common.clip_models import load_clip, same_clip
        from adapt_common.metrics.domain import domain_accuracy
        judge = self.cfg.evaluation.clip
        if self._judge is None:
            same = next((c for c, name in zip(self.guide.clips, self.guide.names) if same_clip(judge, name)), None)
            self._judge = same if same is not None else load_clip(judge, self.device)
        clip = self._judge
        doms = ["photo"] + [n for n, d in sf.DOMAINS.items() if d.kind == "similar"]
        acc = domain_accuracy(clip, images, doms, [sf.domain_prompt(d) for d in doms])
        return {n: acc["counts"][n] / acc["n"] for n in names}

    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.start(resume)
        n_params = sum(p.numel() for p in self.mapper.parameters())
        self._log(f"hypernetwork: {n_params:,} parameters for {len(self.domains)} domains; {self.world} "
                  f"process(es), batch {cfg.training.batch} each")
        self.loop(cfg.training.iters, resume)
        result = {"steps": self.step, "wall_time_s": self.elapsed}
        if self.rank == 0:
            result["file"] = str(self.export())
            if cfg.evaluation.n > 0 and cfg.domains.names:
                import json
                result["eval"] = self.evaluate(cfg.evaluation.n)
                (self.run_dir / "eval.json").write_text(json.dumps(result["eval"], indent=2))
                for name, e in result["eval"].items():
                    seen = "seen" if e["seen"] else "unseen"
                    clip = ", ".join(f"{k} {v:.0%}" for k, v in e["clip_domain"].items())
                    self._log(f"{name} ({seen}): L1 {e['pixel_l1']:.4f} (identity {e['identity_l1']:.4f}, gap closed "
                              f"{e['gap_closed']:.3f}); CLIP calls it {clip}")
        return result


def train(cfg: HyperConfig, resume: bool = False, quiet: bool = False) -> HyperTrainer:
    init_distributed()
    trainer = HyperTrainer(cfg, quiet=quiet)
    try:
        trainer.fit(resume=resume)
    finally:
        finish_distributed()
    return trainer
