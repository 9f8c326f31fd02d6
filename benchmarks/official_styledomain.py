"""The OFFICIAL StyleDomain text-guided Δs trainer side by side with this project's one-shot trainer.

    python -m benchmarks.official_styledomain --upstream PATH/SimilarDomains [--steps 250] [--eval-n 128]
                                              [--chunk 10] [--json PATH] [--ours-set KEY=VALUE ...]

What it measures, for both trainers, on the bundled 64 px SynthFaces generator
(``checkpoints/synthfaces_stylegan2.safetensors``) and the bundled small CLIP (``checkpoints/synthfaces_clip.pt``),
with the same prompt pair ("a photo of a face" -> "a pencil sketch of a face"), the same number of steps and the
same learning rate:

- **seconds per step**: the summed wall-clock and this thread's CPU time of the training steps, divided by the
  number of steps (one torch thread; set ``OMP_NUM_THREADS=1`` too). The two trainers run in alternating chunks of
  ``--chunk`` steps, each with its own saved copy of the global random streams (torch, numpy, Python), so that a
  change of machine load falls on both alike and each sees the random numbers a run of its own would;
- **ground-truth gap closed** on SynthFaces "sketch": ``1 - L1(G_B(z), T(G_A(z))) / L1(G_A(z), T(G_A(z)))``
  (:func:`adapt_common.metrics.domain.domain_error`, ``gap_closed.pixel_l1``; T =
  ``adapt_common.synthfaces.apply_domain(x, "sketch")``) over ``--eval-n`` latents z from seeds 100000..
  (:func:`gan_adapt.seeds.z_from_seeds`), truncation 1, the generator's stored noise.

Both trained Δs are scored by ONE renderer, the project's generator: ours is its own ``direction``
parameterization; the official Δs (``heads.conv_i.params_in``, added to conv i's style vector s_i before
modulation, exactly what the project's ``direction`` does to ``conv.modulation.bias``) is copied into a fresh
``direction`` parameterization of the same source (conv_0 = ``conv1``, conv_i = ``convs[i-1]``). As a check, the
official generator (with the same weights) renders the same latents with its Δs and stored noise
(``randomize_noise=False``); the largest difference from the project's rendering is reported
(``official_render_max_abs_diff``, expected ~1e-6), as is the difference of the two SOURCE generators before
training (``source_max_abs_diff``).

The official side is ``td_single`` (``TextDrivenSingleDomainAdaptationTrainer``) from ``SimilarDomains/trainers.py``
configured from ``SimilarDomains/configs/td_nada_ffhq_sdelta.yaml`` (s_delta, no_coarse, batch 4, mixing 0.9,
direction 1.0 + indomain 0.25, Adam lr 0.05 betas (0.9, 0.999), Human -> The Joker replaced by our prompts,
``iter_num`` by ``--steps``). Our side is ``configs/oneshot_sketch_text.yaml`` with
``training.parameterization=direction`` (the conv-only Δs), ``training.iters``/``training.lr`` set to the same
steps and learning rate, and the official recipe's other numbers (``loss.indomain=0.25``,
``training.warmup_iters=0``, batch 4, mixing 0.9; see ``OURS_MATCH``); ``--ours-set`` overrides any of them.

Getting the upstream code (nothing of it is part of this repository; this script imports it from the path given)::

    git clone https://github.com/AIRI-Institute/StyleDomain /tmp/upstream_styledomain   # any folder outside the repo
    python -m benchmarks.official_styledomain --upstream /tmp/upstream_styledomain/SimilarDomains --steps 20

(checked against commit 44b8370c90df25754ec01e1f880ca02b502e3bce, "Add link to the QS notebook Colab"; the JSON
records the checkout's commit). Their Python requirements beyond this project's environment are only needed at
import time and are stubbed (below); ``omegaconf``, ``clip`` (OpenAI),
``torchvision``, ``scipy``, ``tqdm`` and ``numpy`` must be importable (they are in this project's venv).

Monkeypatches, all made from this script at run time (the checkout is not modified), and why:

1. ``wandb``, ``dlib``, ``sklearn``/``sklearn.decomposition``, ``IPython``, ``cv2`` (``STUBBABLE``): when not
   installed, empty stand-in modules go into ``sys.modules`` (any attribute use raises). ``trainers.py`` and
   ``core/`` import them at module level for the logger (wandb), face alignment (dlib), II2S inversion (sklearn),
   LPIPS's debugging hook (``from IPython import embed``) and image utilities (cv2); the text-driven ``td_single``
   path run here never calls them (the logger is not set up, see 6).
2. CLIP: ``trainers.load_clip`` (their ``core.utils.common.load_clip``, imported by name) is wrapped so that each
   encoder name of ``optimization_setup.visual_encoders`` loads ``checkpoints/synthfaces_clip.pt`` instead of
   downloading "ViT-B/32"/"ViT-B/16"; their own ``load_clip`` still builds the model (``clip.load``) and its
   differentiable preprocess (Normalize(-1, 2) -> Resize(64, bicubic) -> CenterCrop(64) -> CLIP Normalize).
   ``visual_encoders`` is set to ONE encoder (``--official-encoders 1``, the default), because both names would load
   the same small CLIP: two copies would double every CLIP loss and the CLIP time of a step for nothing
   (``--official-encoders 2`` reproduces that). Their ``encode_text`` tokenizes with ``clip.tokenize(text)`` (77
   tokens); the bundled CLIP's context is 32, so the ``clip`` module seen by ``trainers.py`` is replaced by a copy
   whose ``tokenize`` uses the loaded CLIP's context length with ``truncate=True`` (as the project's
   ``ClipModel.tokenize``); nothing else of ``clip`` changes.
3. Latent size: ``trainers.mixing_noise`` is wrapped: their ``train_step`` draws z with a hard-coded 512 dims
   (``mixing_noise(batch, 512, ...)``), the bundled generator's z has 128 (style_dim); the wrapper replaces the
   512 by the generator's ``style_dim`` and otherwise calls their ``mixing_noise`` (same mixing rule, same RNGs).
4. Channels: their ``OffsetsGenerator`` (rosinality's ``Generator`` with offsets) has rosinality's hard-coded table
   (512 up to 32 px, then 256·m, 128·m, ...), which cannot give the bundled generator's channels (channel_base
   2048, channel_max 64: 64, 64, 64, 64, 32 at 4..64 px). So the generator is built with ``channel_multiplier=1``
   (table 512, 512, 512, 512, 256 at 4..64 px: one rosinality count per distinct count of ours) and the
   layer constructors that ``OffsetsGenerator.__init__`` looks up in ``gan_models.StyleGAN2.offsets_model``
   (``ConstantInput``, ``OffsetsStyledConv``, ``ToRGB``) are wrapped to translate the channel counts they receive
   {512 -> 64, 256 -> 32} before calling the originals; ``trainers.get_stylegan_conv_dimensions`` (the Δs head
   sizes, same table with a default multiplier 2) is wrapped likewise (called with multiplier 1, then translated).
   Their ``OffsetsTunningGenerator`` loads the checkpoint with ``strict=False``, so the script checks that every
   tensor of the converted file was loaded with its shape (missing or unexpected keys stop the run) and that the
   source images equal the project generator's.
5. The generator file: the bundled safetensors is converted to a rosinality ``.pt`` (``g_ema`` + ``latent_avg``)
   in a temporary folder with the project's own :func:`gan_adapt.formats.rosinality.save`; ``generator_args``
   becomes ``{img_size: 64, latent_size: 128, map_layers: 4, channel_multiplier: 1, device: cpu}``.
6. Not patches but bypasses: their ``core/utils/arguments.py`` (``load_config``) fails at import on Python >= 3.11
   (a dataclass whose field default is a dataclass instance: "mutable default ... use default_factory"), so the
   script merges the config the same way by hand (the generator class's keyword defaults, then the YAML's
   ``generator_args``, under ``generator_args.stylegan2``). And their ``setup()``/``train_loop()`` need wandb
   (``LoggingManager``) and write image grids and ``models_*.pt`` files; the script calls the same setup methods
   minus the logger (``_setup_device``, ``_setup_batch_generators``, ``_setup_source_generator``, ``_setup_loss``,
   ``_setup_trainable``, ``_setup_optimizer``, ``_setup_text_embeddings``, in their order) and their own
   ``train_step`` ``--steps`` times. Their ``train_loop`` runs ``iter_num + 1`` steps (``range(0, iter_num + 1)``);
   here both sides run exactly ``--steps``. ``exp.seed`` (12) seeds Python/torch/numpy via their ``setup_seed``
   as their ``main.py`` does.

Differences between the two setups that remain (by design of each code base, not of this script):

- trained layers: their ``no_coarse`` freezes conv_0..conv_5 (a 1024 px list); at 64 px that leaves conv_6..8
  (the second 32 px conv and both 64 px convs): 160 of the 544 conv style dims. Ours trains all 9 convs (544).
  ``--official-no-coarse 0`` trains all 9 on their side too;
- text: their direction averages 79 ``imagenet_templates`` ("a bad photo of a {}." ...) filled with the prompt;
  ours the config's single template "{}";
- noise and mixing: their frozen and trainable generators are called separately with ``randomize_noise=True``
  (fresh noise per call) and, when mixing, each call draws its own ``inject_index``, so G_A(z) and G_B(z) of one
  step differ in noise and crossover layer; ours renders both with the stored noise and one shared inject index;
- direction loss: theirs ``1 - F.cosine_similarity`` (eps 1e-8); ours floors |E(b) - E(a)| at 0.02;
- CLIP preprocess: theirs torchvision ``Resize(64, bicubic)`` + ``CenterCrop`` on the [0, 1] tensor, ours
  :meth:`adapt_common.clip_models.ClipModel.preprocess`: both the identity resize at 64 px; ours then runs CLIP's
  ViT through its fast forward (same numbers), theirs through ``clip``'s ``encode_image``;
- per-step overheads of theirs: ``torch.autograd.set_detect_anomaly(True)`` around backward (NaN checks on every
  backward node), two mapping-network passes per step; ours maps once for both generators;
- steps: their ``train_loop`` would run ``iter_num + 1`` steps; here both run ``--steps``. Their warm-up is none,
  ours is set to none (``training.warmup_iters=0``); our config's ``loss.indomain`` 0.5 is set to their 0.25.

No fused CUDA op needs replacing: ``SimilarDomains/gan_models/StyleGAN2/op/__init__.py`` already imports the
pure-PyTorch ``upfirdn2d_torch_native``/``fused_act_torch_native``.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/oneshot_sketch_text.yaml"
OFFICIAL_CONFIG = "configs/td_nada_ffhq_sdelta.yaml"
GENERATOR = ROOT / "checkpoints/synthfaces_stylegan2.safetensors"
CLIP_FILE = ROOT / "checkpoints/synthfaces_clip.pt"
DOMAIN, SOURCE_TEXT, TARGET_TEXT = "sketch", "a photo of a face", "a pencil sketch of a face"
#: Modules their code imports at module level for features the td_single path never uses (patch 1).
STUBBABLE = ("wandb", "dlib", "sklearn", "sklearn.decomposition", "IPython", "cv2")
#: Our side's overrides that follow the official recipe (besides steps and lr, which come from the arguments).
OURS_MATCH = ["training.parameterization=direction", "training.batch=4", "training.mixing=0.9",
              "training.warmup_iters=0", "training.betas=[0.9,0.999]", "loss.clip_direction=1.0",
              "loss.indomain=0.25"]


class Clock:
    """Wall-clock and this thread's CPU time, summed over ``with clock:`` blocks; per-block wall times kept."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.each: list[float] = []

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc):
        dw = time.perf_counter() - self._w
        self.wall += dw
        self.cpu += time.thread_time() - self._c
        self.each.append(dw)


