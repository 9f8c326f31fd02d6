"""NVIDIA stylegan2-ada-pytorch .pkl reader: safe unpickling, key mapping, refusals, model loading.

The pickles are fakes written by tests/nvidia_pickle_writer.py (no NVIDIA code): they have NVIDIA's
persistence layout, torch's own tensor reducers and an embedded module source that would leave a marker
file and raise SystemExit if anything ever executed it.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gzip  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import nvidia_pickle_writer as npw  # noqa: E402

from gan_adapt.formats import nvidia_pkl as nv  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SMALL = dict(size=32, channel_base=512, channel_max=64, z_dim=32, w_dim=32)
SPEC_GLOBALS = {
    "torch_utils.persistence._reconstruct_persistent_obj",
    "dnnlib.util.EasyDict",
    "collections.OrderedDict",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_tensor_v2",
    "torch.storage._load_from_bytes",
    "numpy.dtype",
}


# ----------------------------------------------------------------------------------------------------------
# Expected rosinality layouts, written from the spec (stylegan_core.md 1.1 and rosinality_g1024_keys.txt)


def channel_table(size, channel_base, channel_max):
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(size)) + 1)}


def expected_g_layout(size, style_dim, n_mlp, channel_base, channel_max):
    ch = channel_table(size, channel_base, channel_max)
    out = {}
    for i in range(1, n_mlp + 1):
        out[f"style.{i}.weight"] = (style_dim, style_dim)
        out[f"style.{i}.bias"] = (style_dim,)
    out["input.input"] = (1, ch[4], 4, 4)

    def styled(name, cin, cout, up):
        out[f"{name}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            out[f"{name}.conv.blur.kernel"] = (4, 4)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)
        out[f"{name}.noise.weight"] = (1,)
        out[f"{name}.activate.bias"] = (cout,)

    def rgb(name, cin, up):
        out[f"{name}.bias"] = (1, 3, 1, 1)
        if up:
            out[f"{name}.upsample.kernel"] = (4, 4)
        out[f"{name}.conv.weight"] = (1, 3, cin, 1, 1)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)

    styled("conv1", ch[4], ch[4], False)
    rgb("to_rgb1", ch[4], False)
    n_blocks = int(math.log2(size)) - 2
    for k in range(n_blocks):
        r = 8 * 2 ** k
        styled(f"convs.{2 * k}", ch[r // 2], ch[r], True)
        styled(f"convs.{2 * k + 1}", ch[r], ch[r], False)
    for k in range(n_blocks):
        rgb(f"to_rgbs.{k}", ch[8 * 2 ** k], True)
    for i in range(2 * n_blocks + 1):
        r = 2 ** ((i + 5) // 2)
        out[f"noises.noise_{i}"] = (1, 1, r, r)
    return out


def expected_d_layout(size, channel_base, channel_max):
    ch = channel_table(size, channel_base, channel_max)
    out = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    for k, i in enumerate(range(int(math.log2(size)), 2, -1), start=1):
        cin, cout = ch[2 ** i], ch[2 ** (i - 1)]
        out.update({f"convs.{k}.conv1.0.weight": (cin, cin, 3, 3), f"convs.{k}.conv1.1.bias": (cin,),
                    f"convs.{k}.conv2.0.kernel": (4, 4), f"convs.{k}.conv2.1.weight": (cout, cin, 3, 3),
                    f"convs.{k}.conv2.2.bias": (cout,), f"convs.{k}.skip.0.kernel": (4, 4),
                    f"convs.{k}.skip.1.weight": (cout, cin, 1, 1)})
    c4 = ch[4]
    out.update({"final_conv.0.weight": (c4, c4 + 1, 3, 3), "final_conv.1.bias": (c4,),
                "final_linear.0.weight": (c4, c4 * 16), "final_linear.0.bias": (c4,),
                "final_linear.1.weight": (1, c4), "final_linear.1.bias": (1,)})
    return out


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def read_spec_keys():
    layout = {}
    with open(os.path.join(FIXTURES, "rosinality_g1024_keys.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, _kind = line.rstrip("\n").split("\t")
            layout[key] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return layout


# ----------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def small_pkl(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2, seed=1)
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "network-snapshot-000100.pkl"
    npw.write_nvidia_pkl(path, g, d, kw, marker_path=marker)
    return path, g, d, kw, marker


def convert_g(path):
    nets = nv.read_nvidia_pkl(path)
    e = nets["G_ema"]
    cfg = nv.generator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"],
                                               state_dict=e["state_dict"], source=path)
    sd, w_avg = nv.nvidia_g_to_rosinality(e["state_dict"], size=cfg["size"], n_mlp=cfg["n_mlp"], source=path)
    return nets, cfg, sd, w_avg


# ----------------------------------------------------------------------------------------------------------
# The fake pickle itself


@pytest.mark.parametrize("protocol", [3, 4])
def test_writer_references_the_globals_of_real_nvidia_pickles(protocol):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    data = npw.dumps_nvidia(npw.build_snapshot(g, d, kw), protocol=protocol, numpy_legacy_names=protocol == 3)
    found = npw.referenced_globals(data)
    numpy_scalar = "numpy.core.multiarray.scalar" if protocol == 3 else "numpy._core.multiarray.scalar"
    expected = SPEC_GLOBALS | {numpy_scalar} | ({"builtins.set"} if protocol == 3 else set())
    assert found == expected
    # the writer's fake modules are gone again
    assert not {"torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"} & set(sys.modules)


def test_fake_module_source_would_be_detected(tmp_path):
    """Sanity check of the never-executed test: running the embedded source leaves the marker."""
    marker = tmp_path / "m"
    with pytest.raises(SystemExit, match="executed!"):
        exec(compile(npw._fake_module_src(marker), "<fake>", "exec"), {})
    assert marker.read_text() == "executed"


# ----------------------------------------------------------------------------------------------------------
# Reading


def test_read_returns_networks_and_never_executes_source(small_pkl):
    path, g, d, kw, marker = small_pkl
    nets = nv.read_nvidia_pkl(path)
    assert set(nets) == {"G", "D", "G_ema"}
    assert not marker.exists()
    assert not {"torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"} & set(sys.modules)
    assert nets["G_ema"]["class_name"] == "training.networks.Generator"
    assert nets["D"]["class_name"] == "training.networks.Discriminator"
    assert nets["G_ema"]["init_kwargs"] == kw["G"]
    assert nets["D"]["init_kwargs"] == kw["D"]
    assert type(nets["G_ema"]["init_kwargs"]["mapping_kwargs"]) is dict  # EasyDict stubs -> plain dicts
    for key, ref in (("G_ema", g), ("D", d)):
        sd = nets[key]["state_dict"]
        assert set(sd) == set(ref)  # order: own params, buffers, then children (nn.Module order)
        for k, v in ref.items():
            assert torch.equal(sd[k], v), k
            assert type(sd[k]) is torch.Tensor and not sd[k].requires_grad
    # the training G is a different network (writer adds 0.5)
    assert torch.equal(nets["G"]["state_dict"]["mapping.w_avg"], g["mapping.w_avg"] + 0.5)


def test_stub_keeps_source_as_text_only(small_pkl):
    path, *_, marker = small_pkl
    with open(path, "rb") as f:
        top = nv.SafeNvidiaUnpickler(f).load()
    stub = top["G_ema"]
    assert isinstance(stub, nv.PersistentObjectStub)
    assert "raise SystemExit('executed!')" in stub.module_src
    assert stub.version == 6 and stub.class_name == "training.networks.Generator"
    assert isinstance(top["augment_pipe"], nv.PersistentObjectStub)
    assert not marker.exists()


def test_gzip_variant_loads(small_pkl, tmp_path):
    path, g, *_ = small_pkl
    gz = tmp_path / "snap.pkl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    a, b = nv.read_nvidia_pkl(path), nv.read_nvidia_pkl(gz)
    for key in a:
        assert a[key]["init_kwargs"] == b[key]["init_kwargs"]
        assert all(torch.equal(a[key]["state_dict"][k], b[key]["state_dict"][k]) for k in a[key]["state_dict"])


def test_protocol3_with_numpy1_names_and_builtins_set(tmp_path):
    """Python 3.7 (what ada-pytorch used) writes protocol 3: sets via builtins.set; numpy 1.x scalar names."""
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    path = npw.write_nvidia_pkl(tmp_path / "p3.pkl", g, d, kw, protocol=3, numpy_legacy_names=True)
    assert b"cnumpy.core.multiarray\nscalar\n" in path.read_bytes()
    assert b"cbuiltins\nset\n" in path.read_bytes()
    nets = nv.read_nvidia_pkl(path)
    assert all(torch.equal(nets["G_ema"]["state_dict"][k], v) for k, v in g.items())


def test_non_persistent_buffers_and_none_entries_are_skipped(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw,
                                options=dict(nonpersistent_buffer=True, none_entries=True))
    nets = nv.read_nvidia_pkl(path)
    assert set(nets["G_ema"]["state_dict"]) == set(g)
    assert set(nets["D"]["state_dict"]) == set(d)


def test_single_network_pickle(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    snap = npw.build_snapshot(g, d, kw)
    path = tmp_path / "g.pkl"
    path.write_bytes(npw.dumps_nvidia(snap["G_ema"]))
    nets = nv.read_nvidia_pkl(path)
    assert list(nets) == ["G_ema"] and set(nets["G_ema"]["state_dict"]) == set(g)


# ----------------------------------------------------------------------------------------------------------
# Refusals


def _pickle_calling(module, name, arg):
    """Protocol-2 pickle of ``module.name(arg)`` (text GLOBAL opcode, so any name can be written)."""
    a = arg.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + b"X" + struct.pack("<I", len(a)) + a
            + b"\x85R.")


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("builtins", "exec"), ("subprocess", "call"), ("torch", "load")])
def test_non_allowed_global_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    arg = f"open({str(marker)!r}, 'w').write('x')" if name in ("eval", "exec") else f"touch {marker}"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_pickle_calling(module, name, arg))
    with pytest.raises(pickle.UnpicklingError, match=rf"blocked global {module}\.{name}") as e:
        nv.read_nvidia_pkl(path)
    assert "not a StyleGAN2-ADA pickle or contains code the loader refuses to run" in str(e.value)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)  # also a CheckpointError for the format registry
    assert not marker.exists()


def test_blocked_global_nested_inside_a_real_snapshot(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    kw["G"]["synthesis_kwargs"]["evil"] = Evil()
    path = npw.write_nvidia_pkl(tmp_path / "evil.pkl", g, d, kw)
    with pytest.raises(nv.BlockedGlobalError, match=r"blocked global (posix|os)\.system"):
        nv.read_nvidia_pkl(path)
    assert not (tmp_path / "pwned").exists()


def test_tensorflow_pickle_gets_a_hint(tmp_path):
    path = tmp_path / "tf.pkl"
    path.write_bytes(_pickle_calling("dnnlib.tflib.network", "Network", "x"))
    with pytest.raises(nv.BlockedGlobalError, match="TensorFlow"):
        nv.read_nvidia_pkl(path)


def test_truncated_file_is_a_clear_error(small_pkl, tmp_path):
    path, *_ = small_pkl
    data = path.read_bytes()
    for n in (len(data) // 2, len(data) - 1, 100):
        cut = tmp_path / f"cut{n}.pkl"
        cut.write_bytes(data[:n])
        with pytest.raises(nv.NvidiaPickleError, match="truncated") as e:
            nv.read_nvidia_pkl(cut)
        assert str(cut) in str(e.value)
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(gzip.compress(data)[:5000])
    with pytest.raises(nv.NvidiaPickleError, match="truncated") as e:
        nv.read_nvidia_pkl(cut)
    assert str(cut) in str(e.value)


def test_size_cap(small_pkl, tmp_path):
    path, *_ = small_pkl
    with pytest.raises(nv.NvidiaPickleError, match="size cap") as e:
        nv.read_nvidia_pkl(path, max_bytes=1000)
    assert str(path) in str(e.value)
    gz = tmp_path / "bomb.pkl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert gz.stat().st_size < path.stat().st_size
    with pytest.raises(nv.NvidiaPickleError, match="decompressed data exceeds"):
        nv.read_nvidia_pkl(gz, max_bytes=gz.stat().st_size + 10)


def test_not_a_pickle(tmp_path):
    z = tmp_path / "model.pkl"
    torch.save({"g_ema": {}}, z)
    with pytest.raises(nv.NvidiaPickleError, match="zip archive"):
        nv.read_nvidia_pkl(z)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"hello world")
    with pytest.raises(nv.NvidiaPickleError, match="not a pickle"):
        nv.read_nvidia_pkl(junk)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(nv.NvidiaPickleError, match="empty"):
        nv.read_nvidia_pkl(empty)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(nv.NvidiaPickleError, match="no G, D or G_ema"):
        nv.read_nvidia_pkl(plain)


@pytest.mark.parametrize("override,match", [
    (dict(c_dim=10), r"conditional generator \(c_dim=10\)"),
    (dict(architecture="resnet"), r"architecture='resnet' is not supported"),
    (dict(architecture="orig"), r"architecture='orig'"),
    (dict(img_channels=1), r"img_channels=1"),
    (dict(z_dim=16), r"z_dim=16 differs from w_dim=32"),
    (dict(g_extra_synthesis=dict(magnitude_ema_beta=0.999, conv_kernel=1)), r"StyleGAN3"),
    (dict(g_extra_synthesis=dict(resample_filter=[1, 2, 1])), r"resample_filter"),
])
def test_unsupported_generators_are_refused(tmp_path, override, match):
    params = dict(SMALL, n_mapping=2)
    params.update(override)
    g, d, kw = npw.make_nvidia_state(**params)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    e = nv.read_nvidia_pkl(path)["G_ema"]
    with pytest.raises(ValueError, match=match) as err:
        nv.generator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"], source=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("class_name,match", [
    ("training.networks_stylegan3.Generator", "StyleGAN3"),
    ("training.networks.MappingNetwork", "unsupported generator class"),
    ("my_fork.networks.Generator", "unsupported generator class"),
])
def test_unsupported_generator_classes(class_name, match):
    _, _, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    with pytest.raises(ValueError, match=match):
        nv.generator_config_from_init_kwargs(kw["G"], class_name=class_name, source="x.pkl")


def test_stylegan2_from_the_stylegan3_repo_is_accepted(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw, module_name="training.networks_stylegan2")
    e = nv.read_nvidia_pkl(path)["G_ema"]
    assert e["class_name"] == "training.networks_stylegan2.Generator"
    nv.generator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"], source=path)


@pytest.mark.parametrize("override,match", [
    (dict(c_dim=10), r"conditional discriminator"),
    (dict(d_architecture="skip"), r"architecture='skip'.*'resnet'"),
    (dict(mbstd_num_channels=2), r"mbstd_num_channels=2"),
    (dict(mbstd_group_size=None), r"mbstd_group_size=None"),
])
def test_unsupported_discriminators_are_refused(override, match):
    params = dict(SMALL, n_mapping=2)
    params.update(override)
    _, _, kw = npw.make_nvidia_state(**params)
    with pytest.raises(ValueError, match=match):
        nv.discriminator_config_from_init_kwargs(kw["D"], class_name="training.networks.Discriminator",
                                                 source="x.pkl")


def test_d_group_size_is_carried_over():
    _, _, kw = npw.make_nvidia_state(**SMALL, n_mapping=2, mbstd_group_size=8)
    cfg = nv.discriminator_config_from_init_kwargs(kw["D"])
    assert cfg == dict(size=32, channel_base=512, channel_max=64, stddev_group=8, stddev_feat=1)
    assert any("group size is 8" in n for n in nv.conversion_notes(d_kwargs=kw["D"]))


def test_mapping_refuses_unknown_and_missing_keys():
    g, d, _ = npw.make_nvidia_state(**SMALL, n_mapping=2)
    extra = dict(g, **{"mapping.embed.weight": torch.zeros(32, 10)})
    with pytest.raises(ValueError, match="mapping.embed.weight"):
        nv.nvidia_g_to_rosinality(extra, source="x.pkl")
    missing = {k: v for k, v in g.items() if k != "synthesis.b16.conv0.noise_const"}
    with pytest.raises(ValueError, match="synthesis.b16.conv0.noise_const"):
        nv.nvidia_g_to_rosinality(missing)
    bad_filter = dict(g, **{"synthesis.b8.resample_filter": torch.ones(4, 4) / 16})
    with pytest.raises(ValueError, match="standard"):
        nv.nvidia_g_to_rosinality(bad_filter)
    with pytest.raises(ValueError, match="expected 8 mapping layers, the weights have 2"):
        nv.nvidia_g_to_rosinality(g, n_mlp=8)
    sg3_like = dict(g, **{"synthesis.L0_36_512.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="L0_36_512"):
        nv.nvidia_g_to_rosinality(sg3_like)
    extra_d = dict(d, **{"b32.fromrgb_extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="fromrgb_extra"):
        nv.nvidia_d_to_rosinality(extra_d)
    cond_d = dict(d, **{"b4.out.weight": torch.zeros(8, 64)})
    with pytest.raises(ValueError, match="cmap_dim"):
        nv.nvidia_d_to_rosinality(cond_d)


def test_init_kwargs_must_match_the_weights():
    g, _, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    kw["G"]["mapping_kwargs"]["num_layers"] = 8
    with pytest.raises(ValueError, match="8 mapping layers but the weights have 2"):
        nv.generator_config_from_init_kwargs(kw["G"], state_dict=g, source="x.pkl")


# ----------------------------------------------------------------------------------------------------------
# Mapping: keys, shapes, values


@pytest.mark.parametrize("n_mapping", [2, 8])
def test_g_round_trip_keys_shapes_and_n_mlp(tmp_path, n_mapping):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=n_mapping, seed=n_mapping)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    _, cfg, sd, w_avg = convert_g(path)
    assert cfg == dict(size=32, style_dim=32, n_mlp=n_mapping, channel_base=512, channel_max=64, lr_mlp=0.01,
                       conv_clamp=256.0)
    assert shapes(sd) == expected_g_layout(32, 32, n_mapping, 512, 64)
    assert torch.equal(w_avg, g["mapping.w_avg"])


def test_g_values_are_carried_exactly(small_pkl):
    path, g, *_ = small_pkl
    _, cfg, sd, latent_avg = convert_g(path)
    assert torch.equal(latent_avg, g["mapping.w_avg"])
    for i in range(cfg["n_mlp"]):
        assert torch.equal(sd[f"style.{i + 1}.weight"], g[f"mapping.fc{i}.weight"])
        assert torch.equal(sd[f"style.{i + 1}.bias"], g[f"mapping.fc{i}.bias"])
    assert torch.equal(sd["input.input"], g["synthesis.b4.const"].unsqueeze(0))
    pairs = [("conv1", "synthesis.b4.conv1", 0)]
    for k, r in enumerate([8, 16, 32]):
        pairs += [(f"convs.{2 * k}", f"synthesis.b{r}.conv0", 2 * k + 1),
                  (f"convs.{2 * k + 1}", f"synthesis.b{r}.conv1", 2 * k + 2)]
    for ro, nvk, j in pairs:
        assert torch.equal(sd[f"{ro}.conv.weight"], g[f"{nvk}.weight"].unsqueeze(0)), ro  # no flip
        assert torch.equal(sd[f"{ro}.conv.modulation.weight"], g[f"{nvk}.affine.weight"])
        assert torch.equal(sd[f"{ro}.conv.modulation.bias"], g[f"{nvk}.affine.bias"])
        assert torch.equal(sd[f"{ro}.noise.weight"], g[f"{nvk}.noise_strength"].reshape(1))
        assert torch.equal(sd[f"{ro}.activate.bias"], g[f"{nvk}.bias"])
        assert torch.equal(sd[f"noises.noise_{j}"], g[f"{nvk}.noise_const"][None, None])
    for ro, nvk in [("to_rgb1", "synthesis.b4.torgb")] + [(f"to_rgbs.{k}", f"synthesis.b{r}.torgb")
                                                          for k, r in enumerate([8, 16, 32])]:
        assert torch.equal(sd[f"{ro}.conv.weight"], g[f"{nvk}.weight"].unsqueeze(0))
        assert torch.equal(sd[f"{ro}.bias"], g[f"{nvk}.bias"].reshape(1, 3, 1, 1))
        assert torch.equal(sd[f"{ro}.conv.modulation.weight"], g[f"{nvk}.affine.weight"])
        assert torch.equal(sd[f"{ro}.conv.modulation.bias"], g[f"{nvk}.affine.bias"])
    f = torch.tensor([1.0, 3, 3, 1])
    fir4 = torch.outer(f, f) / 64 * 4
    for k in range(3):
        assert torch.equal(sd[f"convs.{2 * k}.conv.blur.kernel"], fir4)
        assert torch.equal(sd[f"to_rgbs.{k}.upsample.kernel"], fir4)
    # every NVIDIA G tensor except the resample filters was used exactly once
    n_used = sum(v.numel() for k, v in g.items() if not k.endswith("resample_filter") and k != "mapping.w_avg")
    n_fir = sum(v.numel() for k, v in sd.items() if k.endswith("kernel"))
    assert sum(v.numel() for v in sd.values()) - n_fir == n_used


def test_fir_buffers_can_be_left_out():
    g, _, _ = npw.make_nvidia_state(**SMALL, n_mapping=2)
    sd, _ = nv.nvidia_g_to_rosinality(g, include_fir_buffers=False)
    full = expected_g_layout(32, 32, 2, 512, 64)
    assert shapes(sd) == {k: v for k, v in full.items() if not k.endswith("kernel")}


def test_config_f_1024_matches_the_spec_key_list():
    """Full-size config-f mapping (data-less meta tensors) against rosinality_g1024_keys.txt."""
    g, d, kw = npw.make_nvidia_state(size=1024, channel_base=32768, channel_max=512, z_dim=512, w_dim=512,
                                     n_mapping=8, meta=True)
    cfg = nv.generator_config_from_init_kwargs(kw["G"], class_name="training.networks.Generator", state_dict=g)
    assert cfg["n_mlp"] == 8 and cfg["size"] == 1024 and cfg["channel_base"] == 32768
    sd, w_avg = nv.nvidia_g_to_rosinality(g, size=1024, n_mlp=8)
    spec = read_spec_keys()
    assert len(spec) == 171
    assert shapes(sd) == spec
    assert expected_g_layout(1024, 512, 8, 32768, 512) == spec  # the layout helper used above is the spec's
    d_sd = nv.nvidia_d_to_rosinality(d, size=1024)
    assert shapes(d_sd) == expected_d_layout(1024, 32768, 512)
    # rosinality D at 1024 has 29,012,513 parameters (spec table); kernels are buffers
    assert sum(v.numel() for k, v in d_sd.items() if not k.endswith("kernel")) == 29_012_513


def test_d_round_trip_keys_shapes_values(small_pkl):
    path, _, d, kw, _ = small_pkl
    nets = nv.read_nvidia_pkl(path)
    e = nets["D"]
    cfg = nv.discriminator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"],
                                                   state_dict=e["state_dict"], source=path)
    assert cfg == dict(size=32, channel_base=512, channel_max=64, stddev_group=4, stddev_feat=1)
    sd = nv.nvidia_d_to_rosinality(e["state_dict"], size=32, source=path)
    assert shapes(sd) == expected_d_layout(32, 512, 64)
    assert torch.equal(sd["convs.0.0.weight"], d["b32.fromrgb.weight"])
    assert torch.equal(sd["convs.0.1.bias"], d["b32.fromrgb.bias"])
    for k, r in enumerate([32, 16, 8], start=1):
        assert torch.equal(sd[f"convs.{k}.conv1.0.weight"], d[f"b{r}.conv0.weight"])
        assert torch.equal(sd[f"convs.{k}.conv1.1.bias"], d[f"b{r}.conv0.bias"])
        assert torch.equal(sd[f"convs.{k}.conv2.1.weight"], d[f"b{r}.conv1.weight"])
        assert torch.equal(sd[f"convs.{k}.conv2.2.bias"], d[f"b{r}.conv1.bias"])
        assert torch.equal(sd[f"convs.{k}.skip.1.weight"], d[f"b{r}.skip.weight"])
        f = torch.tensor([1.0, 3, 3, 1])
        assert torch.equal(sd[f"convs.{k}.conv2.0.kernel"], torch.outer(f, f) / 64)
        assert torch.equal(sd[f"convs.{k}.skip.0.kernel"], torch.outer(f, f) / 64)
    for ro, nvk in (("final_conv.0.weight", "b4.conv.weight"), ("final_conv.1.bias", "b4.conv.bias"),
                    ("final_linear.0.weight", "b4.fc.weight"), ("final_linear.0.bias", "b4.fc.bias"),
                    ("final_linear.1.weight", "b4.out.weight"), ("final_linear.1.bias", "b4.out.bias")):
        assert torch.equal(sd[ro], d[nvk])


# ----------------------------------------------------------------------------------------------------------
# Loading into our networks, and behaviour against NVIDIA semantics written out by hand


networks = pytest.importorskip("gan_adapt.networks")


def _nv_mapping(g, z, n_mlp, lr=0.01):
    """NVIDIA MappingNetwork semantics: normalise z, then n_mlp equalised-lr FC + lrelu(0.2)*sqrt(2)."""
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n_mlp):
        w, b = g[f"mapping.fc{i}.weight"], g[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(F.linear(x, w * (lr / math.sqrt(w.shape[1])), b * lr), 0.2) * math.sqrt(2)
    return x


def _fir(x, pad):
    f = torch.tensor([1.0, 3, 3, 1])
    f = (torch.outer(f, f) / 64).to(x)
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad] * 4), f.expand(c, 1, 4, 4), groups=c)


def _nv_conv(x, w, b=None, act=True, down=False, gain=1.0):
    """NVIDIA Conv2dLayer semantics (no clamp): equalised lr, [1,3,3,1] low-pass before stride-2 convs."""
    k = w.shape[-1]
    w = w * (1 / math.sqrt(w[0].numel()))
    if down and k == 1:
        x = F.conv2d(_fir(x, 1)[:, :, ::2, ::2], w)
    elif down:
        x = F.conv2d(_fir(x, 2), w, stride=2)
    else:
        x = F.conv2d(x, w, padding=k // 2)
    if b is not None:
        x = x + b.view(1, -1, 1, 1)
    if act:
        x = F.leaky_relu(x, 0.2) * math.sqrt(2)
    return x * gain


def _nv_discriminator(d, img, size, group=4):
    """NVIDIA resnet Discriminator + epilogue semantics, from the architecture description."""
    x = _nv_conv(img, d[f"b{size}.fromrgb.weight"], d[f"b{size}.fromrgb.bias"])
    r = size
    while r > 4:
        y = _nv_conv(x, d[f"b{r}.skip.weight"], None, act=False, down=True, gain=math.sqrt(0.5))
        x = _nv_conv(x, d[f"b{r}.conv0.weight"], d[f"b{r}.conv0.bias"])
        x = _nv_conv(x, d[f"b{r}.conv1.weight"], d[f"b{r}.conv1.bias"], down=True, gain=math.sqrt(0.5))
        x = y + x
        r //= 2
    n, c, h, w = x.shape
    g = min(group, n)
    y = x.reshape(g, -1, 1, c, h, w)
    y = (y - y.mean(0)).square().mean(0)
    y = (y + 1e-8).sqrt().mean([2, 3, 4]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    x = torch.cat([x, y], 1)  # the stddev channel goes last
    x = _nv_conv(x, d["b4.conv.weight"], d["b4.conv.bias"])
    fw, ow = d["b4.fc.weight"], d["b4.out.weight"]
    x = F.leaky_relu(F.linear(x.flatten(1), fw / math.sqrt(fw.shape[1]), d["b4.fc.bias"]), 0.2) * math.sqrt(2)
    return F.linear(x, ow / math.sqrt(ow.shape[1]), d["b4.out.bias"])


@pytest.mark.parametrize("n_mapping", [2, 8])
def test_mapped_g_loads_strict_and_runs(tmp_path, n_mapping):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=n_mapping, seed=3)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    _, cfg, sd, w_avg = convert_g(path)
    G = networks.Generator(**cfg)
    G.load_state_dict(sd, strict=True)
    G.set_latent_avg(w_avg)
    G.eval()
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img, _ = G([z], randomize_noise=False)
        assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
        # mapping network and affine (style) layers follow NVIDIA's formulas
        w = G.get_latent(z)
        torch.testing.assert_close(w, _nv_mapping(g, z, n_mapping), rtol=1e-4, atol=1e-4)
        styles = G.styles_from_latent(w)
        for layer, s in zip(G.style_layers(), styles):
            nvk = {"conv1": "synthesis.b4.conv1", "to_rgb1": "synthesis.b4.torgb"}.get(layer.name)
            if nvk is None:
                kind, idx = layer.name.split(".")
                k = int(idx) // 2 if kind == "convs" else int(idx)
                r = 8 * 2 ** k
                nvk = (f"synthesis.b{r}.conv{int(idx) % 2}" if kind == "convs" else f"synthesis.b{r}.torgb")
            aw, ab = g[f"{nvk}.affine.weight"], g[f"{nvk}.affine.bias"]
            torch.testing.assert_close(s, F.linear(w, aw / math.sqrt(aw.shape[1]), ab), rtol=1e-5, atol=1e-5)
        # truncation towards NVIDIA's w_avg
        img_t = G.generate(z, truncation=0.0)
        img_avg, _ = G([w_avg.expand(2, -1)], input_is_latent=True, randomize_noise=False)
        torch.testing.assert_close(img_t, img_avg, rtol=1e-4, atol=1e-4)
        noise_const = g["synthesis.b16.conv1.noise_const"]
        assert torch.equal(G.noises.noise_4[0, 0], noise_const)


def test_mapped_d_loads_strict_and_matches_nvidia_semantics(small_pkl):
    path, _, d, _, _ = small_pkl
    e = nv.read_nvidia_pkl(path)["D"]
    cfg = nv.discriminator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"])
    D = networks.Discriminator(config=networks.DiscriminatorConfig(**cfg))
    D.load_state_dict(nv.nvidia_d_to_rosinality(e["state_dict"]), strict=True)
    D.eval()
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(D(img), _nv_discriminator(d, img, 32), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(D(img[:2]), _nv_discriminator(d, img[:2], 32), rtol=1e-4, atol=1e-4)


def test_registry_load(small_pkl):
    from gan_adapt.formats import load_checkpoint

    path, g, _, _, marker = small_pkl
    ckpt = nv.load(path)
    assert ckpt.source_format == "nvidia" and ckpt.d is not None and ckpt.g is not None
    assert torch.equal(ckpt.g_ema.latent_avg, g["mapping.w_avg"])
    assert ckpt.g_ema.config.conv_clamp == 256 and ckpt.meta["nvidia_conv_clamp"] == 256  # faithful by default
    assert ckpt.meta["latent_avg_source"] == "file"
    assert torch.equal(ckpt.g_ema.state_dict()["conv1.conv.weight"], g["synthesis.b4.conv1.weight"][None])
    assert nv.load(path, conv_clamp=False).g_ema.config.conv_clamp is None
    via_registry = load_checkpoint(path)
    assert via_registry.source_format == "nvidia"
    assert not marker.exists()


def test_registry_load_keeps_g_when_d_is_unsupported(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2, mbstd_num_channels=2)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    ckpt = nv.load(path)
    assert ckpt.d is None
    assert any("D not converted" in n and "mbstd_num_channels=2" in n for n in ckpt.meta["notes"])


def test_conv_clamp_limits_activations_like_nvidia(small_pkl):
    """With the clamp, no layer's output leaves [-256, 256] even for huge styles; without it they do."""
    path, *_ = small_pkl
    clamped, free = nv.load(path).g_ema, nv.load(path, conv_clamp=False).g_ema
    with torch.no_grad():
        for name in ("input.input", "conv1.conv.weight"):
            for g in (clamped, free):
                g.get_parameter(name).mul_(1e4)
        w = clamped.get_latent(torch.randn(2, clamped.style_dim))
        seen = {}
        for label, g in (("clamped", clamped), ("free", free)):
            h = g.conv1.register_forward_hook(lambda m, i, o, label=label: seen.__setitem__(label, o.abs().max()))
            g.generate(w=w)
            h.remove()
    assert seen["clamped"] <= 256 and seen["free"] > 256
