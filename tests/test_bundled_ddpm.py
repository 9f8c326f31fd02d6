"""The bundled SynthFaces DDPM: a diffusers model folder that loads offline, and DDIM in few steps gives faces the
small CLIP recognises as SynthFaces photos, nearer the real faces (FID in CLIP features) than an average face."""
from pathlib import Path

import numpy as np
import pytest
import torch

from adapt_common import synthfaces as sf

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "synthfaces_ddpm"  # committed: missing is a failure


@pytest.fixture(scope="module")
def samples():
    from diffusion_adapt.models import load_model
    from diffusion_adapt.sampling import ddim_sample, noise_from_seeds
    unet, sched = load_model(BUNDLED)
    size = unet.config.sample_size
    return ddim_sample(unet, sched, noise_from_seeds(range(48), (3, size, size)), steps=25)


@pytest.fixture(scope="module")
def clip():
    from adapt_common.clip_models import load_clip
    return load_clip("synthfaces")


def test_folder_size_and_format():
    files = [p for p in BUNDLED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2 ** 20
    assert any(p.suffix == ".safetensors" for p in files)  # weights as safetensors, no pickles
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in files)


def test_ddim_samples_are_recognisable_faces(samples, clip):
    """The small CLIP (64 px) calls the samples SynthFaces photos about as often as real 32 px faces. "blurry" is
    left out of the candidates: upsampled to 64 px, 40 % of the real 32 px faces are called blurry too."""
    from adapt_common.metrics.domain import domain_accuracy
    assert samples.shape[1:] == (3, 32, 32) and samples.abs().max() <= 1
    names = ["photo"] + [n for n, d in sf.DOMAINS.items()
                         if d.kind in ("similar", "dissimilar", "distractor") and n != "blurry"]
    prompts = [sf.domain_prompt(n) for n in names]
    real, _ = sf.eval_set("photo", 48, size=32)
    ours = domain_accuracy(clip, samples, names, prompts, target="photo")
    theirs = domain_accuracy(clip, real, names, prompts, target="photo")
    assert theirs["accuracy"] >= 0.9  # the judge itself works at this size
    assert ours["accuracy"] >= 0.6 * theirs["accuracy"], (ours["counts"], theirs["counts"])


def test_samples_are_nearer_real_faces_than_an_average_face(samples, clip):
    from adapt_common.metrics.features import ClipFeatures
    from adapt_common.metrics.fid import fid
    feats = ClipFeatures(clip)
    real, _ = sf.eval_set("photo", 256, size=32)
    ref = feats(real[:128])
    mean_face = real[128:].mean(0, keepdim=True).expand(48, -1, -1, -1)
    jitter = mean_face + 0.05 * torch.randn(mean_face.shape, generator=torch.Generator().manual_seed(0))
    ours, baseline = fid(feats(samples), ref), fid(feats(jitter.clamp(-1, 1)), ref)
    assert np.isfinite(ours) and ours < 0.5 * baseline, (ours, baseline)