def rng_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def upstream_commit(path: Path) -> str:
    import subprocess
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


# ---- the official trainer ----------------------------------------------------------------------------------

def _stub_modules() -> list[str]:
    """Patch 1: empty stand-ins for import-only dependencies that are not installed."""
    import importlib

    class _Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            raise RuntimeError(f"{self.__name__}.{name} is a stand-in of benchmarks/official_styledomain.py "
                               "(the module is not installed); the text-driven path should not use it")

    stubbed = []
    from_import = {"IPython": ("embed",), "sklearn.decomposition": ("IncrementalPCA",)}
    for name in STUBBABLE:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _Stub(name)
            for attr in from_import.get(name, ()):  # ``from X import name`` needs the name to exist
                setattr(sys.modules[name], attr, _Stub(f"{name}.{attr}"))
            stubbed.append(name)
    if "sklearn" in stubbed:
        sys.modules["sklearn"].decomposition = sys.modules["sklearn.decomposition"]
    return stubbed


def import_upstream(upstream: Path, style_dim: int, channel_map: dict[int, int]) -> tuple[types.ModuleType, dict]:
    """Import their ``trainers`` module from ``upstream`` with patches 1-4 applied; returns it and a log."""
    upstream = upstream.resolve()
    if not (upstream / "trainers.py").is_file() or not (upstream / "core").is_dir():
        raise SystemExit(f"{upstream} is not StyleDomain's SimilarDomains folder (no trainers.py / core/)")
    if str(upstream) not in sys.path:
        sys.path.insert(0, str(upstream))
    log = {"stubbed_modules": _stub_modules()}
    cwd = os.getcwd()
    os.chdir(upstream)  # some of their modules resolve relative paths at import time
    try:
        import gan_models.StyleGAN2.offsets_model as om
        import trainers
        from core.utils import common
    finally:
        os.chdir(cwd)

    # Patch 4: the channel table.
    def remap(c: int) -> int:
        if c not in channel_map:
            raise ValueError(f"channel count {c} has no translation {channel_map}")
        return channel_map[c]

    orig_const, orig_conv, orig_rgb = om.ConstantInput, om.OffsetsStyledConv, om.ToRGB
    om.ConstantInput = lambda channel, *a, **k: orig_const(remap(channel), *a, **k)
    om.OffsetsStyledConv = lambda in_c, out_c, *a, **k: orig_conv(remap(in_c), remap(out_c), *a, **k)
    om.ToRGB = lambda in_c, *a, **k: orig_rgb(remap(in_c), *a, **k)
    orig_dims = common.get_stylegan_conv_dimensions
    trainers.get_stylegan_conv_dimensions = lambda size, channel_multiplier=2: [
        (remap(a), remap(b)) for a, b in orig_dims(size, channel_multiplier=1)]

    # Patch 3: z of the generator's size.
    orig_mixing = common.mixing_noise
    trainers.mixing_noise = lambda batch, latent_dim, prob, device: orig_mixing(
        batch, style_dim if latent_dim == 512 else latent_dim, prob, device)

    # Patch 2: every CLIP name -> the bundled CLIP file, through their own load_clip.
    orig_load_clip = common.load_clip
    context = {}

    def load_bundled_clip(model_name, device):
        model, preprocess = orig_load_clip(str(CLIP_FILE), device)
        context["length"] = int(model.positional_embedding.shape[0])
        return model, preprocess

    trainers.load_clip = load_bundled_clip
    # Patch 2b: their encode_text calls clip.tokenize(text) (77 tokens); the bundled CLIP reads 32.
    clip_proxy = types.ModuleType("clip")
    clip_proxy.__dict__.update({k: v for k, v in vars(trainers.clip).items() if not k.startswith("__")})
    orig_tokenize = trainers.clip.tokenize
    clip_proxy.tokenize = lambda texts, context_length=77, truncate=False: orig_tokenize(
        texts, context_length=context["length"], truncate=True)
    trainers.clip = clip_proxy
    log["patched"] = ["offsets_model.ConstantInput/OffsetsStyledConv/ToRGB (channels)",
                      "trainers.get_stylegan_conv_dimensions (channels)", "trainers.mixing_noise (z dims)",
                      "trainers.load_clip (CLIP file)",
                      "trainers.clip.tokenize (the CLIP's context length, truncate=True)"]
    return trainers, log


