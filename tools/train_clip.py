"""Train the small SynthFaces CLIP: the ``clip`` package's own ``CLIP`` (ViT image tower) and real tokenizer,
contrastively on freshly rendered SynthFaces image-caption pairs across all domains and attributes.

    python -m tools.train_clip --config configs/clip_synthfaces.yaml [key=value ...] [--resume]

Data is a pure function of the step (faces ``step*batch ...`` of the train stream, domains drawn from a
generator seeded by the step), so a resumed run sees exactly the batches an uninterrupted one would.
Captions that agree word for word are positives of each other (soft targets), which avoids the false
negatives a small world produces. The result is written in OpenAI's state-dict format (float16), so
:func:`adapt_common.clip_models.load_clip` (and ``clip.load``) read it like a real ViT-B/32.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from adapt_common.clip_models import ClipModel, _import_clip
from adapt_common.config import describe, load_config, plain_config_warnings, to_dict
from adapt_common.config_sections import CadenceSection, ExpSection, base_setting, section, setting
from adapt_common.files import atomic_path
from adapt_common.loop import LoopHooks, LoopTrainer, rng_state, set_rng_state, set_threads


@dataclass
class ModelConfig:
    embed_dim: int = setting(128, "size of the joint image-text embedding")
    image_resolution: int = setting(64, "input image size in pixels")
    vision_layers: int = setting(4, "transformer layers of the ViT image tower")
    vision_width: int = setting(128, "width of the image tower (heads = width // 64, the clip package's rule)")
    vision_patch_size: int = setting(8, "ViT patch size in pixels")
    context_length: int = setting(32, "tokens per caption")
    transformer_width: int = setting(128, "width of the text transformer")
    transformer_layers: int = setting(4, "layers of the text transformer")


@dataclass
class DataConfig:
    size: int = setting(64, "rendered image size in pixels")
    batch: int = setting(128, "image-caption pairs per step")
    domains: list[str] = setting([], "the SynthFaces domains drawn from; empty: every domain, distractors included")
    stream_seed: int = setting(0, "seed of the train stream of faces")


@dataclass
class OptimConfig:
    steps: int = setting(2000, "training steps")
    lr: float = setting(5e-4, "AdamW peak learning rate")
    weight_decay: float = setting(0.1, "AdamW weight decay of the matrices")
    warmup: int = setting(100, "steps of the linear warm-up")
    min_lr_ratio: float = setting(0.05, "the cosine decay's last learning rate, as a fraction of lr")


@dataclass
class ClipLogging(CadenceSection):
    eval_every: int = setting(250, "zero-shot evaluation (a log.csv row with its accuracies) every this many steps")
    eval_per_domain: int = setting(32, "images per domain of that evaluation")


@dataclass
class ClipTrainConfig:
    """``python -m tools.train_clip``: the small SynthFaces CLIP, trained from nothing (``base`` stays empty)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"exp_name": "exp.name", "seed": "exp.seed", "threads": "exp.threads",
                                              "logging.run_dir": "exp.run_dir"}

    exp: ExpSection = section(ExpSection, "the run", trainer="clip_model", name="synthfaces_clip",
                              run_dir="runs/clip_synthfaces")
    base: str = base_setting("")
    output: str = setting("checkpoints/synthfaces_clip.pt", "the trained CLIP (OpenAI's state-dict layout, "
                                                            "float16), with its model card beside it")
    model: ModelConfig = section(ModelConfig, "the CLIP architecture (the clip package's CLIP)")
    data: DataConfig = section(DataConfig, "the rendered image-caption pairs")
    optim: OptimConfig = section(OptimConfig, "the optimisation")
    logging: ClipLogging = section(ClipLogging, "log, evaluation and checkpoint cadences")


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    clip = _import_clip()
    return clip.model.CLIP(cfg.embed_dim, cfg.image_resolution, cfg.vision_layers, cfg.vision_width,
                           cfg.vision_patch_size, cfg.context_length, 49408, cfg.transformer_width,
                           max(1, cfg.transformer_width // 64), cfg.transformer_layers).float()


def training_domains(cfg: DataConfig) -> list[str]:
    from adapt_common import synthfaces as sf
    names = list(cfg.domains) or list(sf.DOMAINS)
    unknown = [n for n in names if n not in sf.DOMAINS]
    if unknown:
        raise ValueError(f"unknown SynthFaces domains {unknown}; known: {sorted(sf.DOMAINS)}")
    return names


def make_batch(step: int, cfg: ClipTrainConfig, domains: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The images and captions of one step: a pure function of (config, step)."""
    from adapt_common import synthfaces as sf
    b = cfg.data.batch
    params = sf.sample_params(b, seed=cfg.data.stream_seed, offset=step * b)
    gen = torch.Generator().manual_seed(cfg.exp.seed * 1_000_003 + step)
    which = torch.randint(len(domains), (b,), generator=gen)
    images = torch.empty(b, 3, cfg.data.size, cfg.data.size)
    texts: list[str] = [""] * b
    for k, name in enumerate(domains):
        idx = (which == k).nonzero().flatten()
        if len(idx) == 0:
            continue
        sub = params[idx]
        images[idx] = sf.render_domain(sub, name, size=cfg.data.size)
        for i, t in zip(idx.tolist(), sf.captions(sub, name, seed=step)):
            texts[i] = t
    return images, texts


def contrastive_loss(img_emb, txt_emb, texts, logit_scale):
    """Symmetric InfoNCE with soft targets: identical captions are positives of each other."""
    logits = logit_scale * img_emb @ txt_emb.t()
    keys = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([keys[t] for t in texts])
    target = (ids[:, None] == ids[None, :]).float()
    target = target / target.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())


def lr_at(step: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate_clip(clip: ClipModel, per_domain: int = 64, size: int = 64, domains: list[str] | None = None,
                  attribute_domains: tuple[str, ...] = ("photo",)) -> dict:
    """Zero-shot domain classification and attribute retrieval on held-out SynthFaces (the eval stream).

    Domain accuracy: each image is classified among all domains by ``domain_prompt``. Attribute retrieval:
    for each attribute, each image is classified among that attribute's values by ``attribute_prompt``.
    """
    from adapt_common import synthfaces as sf
    domains = domains or list(sf.DOMAINS)
    text = clip.encode_texts([sf.domain_prompt(d) for d in domains])
    per = {}
    confusion = {}
    for k, name in enumerate(domains):
        params = sf.sample_params(per_domain, seed=sf.SPLITS["eval"], offset=k * per_domain)
        emb = clip.encode_images(sf.render_domain(params, name, size=size))
        pred = (emb @ text.t()).argmax(1)
        per[name] = (pred == k).float().mean().item()
        confusion[name] = {domains[j]: int((pred == j).sum()) for j in pred.unique().tolist()}
    main = [d for d in domains if sf.DOMAINS[d].kind != "distractor"]
    attrs = {}
    for dom in attribute_domains:
        params = sf.sample_params(per_domain * 4, seed=sf.SPLITS["eval"], offset=10_000)
        emb = clip.encode_images(sf.render_domain(params, dom, size=size))
        labels = sf.attributes(params)
        for attr, values in sf.ATTRIBUTE_VALUES.items():
            t = clip.encode_texts([sf.attribute_prompt(attr, v, dom) for v in values])
            pred = (emb @ t.t()).argmax(1)
            acc = (pred == labels[attr]).float().mean().item()
            chance = 1 / len(values)
            attrs[f"{dom}/{attr}"] = {"accuracy": acc, "chance": chance}
    return {
        "domain_accuracy": sum(per[d] for d in main) / len(main),
        "domain_accuracy_with_distractors": sum(per.values()) / len(per),
        "per_domain": per,
        "confusion": confusion,
        "attribute_retrieval": attrs,
        "attribute_accuracy_mean": sum(v["accuracy"] for v in attrs.values()) / max(1, len(attrs)),
        "per_domain_images": per_domain,
        "image_size": size,
    }


def export_state_dict(model: torch.nn.Module, path: str | Path) -> Path:
    """OpenAI's state-dict layout in float16 (what ``clip.model.build_model`` and ``clip.load`` read)."""
    sd = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
    return Path(path)


def check_config(cfg: ClipTrainConfig) -> None:
    """The shared keys this trainer cannot honour, refused rather than ignored."""
    if cfg.exp.trainer != "clip_model":
        raise ValueError(f"exp.trainer={cfg.exp.trainer!r}: this is a config of another trainer (tools.train_clip "
                         "runs exp.trainer=clip_model)")
    if cfg.base:
        raise ValueError(f"base={cfg.base!r}: the small CLIP trains from nothing; leave base empty")
    if cfg.exp.device != "cpu":
        raise ValueError(f"exp.device={cfg.exp.device!r}: tools.train_clip trains on the CPU; leave exp.device=cpu")


class ClipModelTrainer(LoopTrainer):
    """The small CLIP on :class:`LoopTrainer`'s loop: one contrastive step per :meth:`train_step`, the zero-shot
    evaluation every ``logging.eval_every`` steps (its accuracies join that step's log row), no sample grids."""

    def __init__(self, cfg: ClipTrainConfig, *, quiet: bool = False):
        check_config(cfg)
        set_threads(cfg.exp.threads, "exp.threads")
        self.cfg, self.quiet = cfg, quiet
        self.run_dir = Path(cfg.exp.run_dir)
        self.domains = training_domains(cfg.data)
        torch.manual_seed(cfg.exp.seed)
        self.model = build_model(cfg.model)
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optim.lr, betas=(0.9, 0.98),
                                     eps=1e-6)
        self.clip = ClipModel(self.model)  # preprocessing and tokenizer around the model being trained
        self.step, self.elapsed = 0, 0.0

    def train_step(self) -> dict:
        cfg, model = self.cfg, self.model
        model.train()
        images, texts = make_batch(self.step, cfg, self.domains)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, cfg.optim)
        img = F.normalize(model.encode_image(self.clip.preprocess(images)), dim=-1)
        txt = F.normalize(model.encode_text(self.clip.tokenize(texts)), dim=-1)
        loss = contrastive_loss(img, txt, texts, model.logit_scale.exp())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        self.step += 1
        stats = {"loss": loss.item(), "lr": lr_at(self.step - 1, cfg.optim),
                 "logit_scale": model.logit_scale.exp().item()}
        if self.step % cfg.logging.eval_every == 0 or self.step == cfg.optim.steps:
            model.eval()
            ev = evaluate_clip(self.clip, per_domain=cfg.logging.eval_per_domain, size=cfg.data.size,
                               domains=self.domains)
            model.train()
            stats.update(domain_accuracy=ev["domain_accuracy"], attribute_accuracy=ev["attribute_accuracy_mean"])
            self._log(f"step {self.step}: loss {stats['loss']:.3f}, domain accuracy {ev['domain_accuracy']:.3f}, "
                      f"attribute accuracy {ev['attribute_accuracy_mean']:.3f}")
        return stats

    def log_row(self, stats: dict) -> dict:
        return {"step": self.step, "loss": stats["loss"], "lr": stats["lr"], "logit_scale": stats["logit_scale"],
                "elapsed_s": self.elapsed, **{k: v for k, v in stats.items() if k.endswith("_accuracy")}}

    def log_due(self, stats: dict, last: bool) -> bool:
        return self.step % self.cfg.logging.log_every == 0 or "domain_accuracy" in stats

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "rng": rng_state(),
                "step": self.step, "elapsed_s": self.elapsed}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]

    def fit(self, resume: bool = False, hooks: LoopHooks | None = None) -> dict:
        """Train (``resume``: from the run folder's checkpoint), then export ``output``; after a stop by
        ``hooks.should_stop`` nothing is exported (the checkpoint holds the run)."""
        self.start(resume)
        self.loop(self.cfg.optim.steps, resume, hooks)
        if not self.stopped:
            self.model.eval()
            export_state_dict(self.model, self.cfg.output)
        return {"wall_time_s": self.elapsed, "steps": self.step, "output": self.cfg.output}


