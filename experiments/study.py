"""The study: StyleDomain's findings reproduced on SynthFaces, judged by ground truth, in one command.

    python -m experiments.study --config configs/study/quick.yaml [key=value ...] [--report-only | --from-results]

Runs a grid of training cells and writes ``reports/<name>/``: ``results.json`` (every cell, every seed, with the
per-latent ground-truth errors the paired comparisons need), ``README.md`` (tables with means and 95 % bootstrap
intervals, and the paper's claims checked one by one as paired comparisons against stated margins),
``plots/*.png`` (loss curves, domain error against iterations, sparsity sweep) and ``grids/*.png`` (samples).

Every ground-truth number is scored on the same evaluation latents (the seeds ``exp.eval_seed ..``), so two cells
of one comparison are paired latent by latent: the report bootstraps the difference over runs (seeds x domains)
and latents (``adapt_common.metrics.stats``). ``--report-only`` rebuilds the report from the cells in the work
folder; ``--from-results`` rebuilds it from the committed ``reports/<name>/results.json`` alone.

The grid (each part can be switched off in the config):
- one-shot, similar domains (image- and text-guided): full, StyleSpace direction, its sparse form, HyperDomainNet
  modulation, Affine+; parameters, file size, wall time, ground-truth domain error, CLIP quality/diversity, FID;
- few-shot, dissimilar domains (10 shots): full, Affine+, AffineLight+, StyleSpace, mapping; FID/KID,
  intra-cluster diversity, wall time;
- diffusion (10 shots): full fine-tuning, SVDiff, SVDiff + DomainStudio; parameters, file size, FID, intra-LPIPS,
  domain error;
- properties of directions: mixing (the judge CLIP's domain probabilities and the composed ground truth),
  transfer (a direction on a generator fine-tuned from the source), sparsity sweep;
- FID floors: real images against other real images of each few-shot / diffusion domain at the sample size and
  resolution the tables use (the FID a perfect generator gets there).

Each cell's result is written to ``runs/study/<name>/cells/`` as soon as it finishes, so an interrupted study
picks up where it stopped (the run folders there are scratch). ``--report-only`` rebuilds the report from them.

Training cells run as jobs of `submitit <https://github.com/facebookincubator/submitit>`_ (``exp.engine``):
``local`` starts them as processes on this machine, ``exp.jobs`` at a time; ``slurm`` submits them to a Slurm
cluster as one job array (``exp.jobs`` running at once, resources from ``exp.slurm``); ``inline`` runs them one
after another in this process (debugging). Each job runs one cell and writes its result file, so resuming works
the same way whatever ran it; a job's output is in ``runs/study/<name>/jobs/``. submitit rather than Ray: it needs
no running service, pickles a plain function, and the same code path drives a laptop and a Slurm cluster.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adapt_common.config import load_config
from adapt_common.files import atomic_path
from adapt_common.metrics.evaluate import TEST_START
from gan_adapt.parameterizations import SPECS, spec

# -- configuration -------------------------------------------------------------------------------------------


@dataclass
class StudyExp:
    name: str = "quick"
    seeds: list = field(default_factory=lambda: [0, 1])
    threads: int = 2  # per process
    # training cells running at once as jobs (each with `threads`); then this process runs the property cells
    # (they use the one-shot cells' directions) and writes the report. On a 2-core CPU two 1-thread processes got
    # through two one-shot cells 1.4x faster than one 2-thread process (configs/study/quick.yaml).
    jobs: int = 1
    engine: str = "local"  # local | slurm | inline: what runs the training cells (see the module docstring)
    # training cells one job runs one after another (local and slurm engines): a job's process starts Python, imports
    # torch and loads the judge CLIP and the source generator once for all of them, about 10 s a process on 2 CPU
    # cores, against 5-30 s for a quick one-shot cell; every cell's result is still written as soon as it finishes
    cells_per_job: int = 1
    # Slurm resources per cell (engine slurm): partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb, and any
    # other submitit `slurm_*` parameter by its name without the prefix (e.g. account, qos, constraint)
    slurm: dict = field(default_factory=lambda: {"partition": "", "timeout_min": 240, "gpus_per_node": 1,
                                                 "cpus_per_task": 4, "mem_gb": 32})
    device: str = "cpu"
    generator: str = "checkpoints/synthfaces_stylegan2.safetensors"
    # the judge: CLIP domain scores and FID features; never a CLIP that guides a cell (Study.check_judge)
    clip: str = "synthfaces_judge"
    features: str = "clip"  # FID/KID features: clip | inception | auto
    report_dir: str = "reports"
    work_dir: str = "runs/study"  # scratch run folders and per-cell results (resume)
    # every cell is evaluated on the same latents / noises, from this seed, and against the SynthFaces eval images
    # from this index: the test split (adapt_common.metrics.evaluate.TEST_START), which no config, rate or step
    # count was chosen on (those use the validation split from 0, every trainer's own report)
    eval_seed: int = TEST_START


@dataclass
class OneShotGrid:
    enabled: bool = True
    config: str = "configs/oneshot_sketch_image.yaml"  # the recipe every cell starts from
    domains: list = field(default_factory=lambda: ["sketch", "sepia", "negative", "popart", "pixelart"])
    guidance: list = field(default_factory=lambda: ["image", "text"])
    # image-guided cells: which reference image of each domain, as indices of its few-shot stream
    # (``synthfaces:<domain>/<index>``); every index is one more run per seed, so a result is not one picture's luck
    refs: list = field(default_factory=lambda: [0])
    parameterizations: list = field(default_factory=lambda: ["full", "stylespace", "dommod", "affine_plus"])
    # learning rate and Adam betas per parameterization: the papers' values, from gan_adapt.parameterizations.SPECS
    # (a config may set any of them: oneshot.lr.<name>=...)
    lr: dict = field(default_factory=lambda: {n: s.oneshot_lr for n, s in SPECS.items() if s.oneshot_lr is not None})
    betas: dict = field(default_factory=lambda: {n: list(s.oneshot_betas) for n, s in SPECS.items()})
    sparse_keep: float = 0.2  # the sparse direction: the largest |Δs| of each trained direction cell
    iters: int = 300
    milestones: int = 4  # domain error measured this many times over training (the curve)
    n_curve: int = 64
    n_eval: int = 256
    extra: list = field(default_factory=list)  # key=value overrides for every cell


@dataclass
class FewShotGrid:
    enabled: bool = True
    config: str = "configs/fewshot_cat_affine_plus.yaml"
    domains: list = field(default_factory=lambda: ["cat", "robot"])
    shots: int = 10
    parameterizations: list = field(default_factory=lambda: ["full", "affine_plus", "affine_light_plus",
                                                             "stylespace", "mapping"])
    # the generator's learning rate and extra overrides per parameterization, from SPECS (as oneshot.lr)
    lr_g: dict = field(default_factory=lambda: {n: s.fewshot_lr_g for n, s in SPECS.items()
                                                if s.fewshot_lr_g is not None})
    overrides: dict = field(default_factory=lambda: {n: list(s.fewshot_overrides) for n, s in SPECS.items()
                                                     if s.fewshot_overrides})
    iters: int = 1500
    n_eval: int = 500
    extra: list = field(default_factory=list)


@dataclass
class DiffusionGrid:
    enabled: bool = True
    model: str = "checkpoints/synthfaces_ddpm"
    domain: str = "sketch"
    shots: int = 10
    variants: dict = field(default_factory=lambda: {
        "full": "configs/ddpm_fewshot_sketch_full.yaml",
        "svdiff": "configs/ddpm_fewshot_sketch_svdiff.yaml",
        "svdiff_domainstudio": "configs/ddpm_fewshot_sketch_svdiff_domainstudio.yaml"})
    iters: int = 1000
    n_eval: int = 500
    ddim_steps: int = 25
    extra: list = field(default_factory=list)


@dataclass
class PropertiesGrid:
    enabled: bool = True
    direction: str = "stylespace"  # which one-shot cells' directions the properties use (image-guided)
    mix_pairs: list = field(default_factory=lambda: [["sketch", "sepia"], ["negative", "pixelart"]])
    transfer_to: str = "fewshot:cat"  # fewshot:<domain> (its full fine-tune) or oneshot:<domain> (its full run)
    sparsity: list = field(default_factory=lambda: [1.0, 0.5, 0.2, 0.1, 0.05, 0.02])
    n: int = 128


@dataclass
class ReportSettings:
    """How the report judges the claims (experiments/study_report.py). Each claim is a paired difference with a 95 %
    bootstrap interval over runs (seeds x domains) and evaluation latents, read against a margin:

    - ``gap_closed`` (0.05): "≈" and "loses little" claims on the ground truth, in units of the gap between doing
      nothing and the truth (1 = the whole gap). Two methods within 1/20 of that distance are called the same; the
      value is a convention fixed before these results, not fitted to them;
    - ``l1`` (0.005): "beats" / "better than doing nothing" claims on the ground-truth pixel L1 (0..1 scale): half a
      percent of the pixel range, on average over the image; below it a difference is not called a win;
    - ``presence`` (0.05): a mixed direction "shows" a style when the judge CLIP's probability of that style on the
      mixed images exceeds its probability under the other direction alone by more than this;
    - ``diversity`` (0.01): "more diverse" for the diffusion cells (intra-cluster diversity, compared per seed).

    ``student``: Student's interval with the bootstrap's standard error instead of the percentile interval, which is
    too narrow with a few runs (3 seeds of a few-shot or diffusion comparison; adapt_common.metrics.stats)."""
    margins: dict = field(default_factory=lambda: {"gap_closed": 0.05, "l1": 0.005, "presence": 0.05,
                                                   "diversity": 0.01})
    level: float = 0.95
    n_boot: int = 2000
    student: bool = True


@dataclass
class StudyConfig:
    exp: StudyExp = field(default_factory=StudyExp)
    oneshot: OneShotGrid = field(default_factory=OneShotGrid)
    fewshot: FewShotGrid = field(default_factory=FewShotGrid)
    diffusion: DiffusionGrid = field(default_factory=DiffusionGrid)
    properties: PropertiesGrid = field(default_factory=PropertiesGrid)
    report: ReportSettings = field(default_factory=ReportSettings)


def _per_parameterization(values: dict, name: str, key: str):
    """The value a grid gives a parameterization (its lr), or an error naming the key to set."""
    spec(name)  # a name that is no parameterization is refused as such, with the known ones
    if name not in values:
        known = ", ".join(sorted(values))
        raise ValueError(f"{key}: no value for parameterization {name!r} (it has no default in "
                         f"gan_adapt.parameterizations.SPECS; set {key}.{name}=<value>; given for: {known})")
    return values[name]


# -- helpers -------------------------------------------------------------------------------------------------


def file_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def log_columns(path: Path, columns: tuple[str, ...]) -> dict[str, list[float]]:
    """Columns of a run's log.csv (missing values skipped), for the loss curves."""
    import csv
    out: dict[str, list[float]] = {"step": []}
    out.update({c: [] for c in columns})
    if not Path(path).exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not all(row.get(c) not in (None, "") for c in columns):
                continue
            out["step"].append(float(row["step"]))
            for c in columns:
                out[c].append(float(row[c]))
    return out


