"""Loading files safely, through the command line: files written by the project's own save functions, then
damaged (a flipped bit, NaN planted, a size in the metadata set huge) or made hostile (broadcast views, TorchScript
code that would run on load). Each is refused with exit status 2 and a message naming the file and the problem,
before any network is built from it."""
import json
import math
import struct
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import TINY
from gan_adapt.cli import main
from gan_adapt.directions import Direction, conv_layers
from gan_adapt.formats import StyleGANCheckpoint, load_checkpoint, load_generator, save_checkpoint
from gan_adapt.networks import Discriminator, Generator

# -- files, read and damaged without the project's code ----------------------------------------------------------


def _header(path):
    """(JSON header, offset of the data section) of a safetensors file: a u64 length, then the JSON header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), 8 + n


def _float32_at(path, key, index):
    header, start = _header(path)
    assert header[key]["dtype"] == "F32"
    return start + header[key]["data_offsets"][0] + 4 * index


def _flip_lowest_bit(path, key, index=0):
    """Flip the lowest mantissa bit of one float32 value in the data section: (value before, value after)."""
    at = _float32_at(path, key, index)
    raw = bytearray(path.read_bytes())
    before = struct.unpack("<f", raw[at:at + 4])[0]
    raw[at] ^= 1  # little-endian: the first byte holds the lowest mantissa bits
    path.write_bytes(bytes(raw))
    return before, struct.unpack("<f", raw[at:at + 4])[0]


def _plant_nan(path, key, index=0):
    at = _float32_at(path, key, index)
    raw = bytearray(path.read_bytes())
    raw[at:at + 4] = struct.pack("<f", math.nan)
    path.write_bytes(bytes(raw))


def _rewrite_metadata(path, edit):
    """Rewrite a safetensors file with ``edit(metadata)`` applied and its tensors as they are."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata())
    edit(metadata)
    save_file(tensors, str(path), metadata=metadata)


def _edit_manifest(path, **changes):
    def edit(metadata):
        manifest = json.loads(metadata["manifest"])
        manifest.update(changes)
        metadata["manifest"] = json.dumps(manifest)
    _rewrite_metadata(path, edit)


