"""Adapter files: only the trained tensors + a manifest; transfer to a same-architecture generator with a
note; another architecture refused."""
import json

import pytest
import torch

from conftest import TINY, perturb_zero_inits
from gan_adapt.adapter_files import Adapter, AdapterFileError, TransferNote
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import Parameterization


@pytest.mark.parametrize("name", ["stylespace", "affine_light_plus"])
def test_round_trip_and_manifest(tmp_path, tiny_generator, name):
    p = Parameterization(name, tiny_generator, block=16)
    with torch.no_grad():
        for q in p.trainable_parameters():
            q.add_(0.05 * torch.randn_like(q))
    path = Adapter.from_parameterization(p, domain="synthfaces:cat", extra={"steps": 7}).save_pretrained(
        tmp_path / "a.safetensors")
    adapter = Adapter.from_pretrained(path)
    manifest, tensors = adapter.manifest, adapter.tensors
    assert manifest["parameterization"] == name and manifest["domain"] == "synthfaces:cat"
    assert manifest["num_parameters"] == p.num_trainable() == sum(t.numel() for t in tensors.values())
    assert manifest["base_generator"]["hash"] == p.source_hash
    assert json.loads((tmp_path / "a.safetensors.json").read_text())["steps"] == 7
    if name == "stylespace":
        assert path.stat().st_size < 4 * p.num_trainable() + 4096  # the file is the offsets, not a generator
    z = torch.randn(2, TINY["style_dim"])
    loaded = adapter.parameterization(tiny_generator)
    torch.testing.assert_close(loaded.generator.generate(z), p.generator.generate(z))


def test_transfer_and_refusal(tmp_path, tiny_generator):
    p = Parameterization("stylespace", tiny_generator)
    path = Adapter.from_parameterization(p).save_pretrained(tmp_path / "d.safetensors")
    other = perturb_zero_inits(Generator(**TINY), seed=3)  # same architecture, other weights
    with pytest.warns(TransferNote, match="transfer"):
        Adapter.from_pretrained(path).parameterization(other)
    bigger = Generator(**{**TINY, "channel_max": 64})
    with pytest.raises(AdapterFileError, match="another generator architecture"):
        Adapter.from_pretrained(path).parameterization(bigger)
    (tmp_path / "junk.safetensors").write_bytes(b"12345678{not json")
    with pytest.raises(AdapterFileError, match="truncated or corrupt"):
        Adapter.from_pretrained(tmp_path / "junk.safetensors")