def train(cfg: ClipTrainConfig, resume: bool = False, hooks: LoopHooks | None = None) -> dict:
    return ClipModelTrainer(cfg).fit(resume, hooks)


def write_model_card(cfg: ClipTrainConfig, result: dict, command: str, per_domain: int = 100) -> dict:
    """Evaluate the exported file through the real loading path and write ``<output>.json`` and ``.md``."""
    from adapt_common import synthfaces as sf
    from adapt_common.clip_models import BUNDLED, DEFAULT_JUDGE, load_clip
    clip = load_clip(cfg.output)
    alias = next((k for k, v in BUNDLED.items() if v.resolve() == Path(cfg.output).resolve()), None)
    load_line = f"`load_clip(\"{cfg.output}\")`" + (f" (or `load_clip(\"{alias}\")`)" if alias else "")
    role = ("\nIt is the **judge**: reports score CLIP domain calls and FID features with it by default "
            "(`evaluation.clip`), and it guides nothing, so no report grades a run by the model that guided it. It "
            "was trained like the guide (`synthfaces`) but from another seed on another stream of faces.\n"
            if alias == DEFAULT_JUDGE else "")
    ev = evaluate_clip(clip, per_domain=per_domain, size=cfg.data.size, domains=training_domains(cfg.data))
    n_params = sum(p.numel() for p in clip.parameters())
    card = {"command": command, "config": to_dict(cfg), "wall_time_s": result["wall_time_s"], "steps": result["steps"],
            "parameters": n_params, "file_bytes": Path(cfg.output).stat().st_size, "evaluation": ev}
    out = Path(cfg.output)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    rows = "\n".join(f"| {d} | {sf.DOMAINS[d].kind} | {acc:.3f} |" for d, acc in ev["per_domain"].items())
    attrs = "\n".join(f"| {k} | {v['accuracy']:.3f} | {v['chance']:.3f} |" for k, v in ev["attribute_retrieval"].items())
    m = cfg.model
    md = f"""# SynthFaces CLIP (`{out.name}`)

A small CLIP in the `clip` package's own architecture (ViT image tower, real 49,408-token BPE tokenizer),
trained contrastively on SynthFaces image-caption pairs across all domains (distractors included) and
attributes. Loads through the same code as a real ViT-B/32: {load_line};
`clip.load("{out}", jit=False)` reads it too.
{role}
| | |
|---|---|
| architecture | embed {m.embed_dim}; image {m.image_resolution} px, ViT {m.vision_layers} layers, width {m.vision_width}, patch {m.vision_patch_size}; text {m.transformer_layers} layers, width {m.transformer_width}, context {m.context_length} |
| parameters | {n_params:,} ({Path(cfg.output).stat().st_size / 2**20:.1f} MiB, float16) |
| training | {result['steps']} steps of batch {cfg.data.batch}, AdamW lr {cfg.optim.lr}, seed {cfg.exp.seed}, faces of stream {cfg.data.stream_seed}, {torch.get_num_threads()} CPU threads |
| wall time | {result['wall_time_s'] / 60:.1f} min on a 2-core CPU machine |
| command | `{command}` |

## Zero-shot domain classification (held-out eval stream, {per_domain} images per domain, 64 px)

Each image is classified among all {len(ev['per_domain'])} domain prompts (`domain_prompt`, e.g.
"{sf.domain_prompt('sketch')}"). Accuracy over the source, similar and dissimilar domains:
**{ev['domain_accuracy']:.3f}**; with the distractor domains: {ev['domain_accuracy_with_distractors']:.3f}.

| domain | kind | accuracy |
|---|---|---|
{rows}

## Attribute retrieval (photo, {per_domain * 4} held-out faces)

Each image is classified among the values of one attribute (`attribute_prompt`). Mean accuracy
{ev['attribute_accuracy_mean']:.3f}.

| attribute | accuracy | chance |
|---|---|---|
{attrs}

## Caveats

A CLIP this small on a narrow world learns shortcuts (tint, saturation); the distractor domains exist so a
colour shift alone cannot look like a target domain, but guidance can still follow such features. Judge
adaptation by the SynthFaces ground-truth domain error, not by this model's scores alone.
"""
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(md)
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.train_clip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="config keys, defaults and meanings:\n" + describe(ClipTrainConfig))
    ap.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    ap.add_argument("--resume", action="store_true", help="continue the run in exp.run_dir")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.steps=500")
    args = ap.parse_args(argv)
    with plain_config_warnings():  # a config key under its old name: one "warning:" line
        cfg = load_config(ClipTrainConfig, args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    command = "python -m tools.train_clip " + " ".join(
        [f"--config {c}" for c in args.config] + list(args.overrides))
    card = write_model_card(cfg, result, command)
    print(json.dumps({**result, "domain_accuracy": card["evaluation"]["domain_accuracy"],
                      "attribute_accuracy": card["evaluation"]["attribute_accuracy_mean"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