def _run(capsys, *argv):
    """(exit status, stderr) of ``python -m gan_adapt ARGV`` run in this process."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _refuse_networks(monkeypatch, allow_meta: bool):
    import clip

    from gan_adapt.hypernetwork import Hypernetwork
    for cls in (Generator, Discriminator, Hypernetwork, clip.model.CLIP):
        def refuse(self, *args, _init=cls.__init__, **kwargs):
            if allow_meta and torch.get_default_device().type == "meta":
                return _init(self, *args, **kwargs)  # describes shapes, allocates nothing
            raise AssertionError(f"a {type(self).__name__} was built from a hostile file")
        monkeypatch.setattr(cls, "__init__", refuse)


@pytest.fixture
def no_network_built(monkeypatch):
    """Fail the test if a generator, discriminator, hypernetwork or CLIP is constructed (on any device)."""
    _refuse_networks(monkeypatch, allow_meta=False)


@pytest.fixture
def no_network_allocated(monkeypatch):
    """Fail the test if one of them is constructed anywhere but on the meta device."""
    _refuse_networks(monkeypatch, allow_meta=True)


@pytest.fixture
def native(tmp_path, tiny_generator):
    return save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")


def _trained_direction(g, kind="s_delta", seed=1):
    layers = [(layer.name, layer.channels) for layer in conv_layers(g)]
    delta = 0.3 * torch.randn(sum(c for _, c in layers), generator=torch.Generator().manual_seed(seed))
    return Direction(kind, layers, delta, {"domain": "test"})


# -- item 12: content hashes ---------------------------------------------------------------------------------


def test_a_flipped_bit_in_a_native_checkpoint_is_refused_unless_hash_checks_are_off(tmp_path, native, capsys):
    before, after = _flip_lowest_bit(native, "g_ema.style.1.weight", index=5)
    assert before != after and math.isfinite(after)  # a silent change: finite, one unit in the last place
    rc, err = _run(capsys, "generate", "--ckpt", native, "--seeds", "0", "--outdir", tmp_path / "out")
    assert rc == 2 and str(native) in err and "Traceback" not in err
    recorded = _header(native)[0]["__metadata__"]["content_hash"]
    assert f"expected {recorded}" in err
    found = err.split("found ")[1][:16]
    assert len(found) == 16 and found != recorded and "--no-verify-hash" in err
    assert not (tmp_path / "out").exists()
    # Deliberately edited: the global flag loads it, with the edited value; the checks are back afterwards.
    rc, err = _run(capsys, "--no-verify-hash", "generate", "--ckpt", native, "--seeds", "0",
                   "--outdir", tmp_path / "out")
    assert rc == 0, err
    assert load_generator(native, verify_hash=False).state_dict()["style.1.weight"].reshape(-1)[5].item() == after
    with pytest.raises(ValueError, match="expected"):
        load_checkpoint(native)


def test_a_native_file_without_a_content_hash_is_checked_by_its_generator_hash(tmp_path, native, capsys):
    """Files written before ``content_hash`` existed record only the g_ema hash; it is checked too."""
    _rewrite_metadata(native, lambda m: m.pop("content_hash", None))
    load_generator(native)  # intact: loads
    recorded = _header(native)[0]["__metadata__"]["generator_hash"]
    _flip_lowest_bit(native, "g_ema.convs.1.conv.weight", index=3)
    rc, err = _run(capsys, "info", native)
    assert rc == 2 and str(native) in err and "generator hash" in err and f"expected {recorded}" in err


def test_a_flipped_bit_in_direction_adapter_and_hypernetwork_files_is_refused(tmp_path, tiny_generator, native,
                                                                              capsys):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.hypernetwork import Hypernetwork
    from gan_adapt.parameterizations import Parameterization
    d = _trained_direction(tiny_generator)
    d.save_pretrained(tmp_path / "d.safetensors")
    _flip_lowest_bit(tmp_path / "d.safetensors", "delta", index=7)
    rc, err = _run(capsys, "generate", "--ckpt", native, "--seeds", "0", "--outdir", tmp_path / "o",
                   "--direction", f"{tmp_path / 'd.safetensors'}:0.5")
    assert rc == 2 and f"{tmp_path / 'd.safetensors'}: its tensors do not match" in err and "expected" in err

    p = Parameterization("affine", tiny_generator)
    Adapter.from_parameterization(p).save_pretrained(tmp_path / "a.safetensors")
    key = next(k for k, v in _header(tmp_path / "a.safetensors")[0].items() if k != "__metadata__")
    _flip_lowest_bit(tmp_path / "a.safetensors", key)
    rc, err = _run(capsys, "compare", "--ckpt", native, "--row", f"a={tmp_path / 'a.safetensors'}",
                   "--seeds", "0", "--out", tmp_path / "grid.png")
    assert rc == 2 and f"{tmp_path / 'a.safetensors'}: its tensors do not match" in err

    Hypernetwork.for_generator(tiny_generator, input_dim=16, width=8, depth=2).save_pretrained(
        tmp_path / "h.safetensors")
    _flip_lowest_bit(tmp_path / "h.safetensors", "stem.0.weight")
    rc, err = _run(capsys, "hyper", tmp_path / "h.safetensors", "--prompt", "x", "--out", tmp_path / "x.safetensors")
    assert rc == 2 and f"{tmp_path / 'h.safetensors'}: its tensors do not match" in err


# -- item 7: NaN / Inf -----------------------------------------------------------------------------------------


def test_a_diverged_native_checkpoint_is_refused_naming_the_tensor(tmp_path, tiny_generator, capsys):
    with torch.no_grad():
        tiny_generator.get_parameter("convs.2.conv.weight").view(-1)[:3] = torch.tensor([math.nan, math.inf, 0.0])
    path = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "diverged.safetensors")
    rc, err = _run(capsys, "generate", "--ckpt", path, "--seeds", "0", "--outdir", tmp_path / "o")
    assert rc == 2 and str(path) in err and "'g_ema.convs.2.conv.weight' holds 2 NaN/infinite" in err
    assert not (tmp_path / "o").exists()


def test_nan_planted_in_a_native_file_fails_its_hash_and_still_fails_without_hash_checks(tmp_path, native, capsys):
    _plant_nan(native, "latent_avg", index=2)
    rc, err = _run(capsys, "info", native)
    assert rc == 2 and "its tensors do not match the content hash" in err
    rc, err = _run(capsys, "--no-verify-hash", "info", native)
    assert rc == 2 and str(native) in err and "'latent_avg' holds 1 NaN/infinite" in err


@pytest.mark.parametrize("where", ["g_ema", "d", "latent_avg", "styledomain_original"])
def test_nan_in_rosinality_and_styledomain_pt_files_is_refused(tmp_path, tiny_generator, capsys, where):
    d = Discriminator(32, channel_base=256, channel_max=32)
    obj = {"g_ema": dict(tiny_generator.state_dict()), "d": dict(d.state_dict()),
           "latent_avg": tiny_generator.latent_avg.clone()}
    if where == "latent_avg":
        obj["latent_avg"][0] = math.nan
        name = "latent_avg"
    else:
        part = "g_ema" if where != "d" else "d"
        key = next(k for k, v in obj[part].items() if v.is_floating_point())
        obj[part][key] = obj[part][key].clone().fill_(math.inf)
        name = f"{part}.{key}"
    if where == "styledomain_original":
        obj = {"model_type": "original", "state_dict": {f"generator.{k}": v for k, v in obj["g_ema"].items()}}
    torch.save(obj, tmp_path / "m.pt")
    rc, err = _run(capsys, "info", tmp_path / "m.pt")
    assert rc == 2 and str(tmp_path / "m.pt") in err and f"{name!r} holds" in err and "NaN/infinite" in err


def test_nan_in_direction_files_is_refused_and_a_nan_result_is_never_written(tmp_path, tiny_generator, native,
                                                                          capsys):
    a, b = _trained_direction(tiny_generator, seed=1), _trained_direction(tiny_generator, seed=2)
    a.save_pretrained(tmp_path / "a.safetensors")
    b.save_pretrained(tmp_path / "b.safetensors")
    # StyleDomain's mixing with weights whose product overflows float32: refused, nothing written.
    rc, err = _run(capsys, "direction", "mix", f"{tmp_path / 'a.safetensors'}:1e39",
                   f"{tmp_path / 'b.safetensors'}:-1e39", "--out", tmp_path / "ab.safetensors")
    assert rc == 2 and f"{tmp_path / 'ab.safetensors'} not written" in err and "NaN/infinite" in err
    assert not (tmp_path / "ab.safetensors").exists()
    # A NaN planted in a file: a hash mismatch, and without hash checks the NaN itself, for every command.
    _plant_nan(tmp_path / "a.safetensors", "delta", index=4)
    for argv in (["direction", "mix", f"{tmp_path / 'a.safetensors'}:0.5", str(tmp_path / "b.safetensors"),
                  "--out", tmp_path / "m.safetensors"],
                 ["direction", "sparse", tmp_path / "a.safetensors", "--out", tmp_path / "s.safetensors"],
                 ["generate", "--ckpt", native, "--seeds", "0", "--outdir", tmp_path / "o",
                  "--direction", tmp_path / "a.safetensors"]):
        rc, err = _run(capsys, *argv)
        assert rc == 2 and "do not match the content hash" in err
        rc, err = _run(capsys, "--no-verify-hash", *argv)
        assert rc == 2 and f"{tmp_path / 'a.safetensors'}: tensor 'delta' holds 1 NaN/infinite" in err
    assert not any((tmp_path / n).exists() for n in ("m.safetensors", "s.safetensors", "o"))


def test_nan_in_an_official_styledomain_direction_is_refused(tmp_path, capsys):
    from gan_adapt.directions import official_conv_channels
    heads = {f"heads.conv_{i}.params_in": torch.randn(1, c) for i, c in enumerate(official_conv_channels(32))}
    heads["heads.conv_3.params_in"][0, 1] = math.nan
    torch.save({"model_type": "parametrization", "patch_key": "s_delta", "state_dict": heads,
                "sg2_params": {"img_size": 32, "channel_multiplier": 2}}, tmp_path / "models_300.pt")
    rc, err = _run(capsys, "direction", "import", tmp_path / "models_300.pt", "--out", tmp_path / "o.safetensors")
    assert rc == 2 and "'heads.conv_3.params_in' holds 1 NaN/infinite" in err and str(tmp_path / "models_300.pt") in err
    assert not (tmp_path / "o.safetensors").exists()


def test_a_diverged_adapter_and_hypernetwork_are_refused(tmp_path, tiny_generator, native, capsys):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.hypernetwork import Hypernetwork
    from gan_adapt.parameterizations import Parameterization
    p = Parameterization("direction", tiny_generator)
    with torch.no_grad():
        p.trainable_parameters()[2][0] = math.nan
    Adapter.from_parameterization(p).save_pretrained(tmp_path / "a.safetensors")
    rc, err = _run(capsys, "compare", "--ckpt", native, "--row", f"a={tmp_path / 'a.safetensors'}", "--seeds", "0",
                   "--out", tmp_path / "grid.png")
    assert rc == 2 and f"{tmp_path / 'a.safetensors'}: tensor" in err and "holds 1 NaN/infinite" in err
    net = Hypernetwork.for_generator(tiny_generator, input_dim=16, width=8, depth=2)
    with torch.no_grad():
        net.heads[1][1].bias[0] = math.inf
    net.save_pretrained(tmp_path / "h.safetensors")
    rc, err = _run(capsys, "hyper", tmp_path / "h.safetensors", "--prompt", "x", "--out", tmp_path / "x.safetensors")
    assert rc == 2 and "'heads.1.1.bias' holds 1 NaN/infinite" in err


# -- item 9: sizes read from files ---------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("size", 65536, "the generator size (px) is 65,536, outside 4..4,096"),
    ("channel_max", 10 ** 7, "channel_max is 10,000,000, outside 1..4,096"),
    ("style_dim", 2 ** 20, "style_dim is 1,048,576, outside 1..4,096"),
    ("n_mlp", 10 ** 5, "n_mlp (mapping layers) is 100,000, outside 1..32"),
    ("blur_kernel", [1] * 10 ** 4, "the number of blur_kernel taps is 10,000, outside 1..16"),
])
def test_a_huge_architecture_in_native_metadata_is_refused_before_building(tmp_path, native, capsys,
                                                                           no_network_built, field, value, message):
    def edit(metadata):
        metadata["generator"] = json.dumps({**json.loads(metadata["generator"]), field: value})
    _rewrite_metadata(native, edit)  # the tensors are untouched, so their hashes still match
    rc, err = _run(capsys, "generate", "--ckpt", native, "--seeds", "0", "--outdir", tmp_path / "o")
    assert rc == 2 and f"{native}: {message}" in err


def test_an_architecture_over_the_parameter_budget_is_refused(tmp_path, native, capsys, no_network_allocated):
    """Each size within its bound, together over a billion parameters: counted on the meta device, refused."""
    def edit(metadata):
        metadata["generator"] = json.dumps({**json.loads(metadata["generator"]), "size": 4096, "channel_max": 4096,
                                            "channel_base": 4096 * 4096})
    _rewrite_metadata(native, edit)
    rc, err = _run(capsys, "info", native)
    assert rc == 2 and "parameters, more than the 1,073,741,824" in err


def _rosinality_asking_for(path, size_px, channels=8):
    """A ~10 KB rosinality state dict whose key counts and shapes describe a ``size_px`` generator (the
    architecture is inferred from them; the other tensors are tiny)."""
    zeros = torch.zeros
    sd = {"style.1.weight": zeros(8, 8), "input.input": zeros(1, channels, 4, 4),
          "conv1.conv.weight": zeros(1, channels, 1, 1, 1), "to_rgb1.conv.weight": zeros(1, 3, channels, 1, 1)}
    for k in range(int(math.log2(size_px)) - 2):
        sd[f"to_rgbs.{k}.bias"] = zeros(1, 3, 1, 1)
        sd[f"convs.{2 * k}.conv.weight"] = zeros(1, channels, 1, 1, 1)
    torch.save({"g_ema": sd}, path)
    return path


def test_a_rosinality_file_asking_for_65536_px_is_refused_before_building(tmp_path, capsys, no_network_built):
    path = _rosinality_asking_for(tmp_path / "huge.pt", 65536)
    assert path.stat().st_size < 32_000
    rc, err = _run(capsys, "info", path)
    assert rc == 2 and f"{path}: the size (px) implied by its 14 to_rgbs layers is 65,536, outside 4..4,096" in err


def test_broadcast_views_in_a_pt_file_are_refused_before_building(tmp_path, tiny_generator, capsys,
                                                                  no_network_built):
    """A pickled tensor may be a stride-0 view: a shape of a million columns over one stored value."""
    sd = dict(tiny_generator.state_dict())
    sd["style.1.weight"] = torch.zeros(1).expand(TINY["style_dim"], 2 ** 20)  # style_dim 1,048,576 if believed
    torch.save({"g_ema": sd}, tmp_path / "views.pt")
    rc, err = _run(capsys, "info", tmp_path / "views.pt")
    assert rc == 2 and f"{tmp_path / 'views.pt'}: tensor 'g_ema.style.1.weight' of shape (32, 1048576) is a " \
                       "broadcast view" in err


@pytest.mark.parametrize("edit, message", [
    ({"size": 10 ** 12}, "its manifest gives size 1000000000000, its layers add up to"),
    ({"size": 10 ** 12, "layers": [{"name": "conv1", "channels": 10 ** 12}]},
     "the channels of layer 'conv1' is 1,000,000,000,000, outside 1..4,096"),
    ({"size": 8 * 10 ** 4, "layers": [{"name": f"convs.{i}", "channels": 8} for i in range(10 ** 4)]},
     "the number of layers is 10,000, outside 1..64"),
])
def test_a_sparse_direction_of_a_huge_size_is_refused_before_allocating(tmp_path, tiny_generator, capsys,
                                                                        monkeypatch, edit, message):
    d = _trained_direction(tiny_generator).sparse(0.1)
    d.save_pretrained(tmp_path / "s.safetensors", sparse=True)
    _edit_manifest(tmp_path / "s.safetensors", **edit)
    zeros = torch.zeros

    def bounded_zeros(*size, **kwargs):
        assert math.prod(size[0] if len(size) == 1 and not isinstance(size[0], int) else size) < 10 ** 7, size
        return zeros(*size, **kwargs)
    monkeypatch.setattr(torch, "zeros", bounded_zeros)
    rc, err = _run(capsys, "direction", "info", tmp_path / "s.safetensors")
    assert rc == 2 and f"{tmp_path / 's.safetensors'}: {message}" in err


def test_sparse_indices_outside_the_direction_are_refused(tmp_path, tiny_generator, capsys):
    d = _trained_direction(tiny_generator).sparse(0.1)
    path = d.save_pretrained(tmp_path / "s.safetensors", sparse=True)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    tensors["indices"][0] = d.size + 5
    manifest = json.loads(metadata["manifest"])
    manifest.pop("content_hash", None)  # as an older file, which records none
    save_file(tensors, str(path), metadata={**metadata, "manifest": json.dumps(manifest)})
    rc, err = _run(capsys, "direction", "info", path)
    assert rc == 2 and f"{path}: sparse indices reach" in err and f"outside a direction of {d.size} values" in err


def test_an_official_direction_naming_a_huge_generator_is_refused(tmp_path, capsys, no_network_built):
    torch.save({"model_type": "parametrization", "patch_key": "cin_mult",
                "state_dict": {"heads.conv_0.params_in": torch.zeros(1, 1, 512, 1, 1)},
                "sg2_params": {"img_size": 2 ** 40, "channel_multiplier": 2}}, tmp_path / "models_1.pt")
    rc, err = _run(capsys, "direction", "import", tmp_path / "models_1.pt", "--out", tmp_path / "o.safetensors")
    assert rc == 2 and f"{tmp_path / 'models_1.pt'}: sg2_params img_size is 1,099,511,627,776, outside 4..4,096" in err


def test_an_adapter_rank_and_a_hypernetwork_width_beyond_any_model_are_refused(tmp_path, tiny_generator, native,
                                                                               capsys, monkeypatch):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.hypernetwork import Hypernetwork
    from gan_adapt.parameterizations import AddLowRank, Parameterization
    Adapter.from_parameterization(Parameterization("affine_light_plus", tiny_generator, block=8)).save_pretrained(
        tmp_path / "a.safetensors")
    _edit_manifest(tmp_path / "a.safetensors", rank=10 ** 9)
    Hypernetwork.for_generator(tiny_generator, input_dim=16, width=8, depth=2).save_pretrained(
        tmp_path / "h.safetensors")
    _edit_manifest(tmp_path / "h.safetensors", mapper={"input_dim": 16, "width": 10 ** 6, "depth": 2,
                                                       "layers": [["conv1", 32]]})
    real_low_rank = AddLowRank.__init__

    def bounded_low_rank(self, out_dim, in_dim, rank, *args, **kwargs):
        assert rank <= in_dim, f"a rank-{rank} factor was allocated"
        real_low_rank(self, out_dim, in_dim, rank, *args, **kwargs)
    monkeypatch.setattr(AddLowRank, "__init__", bounded_low_rank)
    rc, err = _run(capsys, "compare", "--ckpt", native, "--row", f"a={tmp_path / 'a.safetensors'}", "--seeds", "0",
                   "--out", tmp_path / "grid.png")
    assert rc == 2 and f"{tmp_path / 'a.safetensors'}: rank is 1,000,000,000, outside 1..32" in err

    def refuse(self, *args, **kwargs):
        raise AssertionError("a hypernetwork was built from a hostile file")
    monkeypatch.setattr(Hypernetwork, "__init__", refuse)
    rc, err = _run(capsys, "hyper", tmp_path / "h.safetensors", "--prompt", "x", "--out", tmp_path / "x.safetensors")
    assert rc == 2 and f"{tmp_path / 'h.safetensors'}: mapper width is 1,000,000, outside 1..4,096" in err


@pytest.fixture
def tiny_clip_sd():
    from adapt_common.clip_models import tiny_clip
    return dict(tiny_clip(0).model.state_dict())  # width 64, one layer


def test_clip_files_with_broadcast_views_or_huge_sizes_are_refused(tmp_path, tiny_clip_sd, no_network_built):
    from adapt_common.clip_models import ClipLoadError, load_clip
    sd = tiny_clip_sd
    views = {**sd, "token_embedding.weight": torch.zeros(1).expand(10 ** 9, 64)}  # a vocabulary of a billion
    torch.save(views, tmp_path / "views.pt")
    with pytest.raises(ClipLoadError, match=r"views\.pt: tensor 'token_embedding.weight' of shape \(1000000000, 64\)"):
        load_clip(str(tmp_path / "views.pt"))
    deep = {**sd, **{f"transformer.resblocks.{i}.ln_1.weight": torch.zeros(64) for i in range(500)}}
    torch.save(deep, tmp_path / "deep.pt")
    with pytest.raises(ClipLoadError, match=r"deep\.pt: text layers is 500, outside 1..128"):
        load_clip(str(tmp_path / "deep.pt"))


def test_a_clip_with_nan_weights_is_refused(tmp_path, tiny_clip_sd):
    from adapt_common.clip_models import load_clip
    sd = tiny_clip_sd
    sd["visual.proj"] = sd["visual.proj"].clone()
    sd["visual.proj"][3, 4] = math.nan
    torch.save(sd, tmp_path / "nan_clip.pt")
    with pytest.raises(ValueError, match=r"nan_clip\.pt: tensor 'visual.proj' holds 1 NaN/infinite"):
        load_clip(str(tmp_path / "nan_clip.pt"))


# -- item 10: TorchScript CLIP archives, read without running them -----------------------------------------------


def _traced_bundled_clip(path):
    """The bundled CLIP saved as TorchScript, the way OpenAI's files are (traced encode_image/encode_text)."""
    from adapt_common.clip_models import load_clip
    clip = load_clip("synthfaces")
    image = torch.zeros(1, 3, clip.input_resolution, clip.input_resolution)
    tokens = clip.tokenize(["a face"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(clip.model, {"encode_image": image, "encode_text": tokens,
                                                     "forward": (image, tokens)})
    torch.jit.save(traced, str(path))
    return clip


def test_a_torchscript_clip_archive_loads_without_torch_jit(tmp_path, monkeypatch):
    from adapt_common.clip_models import load_clip, read_clip_state_dict
    bundled = _traced_bundled_clip(tmp_path / "clip_ts.pt")
    reference = torch.jit.load(str(tmp_path / "clip_ts.pt"), map_location="cpu").state_dict()  # torch's own reading

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")
    monkeypatch.setattr(torch.jit, "load", no_jit)
    sd = read_clip_state_dict(tmp_path / "clip_ts.pt")
    assert sorted(sd) == sorted(reference) and all(torch.equal(sd[k], reference[k]) for k in reference)
    loaded = load_clip(str(tmp_path / "clip_ts.pt"))
    texts = ["a face", "a sketch of a face"]
    torch.testing.assert_close(loaded.encode_texts(texts), bundled.encode_texts(texts), rtol=0, atol=0)
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(loaded.encode_images(images), bundled.encode_images(images), rtol=0, atol=0)


HOSTILE = '''
import torch
from typing import Tuple


class Hostile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(3))

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        print("HOSTILE CODE RAN")
        i = 0
        while LOOP and i >= 0:  # never ends when LOOP
            i += 1
        self.weight = state[0]
        self.training = state[1]


torch.jit.save(torch.jit.script(Hostile()), OUT)
'''


def _hostile_archive(path, loop: bool):
    """A scripted module whose __setstate__ (run by torch.jit.load) prints, and, with ``loop``, never returns.
    Written by a separate process, so the class is TorchScript-compiled from a real source file."""
    script = path.with_suffix(".py")
    script.write_text(HOSTILE.replace("LOOP", str(loop)).replace("OUT", repr(str(path))))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=300)
    return path


def test_a_hostile_torchscript_archive_is_refused_without_running_its_code(tmp_path, tiny_generator, capfd):
    hostile = _hostile_archive(tmp_path / "hostile_clip.pt", loop=False)
    torch.jit.load(str(hostile))  # what the file does when TorchScript loads it
    assert "HOSTILE CODE RAN" in capfd.readouterr().out
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    Image.new("RGB", (32, 32), (120, 80, 40)).save(tmp_path / "face.png")
    rc = main(["invert", "--ckpt", str(ckpt), "--image", str(tmp_path / "face.png"), "--steps", "1",
               "--clip", str(hostile), "--out", str(tmp_path / "inv")])
    out, err = capfd.readouterr()
    assert rc == 2 and "HOSTILE CODE RAN" not in out + err
    assert f"{hostile}: the TorchScript object __torch__.Hostile keeps custom state" in err
    assert "torch.jit.load('IN.pt', map_location='cpu').state_dict()" in err  # how to convert a trusted file


def test_a_looping_torchscript_archive_does_not_hang_the_loader(tmp_path):
    hostile = _hostile_archive(tmp_path / "loop_clip.pt", loop=True)
    code = textwrap.dedent(f"""
        from adapt_common.clip_models import ClipLoadError, load_clip
        try:
            load_clip({str(hostile)!r})
        except ClipLoadError as e:
            print("refused:", e)
    """)
    # The timeout only stops a loader that runs the loop (torch.jit.load would never return).
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "refused:" in r.stdout and "HOSTILE CODE RAN" not in r.stdout + r.stderr