def official_config(upstream: Path, pt_path: Path, steps: int, lr: float, encoders: int, no_coarse: bool,
                    arch: dict):
    """Their td_nada_ffhq_sdelta.yaml, merged the way their ``load_config`` does, with our substitutions."""
    import inspect

    from omegaconf import OmegaConf
    from core.uda_models import uda_models
    conf = OmegaConf.load(upstream / OFFICIAL_CONFIG)
    # Their load_config builds these defaults with a dataclass of dataclass-instance defaults, which Python >= 3.11
    # refuses (core/utils/arguments.py fails at import: "mutable default ... use default_factory"); the same
    # merge by hand: the generator class's keyword defaults, then the config's generator_args.
    gen_cls = uda_models[conf.training.generator]
    base_gen = {k: v.default for k, v in inspect.signature(gen_cls.__init__).parameters.items()
                if k != "self" and v.default is not inspect.Parameter.empty}
    gen_args = {conf.training.generator: OmegaConf.merge(base_gen, conf.generator_args)}
    cfg = OmegaConf.merge(conf, OmegaConf.create({"generator_args": gen_args}))
    cfg.generator_args.stylegan2 = OmegaConf.merge(cfg.generator_args.stylegan2, {
        "img_size": arch["size"], "latent_size": arch["style_dim"], "map_layers": arch["n_mlp"],
        "channel_multiplier": 1, "device": "cpu", "checkpoint_path": str(pt_path)})
    cfg.training.device = "cpu"
    cfg.training.iter_num = steps
    cfg.training.source_class = SOURCE_TEXT
    cfg.training.target_class = TARGET_TEXT
    cfg.training.no_coarse = no_coarse
    cfg.optimization_setup.optimizer.lr = lr
    cfg.optimization_setup.visual_encoders = list(conf.optimization_setup.visual_encoders)[:encoders]
    return cfg