def compact(values) -> list[float]:
    """Per-latent scores as a short list: floats rounded to 5 significant digits."""
    return [float(f"{float(v):.5g}") for v in values]


@torch.no_grad()
def per_latent_l1(images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean |images − truth| per image on the 0..1 scale, both clamped to [-1, 1]: the per-latent terms whose mean is
    ``adapt_common.metrics.domain.domain_error``'s ``pixel_l1`` (same definition, one value per latent)."""
    d = (images.detach().double().cpu().clamp(-1, 1) - truth.detach().double().cpu().clamp(-1, 1)).abs() / 2
    return d.flatten(1).mean(1)


def pick(report: dict) -> dict:
    """The numbers the tables use from a shared-metrics report."""
    de = report.get("domain_error") or {}
    icd = report.get("intra_cluster_diversity") or {}
    acc = report.get("domain_accuracy") or {}
    return {"fid": report.get("fid"), "kid": (report.get("kid") or {}).get("mean"),
            "intra_lpips": icd.get("value"), "diversity_metric": icd.get("metric"),
            "clip_quality": report.get("clip_quality"), "clip_diversity": report.get("clip_diversity"),
            "clip_accuracy": acc.get("accuracy"), "domain_l1": de.get("pixel_l1"),
            "identity_l1": (de.get("identity_baseline") or {}).get("pixel_l1"),
            "gap_closed": (de.get("gap_closed") or {}).get("pixel_l1"),
            "source_fid": (report.get("source") or {}).get("fid"),
            "per_latent": report.get("per_latent") or _per_image(de)}


def _per_image(domain_error: dict) -> dict | None:
    """A report's per-image ground-truth errors in the study's per-latent form (the diffusion cells': one value
    per DDIM sample, the same noises in every row)."""
    pi = domain_error.get("per_image")
    return {"domain_l1": pi["pixel_l1"], "identity_l1": pi["identity_l1"]} if pi else None


def synthfaces_truth(names: list[str]):
    """T_n ∘ … ∘ T_1: the ground-truth transform of one similar domain or of a composition of them."""
    from adapt_common import synthfaces as sf

    def apply(x):
        for name in names:
            x = sf.apply_domain(x, name).clamp(-1, 1)
        return x
    return apply


#: training parts by the length of their cells, longest first (a diffusion or few-shot cell takes about 30-45 s at
#: the quick grid's length, a one-shot cell 5-7 s)
PART_ORDER = ("diffusion", "fewshot", "oneshot")


def longest_first(keys: list[str]) -> list[str]:
    """The training cells in job order: longest parts first, so the short one-shot cells fill the end and no process
    idles while another finishes a chunk of long cells (order within a part kept)."""
    rank = {part: i for i, part in enumerate(PART_ORDER)}
    return sorted(keys, key=lambda k: rank.get(k.split("/", 1)[0], len(PART_ORDER)))


class Study:
    def __init__(self, cfg: StudyConfig, quiet: bool = False):
        self.cfg, self.quiet = cfg, quiet
        self.work = Path(cfg.exp.work_dir) / cfg.exp.name
        self.cells_dir = self.work / "cells"
        self.report_dir = Path(cfg.exp.report_dir) / cfg.exp.name
        self._clip = None
        self._source = None
        torch.set_num_threads(cfg.exp.threads)

    # -- shared pieces -------------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    @property
    def clip(self):
        if self._clip is None:
            from adapt_common.clip_models import load_clip
            self._clip = load_clip(self.cfg.exp.clip, self.cfg.exp.device)
        return self._clip

    @property
    def source(self):
        if self._source is None:
            from gan_adapt.formats import load_generator
            self._source = load_generator(self.cfg.exp.generator, device=self.cfg.exp.device).eval()
            self._source.requires_grad_(False)
        return self._source

    def cell_path(self, key: str) -> Path:
        return self.cells_dir / (key.replace("/", "__") + ".json")

    def done(self, key: str) -> dict | None:
        p = self.cell_path(key)
        return json.loads(p.read_text()) if p.exists() else None

    def other_threads(self, keys: list[str]) -> list[str]:
        """The done cells among ``keys`` that recorded another thread count than ``exp.threads`` (a resumed run
        with other settings): their wall times are not comparable with the cells this run adds."""
        return [k for k in keys if (d := self.done(k)) is not None and d.get("threads") != self.cfg.exp.threads]

    def record(self, key: str, result: dict) -> dict:
        result = {"key": key, "threads": self.cfg.exp.threads, **result}
        p = self.cell_path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        return result

    def run_dir(self, key: str) -> Path:
        d = self.work / "runs" / key
        if d.exists():  # a cell without a result was interrupted: start it again
            shutil.rmtree(d)
        return d

    def z(self, n: int, seed: int | None = None) -> torch.Tensor:
        from gan_adapt.seeds import z_from_seeds
        s = self.cfg.exp.eval_seed if seed is None else seed
        return z_from_seeds(list(range(s, s + n)), self.source.style_dim).to(self.cfg.exp.device)

    def evaluate_gan(self, generate, domain: str, n: int, out_dir: Path, settings: dict | None = None) -> dict:
        """Shared-metrics report of a GAN sampler ``generate(z)`` against ``domain`` on the study's latents."""
        from adapt_common.metrics.evaluate import evaluate, gan_sampler
        seen: dict[str, list] = {"z": [], "target": [], "source": []}

        with torch.random.fork_rng(devices=[]):  # measuring never moves a training run's random stream
            make_batch, source = gan_sampler(self.source)

            def target(z):  # the images evaluate scores, kept for the per-latent errors
                x = generate(z)
                seen["z"].append(z.detach().cpu())
                seen["target"].append(x.detach().float().cpu())
                return x

            def source_kept(z):
                x = source(z)
                seen["source"].append(x.detach().float().cpu())
                return x
            report = evaluate(target, domain, sample_source=source_kept, make_batch=make_batch, n=n, clip=self.clip,
                              features=self.cfg.exp.features, out_dir=out_dir, seed=self.cfg.exp.eval_seed,
                              eval_offset=self.cfg.exp.eval_seed, settings=settings, quiet=True)
            report["per_latent"] = self.per_latent_errors(domain, seen)
        return report

    def per_latent_errors(self, domain: str, seen: dict) -> dict | None:
        """Per-latent ground-truth L1 of the evaluated images and of the unadapted source (doing nothing), on the
        evaluation latents in order, or None when the domain has no ground truth for them. The truth is what
        ``evaluate`` uses: T(source) for a similar domain, the renderer's image of z's face parameters for cat/robot."""
        from adapt_common.metrics.evaluate import _fit, _latent_truth, synthfaces_domain
        dom = synthfaces_domain(domain)
        target, source = torch.cat(seen["target"]), torch.cat(seen["source"])
        size = int(target.shape[-1])
        target, source = _fit(target, size), _fit(source, size)
        if dom.transform is not None:
            truth = _fit(dom.transform(source), size)
        elif dom.latent_truth is not None:
            truth, _ = _latent_truth(dom, seen["z"], source, size)
            if truth is None:
                return None
        else:
            return None
        return {"domain_l1": compact(per_latent_l1(target, truth)),
                "identity_l1": compact(per_latent_l1(source, truth))}

    @torch.no_grad()
    def quick_error(self, generate, names: list[str], n: int, g_source=None, per_latent: bool = False) -> dict:
        """Ground-truth pixel L1 (and gap closed) of ``generate`` against T(source) on n fixed latents (the first n
        evaluation latents); with ``per_latent`` also each latent's L1 and that of doing nothing. It runs between
        training steps: loading the source generator here (the first time) draws random numbers, which would
        change the rest of the run depending on which cells ran before in this process, so the global random state
        is saved and restored around it."""
        from adapt_common.metrics.domain import domain_error
        with torch.random.fork_rng(devices=[]):
            z = self.z(n)
            src = (g_source or self.source).generate(z)
            tgt = generate(z)
            truth = synthfaces_truth(names)
            err = domain_error(tgt, src, truth)
        out = {"domain_l1": err["pixel_l1"], "identity_l1": err["identity_baseline"]["pixel_l1"],
               "gap_closed": err["gap_closed"]["pixel_l1"]}
        if per_latent:
            ref = truth(src.clamp(-1, 1))
            out["per_latent"] = {"domain_l1": compact(per_latent_l1(tgt, ref)),
                                 "identity_l1": compact(per_latent_l1(src, ref))}
        return out

    # -- one-shot ------------------------------------------------------------------------------------------

    def oneshot_cells(self):
        """Keys ``oneshot/<guidance>/<domain>/<name>/s<seed>`` (image-guided, reference 0) and
        ``oneshot/image/<domain>/<name>/ref<i>/s<seed>`` for the other references of ``oneshot.refs``."""
        g = self.cfg.oneshot
        for guidance in g.guidance:
            for domain in g.domains:
                for name in g.parameterizations:
                    for ref in ([int(r) for r in g.refs] if guidance == "image" else [0]):
                        for seed in self.cfg.exp.seeds:
                            where = f"{domain}/{name}" + (f"/ref{ref}" if ref else "")
                            yield f"oneshot/{guidance}/{where}/s{seed}", guidance, domain, name, int(seed), ref

    def run_oneshot(self, key: str, guidance: str, domain: str, name: str, seed: int, ref: int = 0) -> dict:
        from adapt_common import synthfaces as sf
        from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
        g, exp = self.cfg.oneshot, self.cfg.exp
        run = self.run_dir(key)
        target = ([f"target.image=synthfaces:{domain}/{ref}"] if guidance == "image"
                  else ["target.image=''", f"target.text={sf.domain_prompt(domain)}"])
        lr = _per_parameterization(g.lr, name, "oneshot.lr")
        betas = list(g.betas.get(name, [0.9, 0.999]))
        cfg = load_config(OneShotConfig, [g.config], [
            *target, f"target.domain={domain}", f"base={exp.generator}", f"exp.run_dir={run}",
            f"exp.seed={seed}", f"exp.threads={exp.threads}", f"exp.device={exp.device}",
            f"training.parameterization={name}", f"training.iters={g.iters}", f"training.lr={lr}",
            f"training.betas=[{betas[0]},{betas[1]}]", "evaluation.n=0", "logging.log_every=5",
            f"logging.sample_every={10 ** 9}", f"logging.checkpoint_every={10 ** 9}", *g.extra])
        tr = ClipTrainer(cfg, quiet=True)
        tr.start(False)
        gen = tr.param.generator
        curve = []
        marks = sorted({max(1, round(g.iters * (i + 1) / g.milestones)) for i in range(g.milestones)})
        for m in marks:
            tr.loop(m, resume=True)
            curve.append({"step": m, "elapsed_s": tr.elapsed, **self.quick_error(gen.generate, [domain], g.n_curve)})
        wall = tr.elapsed
        out = tr.export()
        report = self.evaluate_gan(gen.generate, domain, g.n_eval, run / "eval",
                                   {"parameterization": name, "guidance": guidance})
        grid = self.work / "grids" / (key.replace("/", "_") + ".png")
        tr.before_after(grid, z=self.z(8))
        result = {"part": "oneshot", "guidance": guidance, "domain": domain, "parameterization": name, "seed": seed,
                  "ref": ref if guidance == "image" else None,
                  "trainable": tr.param.num_trainable(), "file_bytes": file_size(out), "file": str(out),
                  "wall_s": round(wall, 1), "iters": g.iters, **pick(report), "curve": curve,
                  "loss": log_columns(run / "log.csv", ("loss",)), "grid": str(grid)}
        if SPECS[name].exports_direction:  # the sparse form: no retraining, the largest |Δs| kept
            from gan_adapt.directions import Direction, DomainEdit
            d = Direction.from_pretrained(out)
            sparse = d.sparse(g.sparse_keep)
            path = sparse.save_pretrained(run / "direction_sparse.safetensors")
            edit = DomainEdit(self.source, [(sparse, 1.0)])
            rep = self.evaluate_gan(edit.generate, domain, g.n_eval, run / "eval_sparse",
                                    {"parameterization": f"{name} sparse {g.sparse_keep}"})
            result["sparse"] = {"keep": g.sparse_keep, "nonzero": int(round(sparse.nonzero_fraction * sparse.size)),
                                "file_bytes": file_size(path), **pick(rep)}
        return result

    # -- few-shot ------------------------------------------------------------------------------------------

    def fewshot_cells(self):
        g = self.cfg.fewshot
        for domain in g.domains:
            for name in g.parameterizations:
                for seed in self.cfg.exp.seeds:
                    yield f"fewshot/{domain}/{name}/s{seed}", domain, name, int(seed)

    def run_fewshot(self, key: str, domain: str, name: str, seed: int) -> dict:
        from gan_adapt.training.engine import GanTrainConfig, GanTrainer
        g, exp = self.cfg.fewshot, self.cfg.exp
        run = self.run_dir(key)
        lr_g = _per_parameterization(g.lr_g, name, "fewshot.lr_g")
        cfg = load_config(GanTrainConfig, [g.config], [
            f"data.source=synthfaces:{domain}@{g.shots}", f"base={exp.generator}",
            f"exp.run_dir={run}", f"exp.seed={seed}", f"exp.threads={exp.threads}", f"exp.device={exp.device}",
            f"training.parameterization={name}", f"training.lr_g={lr_g}", f"training.iters={g.iters}",
            "evaluation.n=0", f"logging.sample_every={10 ** 9}", f"logging.checkpoint_every={10 ** 9}",
            *g.extra, *g.overrides.get(name, [])])
        tr = GanTrainer(cfg, quiet=True)
        tr.fit()
        adapter = tr.export_adapter(run / "adapter.safetensors")
        gen = tr.ema.merged_generator().eval()
        if name == "full":  # kept for the transfer property
            tr.export_generator(run / "generator.safetensors")
        report = self.evaluate_gan(gen.generate, domain, g.n_eval, run / "eval", {"parameterization": name})
        grid = self.work / "grids" / (key.replace("/", "_") + ".png")
        from adapt_common.image_io import save_grid
        with torch.no_grad():
            save_grid(torch.cat([self.source.generate(self.z(8)), gen.generate(self.z(8))]).cpu(), grid, nrow=8)
        return {"part": "fewshot", "domain": domain, "parameterization": name, "seed": seed,
                "trainable": tr.param.num_trainable(), "file_bytes": file_size(adapter), "wall_s": round(tr.elapsed, 1),
                "iters": g.iters, **pick(report), "loss": log_columns(run / "log.csv", ("g_loss", "d_loss")),
                "grid": str(grid), "generator": str(run / "generator.safetensors") if name == "full" else None}

    # -- diffusion -----------------------------------------------------------------------------------------

    def diffusion_cells(self):
        for variant in self.cfg.diffusion.variants:
            for seed in self.cfg.exp.seeds:
                yield f"diffusion/{variant}/s{seed}", variant, int(seed)

    def run_diffusion(self, key: str, variant: str, seed: int) -> dict:
        from diffusion_adapt.ddpm_trainer import DiffTrainConfig, DiffusionTrainer
        g, exp = self.cfg.diffusion, self.cfg.exp
        run = self.run_dir(key)
        cfg = load_config(DiffTrainConfig, [g.variants[variant]], [
            f"base={g.model}", f"data.source=synthfaces:{g.domain}@{g.shots}", f"exp.run_dir={run}",
            f"exp.seed={seed}", f"exp.threads={exp.threads}", f"exp.device={exp.device}",
            f"training.iters={g.iters}", f"evaluation.n={g.n_eval}", f"evaluation.steps={g.ddim_steps}",
            f"evaluation.clip={exp.clip}", f"evaluation.features={exp.features}", f"evaluation.seed={exp.eval_seed}",
            f"logging.sample_every={10 ** 9}", f"logging.checkpoint_every={10 ** 9}", *g.extra])
        tr = DiffusionTrainer(cfg, quiet=True)
        res = tr.fit()
        export = Path(res["export"])
        grid = self.work / "grids" / (key.replace("/", "_") + ".png")
        grid.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "eval" / "samples.png", grid)
        return {"part": "diffusion", "variant": variant, "seed": seed, "trainable": tr.num_trainable(),
                "file_bytes": file_size(export), "wall_s": round(tr.elapsed, 1), "iters": g.iters,
                **pick(res["report"]), "loss": log_columns(run / "log.csv", ("loss",)), "grid": str(grid)}

    # -- properties of directions --------------------------------------------------------------------------

    def _direction(self, domain: str, seed: int):
        from gan_adapt.directions import Direction
        cell = self.done(f"oneshot/image/{domain}/{self.cfg.properties.direction}/s{seed}")
        if cell is None:
            raise RuntimeError(f"the properties need the one-shot cell image/{domain}/"
                               f"{self.cfg.properties.direction}; add the domain to oneshot.domains")
        return Direction.from_pretrained(cell["file"])

    @torch.no_grad()
    def domain_probs(self, images: torch.Tensor, names: list[str], per_latent: bool = False) -> dict:
        """The judge CLIP's (``exp.clip``) mean probability of each SynthFaces domain (softmax over all similar domains and
        photo, at CLIP's logit scale); with ``per_latent`` each image's probabilities (lists) instead."""
        from adapt_common import synthfaces as sf
        doms = ["photo"] + [n for n, d in sf.DOMAINS.items() if d.kind == "similar"]
        emb = torch.nn.functional.normalize(self.clip.encode_images(images).float(), dim=-1)
        txt = torch.nn.functional.normalize(self.clip.encode_texts([sf.domain_prompt(d) for d in doms]).float(), dim=-1)
        p = (100.0 * emb @ txt.T).softmax(dim=-1)
        if per_latent:
            return {n: compact(p[:, doms.index(n)].tolist()) for n in names}
        p = p.mean(0)
        return {n: float(p[doms.index(n)]) for n in names}

    def run_mixing(self, key: str, a: str, b: str, seed: int) -> dict:
        from gan_adapt.directions import DomainEdit, mix
        n = self.cfg.properties.n
        da, db = self._direction(a, seed), self._direction(b, seed)
        z = self.z(n)
        rows = {}
        with torch.no_grad():
            for label, edit in (("source", []), (a, [(da, 1.0)]), (b, [(db, 1.0)]),
                                (f"{a}+{b}", [(mix([da, db], [1.0, 1.0]), 1.0)])):
                gen = DomainEdit(self.source, edit).generate
                images = gen(z)
                probs = self.domain_probs(images, ["photo", a, b], per_latent=True)
                err = self.quick_error(gen, [a, b], n, per_latent=True)
                rows[label] = {"probs": {k: sum(v) / len(v) for k, v in probs.items()},
                               "per_latent_probs": {k: probs[k] for k in (a, b)},
                               "error_vs_composed": {k: v for k, v in err.items() if k != "per_latent"},
                               "per_latent_l1": err["per_latent"]["domain_l1"]}
        return {"part": "mixing", "pair": [a, b], "seed": seed, "rows": rows}

    def transfer_target(self) -> tuple[str, str]:
        """``properties.transfer_to`` as (part, domain): whose full fine-tune the transfer cells read."""
        where, _, other = self.cfg.properties.transfer_to.partition(":")
        if where not in ("fewshot", "oneshot") or not other:
            raise ValueError(f"properties.transfer_to={self.cfg.properties.transfer_to!r}: use fewshot:<domain> or "
                             "oneshot:<domain>")
        return where, other

    def run_transfer(self, key: str, domain: str, seed: int) -> dict:
        import warnings

        from adapt_common.image_io import save_grid
        from gan_adapt.adapter_files import Adapter, TransferNote
        from gan_adapt.directions import DomainEdit
        from gan_adapt.formats import load_generator
        where, other = self.transfer_target()
        cell = self.done(f"fewshot/{other}/full/s{seed}" if where == "fewshot" else f"oneshot/image/{other}/full/s{seed}")
        if cell is None:
            raise RuntimeError(f"the transfer needs the full run of {self.cfg.properties.transfer_to} (seed {seed}); "
                               "add it to that part of the grid")
        if where == "fewshot":
            target_g = load_generator(cell["generator"], device=self.cfg.exp.device).eval()
        else:
            adapter = Adapter.from_pretrained(cell["file"])
            target_g = adapter.parameterization(self.source).merged_generator().eval()
        d = self._direction(domain, seed)
        n = self.cfg.properties.n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TransferNote)  # the transfer is the point here, not an accident
            on_source = self.quick_error(DomainEdit(self.source, [(d, 1.0)]).generate, [domain], n, per_latent=True)
            edited = DomainEdit(target_g, [(d, 1.0)]).generate
            on_target = self.quick_error(edited, [domain], n, g_source=target_g, per_latent=True)
            grid = self.work / "grids" / f"transfer_{domain}_to_{other}_s{seed}.png"
            with torch.no_grad():
                z = self.z(8)
                save_grid(torch.cat([target_g.generate(z), edited(z)]).cpu(), grid, nrow=8)
        return {"part": "transfer", "domain": domain, "to": self.cfg.properties.transfer_to, "seed": seed,
                "on_source": on_source, "on_target": on_target, "grid": str(grid)}

    def run_sparsity(self, key: str, domain: str, seed: int) -> dict:
        from gan_adapt.directions import DomainEdit
        d = self._direction(domain, seed)
        rows = []
        for keep in self.cfg.properties.sparsity:
            dk = d if keep >= 1 else d.sparse(keep)
            rows.append({"keep": keep, **self.quick_error(DomainEdit(self.source, [(dk, 1.0)]).generate, [domain],
                                                          self.cfg.properties.n)})
        return {"part": "sparsity", "domain": domain, "seed": seed, "rows": rows}

    def run_floor(self, key: str, domain: str, n: int, size: int) -> dict:
        """FID/KID of real images against real images of ``domain`` at the sample size and resolution the cells
        used: the floor under which the tables' FIDs cannot be told apart from a perfect generator's."""
        from adapt_common.metrics.evaluate import real_vs_real
        from adapt_common.metrics.features import feature_extractor
        with torch.random.fork_rng(devices=[]):
            extractor = feature_extractor(self.cfg.exp.features, self.clip)
            floor = real_vs_real(domain, n, size, extractor, seed=self.cfg.exp.eval_seed,
                                 eval_offset=self.cfg.exp.eval_seed)
        return {"part": "floor", "domain": domain, "n": n, "size": size, "fid": floor["fid"],
                "kid": floor["kid"]["mean"], "kid_std": floor["kid"]["std"],
                "feature_extractor": floor["feature_extractor"]}

    def floor_cells(self):
        """One floor per (domain, n, size) the few-shot and diffusion tables report FID for."""
        c, floors = self.cfg, {}
        if c.fewshot.enabled:
            with torch.random.fork_rng(devices=[]):  # loading the generator draws numbers; a job's run must not see it
                size = int(self.source.size)
            for domain in c.fewshot.domains:
                floors[(domain, int(c.fewshot.n_eval), size)] = None
        if c.diffusion.enabled:
            cfg_path = Path(c.diffusion.model) / "unet" / "config.json"
            size = json.loads(cfg_path.read_text()).get("sample_size") if cfg_path.is_file() else None
            if isinstance(size, int):
                floors[(c.diffusion.domain, int(c.diffusion.n_eval), size)] = None
        for domain, n, size in floors:
            yield f"floor/{domain}/n{n}/{size}px", self.run_floor, (domain, n, size)

    def property_cells(self):
        p, seeds = self.cfg.properties, self.cfg.exp.seeds
        for a, b in p.mix_pairs:
            for s in seeds:
                yield f"mixing/{a}+{b}/s{s}", self.run_mixing, (a, b, int(s))
        for domain in self.cfg.oneshot.domains:
            for s in seeds:
                yield f"sparsity/{domain}/s{s}", self.run_sparsity, (domain, int(s))
        for domain in self.cfg.oneshot.domains[:2]:
            for s in seeds:
                yield f"transfer/{domain}/s{s}", self.run_transfer, (domain, int(s))

    # -- the whole grid ------------------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, Any, tuple]]:
        c = self.cfg
        cells = []
        if c.oneshot.enabled:
            cells += [(k, self.run_oneshot, args) for k, *args in self.oneshot_cells()]
        if c.fewshot.enabled:
            cells += [(k, self.run_fewshot, args) for k, *args in self.fewshot_cells()]
        if c.diffusion.enabled:
            cells += [(k, self.run_diffusion, args) for k, *args in self.diffusion_cells()]
        if c.properties.enabled:
            cells += list(self.property_cells())
        return cells + list(self.floor_cells())

    def check_judge(self) -> None:
        """Refuse a judge CLIP that also guides the one-shot cells: a guide's shortcuts (a tint it reads as a
        style) fool itself, so its scores would grade the training by its own loss."""
        from .study_report import guides_judging
        if not self.cfg.oneshot.domains:
            return
        guides, shared = guides_judging(self.cfg)
        if shared:
            raise ValueError(f"exp.clip={self.cfg.exp.clip!r} is also a guiding CLIP of the one-shot cells "
                             f"({self.cfg.oneshot.config}: loss.clip={guides}); judge with a CLIP that guided "
                             "nothing, e.g. exp.clip=synthfaces_judge (bundled) or another real model")

    def check_transfer(self) -> None:
        """Refuse, before any cell runs, a transfer property whose fine-tuned generator is not a cell of this grid
        (it would otherwise fail after every training cell)."""
        c = self.cfg
        if not (c.properties.enabled and any(k.startswith("transfer/") for k, _, _ in self.property_cells())):
            return
        where, other = self.transfer_target()
        part = c.fewshot if where == "fewshot" else c.oneshot
        missing = [what for what, ok in (
            (f"{where}.enabled", part.enabled), (f"{other!r} in {where}.domains", other in part.domains),
            (f"full in {where}.parameterizations", "full" in part.parameterizations),
            ("image in oneshot.guidance", where == "fewshot" or "image" in c.oneshot.guidance)) if not ok]
        if missing:
            raise ValueError(f"properties.transfer_to={c.properties.transfer_to!r} needs the full fine-tune of "
                             f"{other!r} in this grid, but it lacks: {'; '.join(missing)}. Add it, or point "
                             "transfer_to at a full run the grid has (or set properties.enabled=false)")

    def check(self) -> None:
        """What can be refused before any cell runs: the judge, the transfer's fine-tuned generator."""
        self.check_judge()
        self.check_transfer()

    def run(self) -> dict:
        """Run the cells not done yet (training cells through the engine, then the property cells here) and write
        the report."""
        self.check()
        training = (self.run_oneshot, self.run_fewshot, self.run_diffusion)
        cells = self.plan()
        todo = [c for c in cells if self.done(c[0]) is None]
        label = f"study {self.cfg.exp.name}"
        self.say(f"{label}: {len(cells)} cells, {len(cells) - len(todo)} already done ({self.cells_dir})")
        train_todo = [c for c in todo if c[1] in training]
        other = self.other_threads([k for k, fn, _ in cells if fn in training])
        if other and train_todo:
            self.say(f"{label}: warning: {len(other)} done training cell(s) ran with another thread count than "
                     f"exp.threads={self.cfg.exp.threads} (e.g. {other[0]}): the report's wall times will mix "
                     "them; delete those files in the cells folder to rerun them alike")
        t0 = time.time()
        if self.cfg.exp.engine == "inline":
            self.run_here(train_todo, label)
        elif train_todo:
            self.run_jobs(longest_first([key for key, _, _ in train_todo]), label)
        # the property cells run here, after the local jobs: their cores are free, so this process takes them all
        threads = torch.get_num_threads()
        if self.cfg.exp.engine == "local":
            torch.set_num_threads(max(int(self.cfg.exp.threads), int(self.cfg.exp.jobs)))
        try:
            self.run_here([c for c in todo if c[1] not in training], label + " properties")
        finally:
            torch.set_num_threads(threads)
        self.say(f"{label}: ran {len(todo)} cells in {(time.time() - t0) / 60:.1f} min")
        return self.write_report()

    def run_cell(self, key: str) -> dict:
        """Run one cell of the plan by its key and record its result."""
        for k, fn, args in self.plan():
            if k == key:
                t = time.time()
                return self.record(key, {**fn(key, *args), "cell_s": round(time.time() - t, 1)})
        raise KeyError(f"no cell {key!r} in study {self.cfg.exp.name}")

    def run_here(self, cells: list, label: str) -> None:
        from adapt_common.loop import progress
        bar = progress(len(cells), desc=label, quiet=self.quiet or not cells)
        for key, _, _ in cells:
            bar.set_postfix_str(key)
            self.run_cell(key)
            bar.update(1)
        bar.close()

    def executor(self):
        """The submitit executor of ``exp.engine`` (jobs log to ``<work>/jobs``)."""
        import submitit
        e = self.cfg.exp
        folder = self.work / "jobs" / "%j"
        if e.engine == "local":
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(timeout_min=int(e.slurm.get("timeout_min", 240)))
            return ex
        if e.engine == "slurm":
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
            res = dict(e.slurm)
            params = {"timeout_min": int(res.pop("timeout_min", 240)), "slurm_array_parallelism": e.jobs}
            for name in ("gpus_per_node", "cpus_per_task", "mem_gb"):
                if name in res:
                    params[name] = res.pop(name)
            params.update({f"slurm_{k}": v for k, v in res.items() if v not in ("", None)})
            ex.update_parameters(**params)
            return ex
        raise ValueError(f"exp.engine must be local, slurm or inline, got {e.engine!r}")

    def run_jobs(self, keys: list[str], label: str) -> None:
        """Training cells as submitit jobs, ``exp.jobs`` at a time; each job runs :func:`run_cells_job` on
        ``exp.cells_per_job`` cells."""
        from omegaconf import OmegaConf

        from adapt_common.config import to_dict
        from adapt_common.loop import progress
        self.work.mkdir(parents=True, exist_ok=True)
        cfg_path = str((self.work / "study_config.yaml").resolve())
        OmegaConf.save(OmegaConf.create(to_dict(self.cfg)), cfg_path)
        ex = self.executor()
        bar = progress(len(keys), desc=f"{label} ({self.cfg.exp.engine} jobs)", quiet=self.quiet)
        failed: list[str] = []

        def finish(chunk, job):
            try:
                job.result()
            except Exception as err:  # noqa: BLE001 - one failed cell must not stop the others
                lost = [k for k in chunk if self.done(k) is None]  # the cells of the job without a result
                failed.append(f"{', '.join(lost) or chunk[-1]}: "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else err!r} "
                              f"(log {job.paths.stderr})")
            bar.update(len(chunk))

        # the job function by its module's name: run as `python -m experiments.study` this file is __main__, and a
        # function pickled from there cannot rebuild its config classes in the job's process
        from experiments.study import run_cells_job as job_fn
        per = max(1, int(self.cfg.exp.cells_per_job))
        chunks = [keys[i:i + per] for i in range(0, len(keys), per)]
        if self.cfg.exp.engine == "slurm":  # one array; Slurm keeps `jobs` of it running
            for chunk, job in zip(chunks, ex.map_array(job_fn, [cfg_path] * len(chunks), chunks)):
                finish(chunk, job)
        else:  # a pool of `jobs` processes on this machine
            pending, running = list(chunks), []
            while pending or running:
                while pending and len(running) < max(1, self.cfg.exp.jobs):
                    chunk = pending.pop(0)
                    running.append((chunk, ex.submit(job_fn, cfg_path, chunk)))
                time.sleep(0.5)
                for item in [r for r in running if r[1].done()]:
                    running.remove(item)
                    finish(*item)
        bar.close()
        if failed:
            raise RuntimeError(f"{len(failed)} study cell(s) failed; rerun to continue where they stopped:\n  "
                               + "\n  ".join(failed))

    def results(self) -> list[dict]:
        keys = [k for k, _, _ in self.plan()]
        return [r for r in (self.done(k) for k in keys) if r is not None]

    def write_report(self, results: list[dict] | None = None, cfg: StudyConfig | None = None) -> dict:
        from .study_report import write_report
        return write_report(cfg or self.cfg, self.results() if results is None else results, self.report_dir)

    def write_report_from_results(self, path: str | Path | None = None) -> dict:
        """Rebuild the report from a results file (default: the committed ``reports/<name>/results.json``), with
        no cell in the work folder needed. The grid's settings are those the results were made with (saved in the
        file); how they are judged (``report``) and where the report goes are this config's."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException
        path = Path(path) if path else self.report_dir / "results.json"
        data = json.loads(Path(path).read_text())
        cfg = self.cfg
        if data.get("config"):
            try:
                cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StudyConfig),
                                                          OmegaConf.create(data["config"])))
            except OmegaConfBaseException:  # saved by an older layout: this config's grid stands in
                cfg = self.cfg
            cfg.report = self.cfg.report
            cfg.exp.name, cfg.exp.report_dir = self.cfg.exp.name, self.cfg.exp.report_dir
        return self.write_report(data["cells"], cfg)


def run_cells_job(config_path: str, keys: list[str]) -> list[str]:
    """What one engine job runs: the study of ``config_path`` (its resolved config), cells ``keys`` one after
    another in this process (one CLIP and one source generator for all), each recorded as soon as it ends."""
    cfg = load_config(StudyConfig, [config_path], [])
    study = Study(cfg, quiet=True)
    for key in keys:
        study.run_cell(key)
    return list(keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="configs/study/<name>.yaml")
    ap.add_argument("--report-only", action="store_true", help="rebuild reports/<name>/ from the finished cells")
    ap.add_argument("--from-results", action="store_true",
                    help="rebuild reports/<name>/ from its results.json alone (no cell files needed)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    cfg = load_config(StudyConfig, [args.config], args.overrides)
    if cfg.exp.engine not in ("local", "slurm", "inline"):
        ap.error(f"exp.engine={cfg.exp.engine!r}: use local, slurm or inline")
    study = Study(cfg)
    if not (args.from_results or args.report_only):
        try:
            study.check()
        except ValueError as e:
            ap.error(str(e))
    if args.from_results:
        out = study.write_report_from_results()
    else:
        out = study.write_report() if args.report_only else study.run()
    print(f"wrote {out['readme']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