def build_official(trainers, cfg, pt_path: Path):
    """Their td_single trainer, set up like ``setup()`` minus the logger (bypass 6)."""
    from core.utils.common import setup_seed
    setup_seed(cfg.exp.seed)
    tr = trainers.trainer_registry[cfg.exp.trainer](cfg)
    tr._setup_device()
    tr._setup_batch_generators()
    tr._setup_source_generator()
    tr._setup_loss()
    tr._setup_trainable()
    tr._setup_optimizer()
    tr._setup_text_embeddings()
    # strict=False in their loader: check every tensor of the file landed, with its shape.
    file_sd = torch.load(pt_path, map_location="cpu", weights_only=True)["g_ema"]
    theirs = tr.source_generator.generator.state_dict()
    missing = sorted(set(theirs) - set(file_sd))
    unexpected = sorted(set(file_sd) - set(theirs))
    wrong = [k for k in set(theirs) & set(file_sd) if theirs[k].shape != file_sd[k].shape]
    if missing or unexpected or wrong:
        raise SystemExit(f"the official generator does not take the converted weights: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    return tr


def official_delta(tr) -> dict[str, torch.Tensor]:
    return {k: v["in"].detach().clone().reshape(-1) for k, v in tr.trainable().items()}


# ---- our trainer -------------------------------------------------------------------------------------------

def build_ours(run_dir: str, steps: int, lr: float, seed: int, extra: list[str], templates: list[str] | None = None):
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    overrides = [f"exp.run_dir={run_dir}", "exp.threads=1", "evaluation.n=0", f"exp.seed={seed}",
                 f"training.iters={steps}", f"training.lr={lr}", f"target.text={TARGET_TEXT}",
                 f"target.source_text={SOURCE_TEXT}", *OURS_MATCH, *extra]
    cfg = load_config(OneShotConfig, [ROOT / CONFIG], overrides)
    if templates:  # set on the loaded config: as a key=value override the templates' commas and dots would be YAML
        cfg.target.templates = list(templates)
        overrides.append(f"target.templates=<{len(templates)} official templates>")
    return ClipTrainer(cfg, quiet=True, optimised=True), overrides


# ---- scoring -----------------------------------------------------------------------------------------------

@torch.no_grad()
def render(g, z: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([g([z[i:i + batch]], randomize_noise=False)[0] for i in range(0, len(z), batch)])


@torch.no_grad()
def gap_closed(adapted: torch.Tensor, source: torch.Tensor, t_source: torch.Tensor) -> dict:
    from adapt_common.metrics.domain import domain_error
    err = domain_error(adapted, source, None, transformed_source=t_source)
    return {"gap_closed_l1": float(err["gap_closed"]["pixel_l1"]), "pixel_l1": float(err["pixel_l1"]),
            "identity_l1": float(err["identity_baseline"]["pixel_l1"])}


def param_with_official_delta(source, delta: dict[str, torch.Tensor]):
    """A fresh ``direction`` parameterization of ``source`` holding the official Δs (conv_i -> i-th conv)."""
    from gan_adapt.parameterizations import Parameterization
    param = Parameterization("direction", source)
    convs = [layer for layer in param.generator.style_layers() if layer.kind == "conv"]
    if len(convs) != len(delta):
        raise SystemExit(f"{len(delta)} official heads, {len(convs)} conv layers")
    with torch.no_grad():
        for i, layer in enumerate(convs):
            off = param.generator.get_submodule(layer.name).conv.modulation.parametrizations.bias[0].offset
            off.copy_(delta[f"conv_{i}"].to(off))
    return param


# ---- main --------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, type=Path, help="StyleDomain checkout's SimilarDomains folder")
    ap.add_argument("--steps", type=int, default=250, help="training steps of each trainer (official: 250)")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam learning rate of both (official: 0.05)")
    ap.add_argument("--chunk", type=int, default=10, help="steps per turn of each trainer")
    ap.add_argument("--eval-n", type=int, default=128, help="latents of the ground-truth score (seeds 100000..)")
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=12, help="both trainers' seed (official exp.seed: 12)")
    ap.add_argument("--official-encoders", type=int, default=1, choices=[1, 2],
                    help="CLIP copies on the official side (their config names 2, both map to the bundled CLIP)")
    ap.add_argument("--official-no-coarse", type=int, default=1, choices=[0, 1],
                    help="their training.no_coarse (1: as td_nada_ffhq_sdelta.yaml)")
    ap.add_argument("--ours-templates", choices=["ours", "official"], default="ours",
                    help="our side's prompt templates: ours (the config's \"{}\") or the official 79 imagenet "
                         "templates, read from the checkout")
    ap.add_argument("--ours-set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides of our side")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/official_styledomain.json"),
                    help="'' for none")
    args = ap.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 (this benchmark runs torch on one thread either way)", file=sys.stderr)
    torch.set_num_threads(1)
    os.chdir(ROOT)
    load_start = os.getloadavg()

    from gan_adapt.formats import load_checkpoint
    from gan_adapt.formats.rosinality import save as save_rosinality
    from gan_adapt.seeds import z_from_seeds
    from adapt_common.synthfaces import apply_domain

    ckpt = load_checkpoint(GENERATOR)
    source = ckpt.g_ema.eval().requires_grad_(False)
    arch = {"size": source.config.size, "style_dim": source.config.style_dim, "n_mlp": source.config.n_mlp}
    our_channels = {r: c for r, c in [(4, source.conv1.conv.out_channel)] +
                    [(2 ** (k + 3), source.convs[2 * k].conv.out_channel) for k in range(len(source.to_rgbs))]}
    rosi_m1 = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    channel_map: dict[int, int] = {}
    for r, c in our_channels.items():
        if channel_map.setdefault(rosi_m1[r], c) != c:
            raise SystemExit(f"rosinality's channel table (multiplier 1) cannot be translated to {our_channels}")

    with tempfile.TemporaryDirectory() as tmp:
        pt_path = Path(tmp) / "synthfaces_stylegan2_rosinality.pt"
        save_rosinality(ckpt, pt_path)
        trainers, patch_log = import_upstream(args.upstream, arch["style_dim"], channel_map)
        ocfg = official_config(args.upstream.resolve(), pt_path, args.steps, args.lr, args.official_encoders,
                               bool(args.official_no_coarse), arch)
        ocfg.exp.seed = args.seed  # their setup_seed(exp.seed) seeds their run, as exp.seed seeds ours
        setup = {"official": Clock(), "ours": Clock()}
        with setup["official"]:
            off = build_official(trainers, ocfg, pt_path)
        official_stream = rng_state()
        from core.utils.train_log import StreamingMeans
        iter_info = StreamingMeans()
        with setup["ours"]:
            templates = None
            if args.ours_templates == "official":  # their 79 prompt templates (core/utils/text_templates.py)
                from core.utils.text_templates import imagenet_templates
                templates = list(imagenet_templates)
            ours, our_overrides = build_ours(f"{tmp}/ours", args.steps, args.lr, args.seed, args.ours_set,
                                             templates)
        our_stream = rng_state()

        z_eval = z_from_seeds(list(range(args.eval_seed, args.eval_seed + args.eval_n)), arch["style_dim"])
        img_src = render(source, z_eval)
        with torch.no_grad():
            their_src = torch.cat([off.source_generator([z_eval[i:i + 32]], randomize_noise=False)[0]
                                   for i in range(0, len(z_eval), 32)])
        source_diff = float((their_src - img_src).abs().max())
        t_src = apply_domain(img_src.clamp(-1, 1), DOMAIN)
        trainable_off = sum(p.numel() for p in off.trainable.parameters() if p.requires_grad)
        trainable_ours = ours.param.num_trainable()

        clocks = {"official": Clock(), "ours": Clock()}
        steps_each = {"official": Clock(), "ours": Clock()}
        done = 0
        while done < args.steps:
            k = min(args.chunk, args.steps - done)
            set_rng_state(official_stream)
            with clocks["official"]:
                for _ in range(k):
                    off.current_step = done
                    with steps_each["official"]:
                        off.train_step(iter_info)
            official_stream = rng_state()
            set_rng_state(our_stream)
            with clocks["ours"]:
                for _ in range(k):
                    with steps_each["ours"]:
                        ours.train_step()
            our_stream = rng_state()
            done += k
            print(f"\r{done}/{args.steps} steps", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)

        delta = official_delta(off)
        param_off = param_with_official_delta(source, delta)
        img_off = render(param_off.generator.eval(), z_eval)
        with torch.no_grad():
            offsets = off.trainable()
            their_img = torch.cat([off.source_generator([z_eval[i:i + 32]], offsets=offsets,
                                                        randomize_noise=False)[0]
                                   for i in range(0, len(z_eval), 32)])
        render_diff = float((their_img - img_off).abs().max())
        img_ours = render(ours.param.generator.eval(), z_eval)
        scores = {"official": gap_closed(img_off, img_src, t_src), "ours": gap_closed(img_ours, img_src, t_src)}
        norms = {"official": float(torch.cat(list(delta.values())).norm()),
                 "ours": float(torch.cat([p.detach().flatten() for p in ours.param.trainable_parameters()]).norm())}
    load_end = os.getloadavg()

    n = args.steps
    res = {"steps": n, "lr": args.lr, "chunk": args.chunk, "eval_n": args.eval_n, "eval_seeds": f"{args.eval_seed}.."
           f"{args.eval_seed + args.eval_n - 1}", "domain": DOMAIN, "source_text": SOURCE_TEXT,
           "target_text": TARGET_TEXT, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
           "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in load_end],
           "upstream": str(args.upstream.resolve()), "upstream_commit": upstream_commit(args.upstream),
           "upstream_config": OFFICIAL_CONFIG,
           "official_overrides": {"visual_encoders": list(ocfg.optimization_setup.visual_encoders),
                                  "no_coarse": bool(ocfg.training.no_coarse), "iter_num": n,
                                  "source_class": SOURCE_TEXT, "target_class": TARGET_TEXT,
                                  "generator_args": dict(ocfg.generator_args.stylegan2)},
           "official_patches": patch_log, "ours_config": CONFIG, "ours_overrides": our_overrides,
           "channel_map_rosinality_m1_to_ours": channel_map,
           "source_max_abs_diff": source_diff, "official_render_max_abs_diff": render_diff, "trainers": {}}
    print(f"official StyleDomain td_single (s_delta) vs ours (direction), {n} steps each, lr {args.lr}, 1 thread, "
          f"chunks of {args.chunk}; load average {load_start[0]:.2f} -> {load_end[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"gap closed: SynthFaces '{DOMAIN}', {args.eval_n} latents from seed {args.eval_seed}; source images of the "
          f"two generators differ by {source_diff:.1e} (max abs), official Δs rendered by theirs vs ours "
          f"{render_diff:.1e}")
    print(f"{'trainer':9s} {'trainable':>9s} {'s/step wall':>11s} {'s/step CPU':>10s} {'median wall':>11s} "
          f"{'setup s':>8s} {'|Δs|':>7s} {'gap closed (L1)':>15s}")
    for name in ("official", "ours"):
        c, s, sc = clocks[name], setup[name], scores[name]
        r = {"trainable_dims": trainable_off if name == "official" else trainable_ours,
             "s_per_step_wall": c.wall / n, "s_per_step_cpu": c.cpu / n,
             "s_per_step_wall_median": statistics.median(steps_each[name].each), "setup_wall_s": s.wall,
             "delta_norm": norms[name], **sc}
        res["trainers"][name] = r
        print(f"{name:9s} {r['trainable_dims']:9d} {r['s_per_step_wall']:11.3f} {r['s_per_step_cpu']:10.3f} "
              f"{r['s_per_step_wall_median']:11.3f} {s.wall:8.1f} {norms[name]:7.3f} {sc['gap_closed_l1']:15.3f}")
    res["speed_ratio_official_over_ours_cpu"] = clocks["official"].cpu / clocks["ours"].cpu
    print(f"official / ours CPU time per step: {res['speed_ratio_official_over_ours_cpu']:.2f}x")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
