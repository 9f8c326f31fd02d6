"""NVIDIA stylegan2-ada-pytorch / stylegan3 .pkl reader: real snapshots, safe unpickling, key mapping, refusals.

Two kinds of pickles:

* ``tests/fixtures/nvidia_*_tiny.pkl``: snapshots written by NVIDIA's own network and persistence code
  (tools/fixtures/make_nvidia_fixture.py; the embedded module source is replaced by a stand-in that raises
  SystemExit if executed), with golden outputs of NVIDIA's own generator and discriminator
  (``*_golden.pt``). These check the user path: ``load_checkpoint`` / ``load_generator`` / the CLI render what
  NVIDIA renders, and StyleGAN3 nets are refused.
* Variants written by tests/nvidia_pickle_writer.py (no NVIDIA code), whose layout is checked against the real
  fixture below: refusals, corruption, protocol 3, gzip, hostile globals, out-of-range sizes, NaN weights.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gzip  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from collections import OrderedDict  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import nvidia_pickle_writer as npw  # noqa: E402

from adapt_common.files import NonFiniteTensorError, SizeLimitError  # noqa: E402
from gan_adapt.formats import nvidia_pkl as nv  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ADA_PKL = os.path.join(FIXTURES, "nvidia_ada_tiny.pkl")  # stylegan2-ada-pytorch training/networks.py
SG3REPO_PKL = os.path.join(FIXTURES, "nvidia_sg3repo_stylegan2_tiny.pkl")  # stylegan3 training/networks_stylegan2.py
SG3_PKL = os.path.join(FIXTURES, "nvidia_stylegan3_tiny.pkl")  # stylegan3 training/networks_stylegan3.py
#: Largest |ours - NVIDIA| allowed on images (values up to ~7) and D logits; measured <= 6.5e-6 (images) and
#: <= 2e-7 (D) on the 2-core CPU these tests were written on.
GOLDEN_ATOL = 1e-5
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
    cfg = nv.generator_config_from_init_kwargs(e["init_kwargs"], class_name=e["class_name"], classes=e["classes"],
                                               state_dict=e["state_dict"], source=path)
    sd, w_avg = nv.nvidia_g_to_rosinality(e["state_dict"], size=cfg["size"], n_mlp=cfg["n_mlp"], source=path)
    return nets, cfg, sd, w_avg


def golden(pkl):
    return torch.load(pkl.replace(".pkl", "_golden.pt"), weights_only=True)


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------------------------------------
# Real snapshots written by NVIDIA's code: the user path renders NVIDIA's images


@pytest.mark.parametrize("pkl", [ADA_PKL, SG3REPO_PKL], ids=["stylegan2-ada-pytorch", "stylegan3-repo-sg2"])
def test_nvidia_snapshot_renders_nvidias_images(pkl):
    """load_generator(pkl) draws, for NVIDIA's seeds and truncations, the images NVIDIA's G_ema drew."""
    from gan_adapt.formats import load_generator

    gd = golden(pkl)
    g = load_generator(pkl)
    z = gd["z"].float()  # NVIDIA's mapping starts with z.to(float32)
    with torch.no_grad():
        assert torch.equal(g.latent_avg, gd["w_avg"])  # the truncation centre is NVIDIA's w_avg
        for psi in gd["psis"]:
            w = g.truncate(g.get_latent(z), psi)
            assert max_diff(w, gd[f"ws_psi{psi}"][:, 0]) < GOLDEN_ATOL  # NVIDIA broadcasts one w to all layers
            assert max_diff(g.generate(z, truncation=psi, noise_mode="const"), gd[f"img_psi{psi}"]) < GOLDEN_ATOL
        # synthesis from a given w+ (a different w for every layer: checks the layer order of the styles)
        assert gd["ws_given"].shape[1] == g.n_latent == gd["num_ws"]
        assert max_diff(g.generate(w=gd["ws_given"], noise_mode="const"), gd["img_ws_given"]) < GOLDEN_ATOL
    # the images are not trivially alike: a wrong truncation or a dropped noise input would show
    assert max_diff(gd["img_psi1.0"], gd["img_psi0.7"]) > 0.1


@pytest.mark.parametrize("pkl", [ADA_PKL, SG3REPO_PKL], ids=["stylegan2-ada-pytorch", "stylegan3-repo-sg2"])
def test_nvidia_snapshot_training_g_and_discriminator(pkl):
    """load_checkpoint(pkl): g is NVIDIA's G (not G_ema), d gives NVIDIA's D logits."""
    from gan_adapt.formats import load_checkpoint

    gd = golden(pkl)
    ckpt = load_checkpoint(pkl)
    assert ckpt.source_format == "nvidia" and ckpt.meta["nvidia_class_name"] == "Generator"
    with torch.no_grad():
        img_g = ckpt.g.generate(gd["z"].float(), noise_mode="const")
        assert max_diff(img_g, gd["img_G_psi1.0"]) < GOLDEN_ATOL
        assert max_diff(img_g, gd["img_psi1.0"]) > 0.1  # G and G_ema differ in the file
        assert max_diff(ckpt.d(gd["d_img"]), gd["d_out"]) < GOLDEN_ATOL  # 4 images: one stddev group of 4
        assert max_diff(ckpt.d(gd["img_psi1.0"]), gd["d_out_on_G_ema"]) < GOLDEN_ATOL  # 3 images: group of 3


def test_cli_generate_from_nvidia_snapshot(tmp_path, capsys):
    """`python -m gan_adapt generate --ckpt network-snapshot.pkl` renders NVIDIA's images for NVIDIA's seeds."""
    from gan_adapt.cli import main

    gd = golden(ADA_PKL)
    seeds = ",".join(str(s) for s in gd["seeds"])
    raw = tmp_path / "raw.npy"
    rc = main(["generate", "--ckpt", ADA_PKL, "--seeds", seeds, "--truncation", "0.7", "--outdir",
               str(tmp_path / "out"), "--save-raw", str(raw)])
    assert rc == 0, capsys.readouterr().err
    import numpy as np
    assert max_diff(torch.from_numpy(np.load(raw)), gd["img_psi0.7"]) < GOLDEN_ATOL
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.png"] + [f"seed{s:04d}.png"
                                                                                  for s in gd["seeds"]]


def test_stylegan3_snapshot_is_refused_with_a_clear_message(tmp_path, capsys):
    """A real StyleGAN3 snapshot (its generator class is also 'Generator') is refused, at the CLI without a
    traceback; the message names the file, says StyleGAN3 and what is supported."""
    from gan_adapt.cli import main
    from gan_adapt.formats import load_checkpoint

    with pytest.raises(nv.NvidiaPickleError) as e:
        load_checkpoint(SG3_PKL)
    msg = str(e.value)
    assert msg.startswith(SG3_PKL) and "StyleGAN3 (alias-free) generator" in msg
    assert "SynthesisInput" in msg and "networks_stylegan2.py" in msg
    rc = main(["generate", "--ckpt", SG3_PKL, "--seeds", "0", "--outdir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "StyleGAN3" in err and "Traceback" not in err


def test_real_snapshot_classes_are_bare_and_source_is_never_run():
    """What NVIDIA's persistence stores: bare class names, no module name; the embedded source stays text."""
    with open(ADA_PKL, "rb") as f:
        top = nv.SafeNvidiaUnpickler(f).load()
    assert list(top) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert [top[k].class_name for k in ("G", "D", "G_ema", "augment_pipe")] == [
        "Generator", "Discriminator", "Generator", "AugmentPipe"]
    assert "raise SystemExit" in top["G_ema"].module_src  # the fixture's stand-in: running it would exit
    nets = nv.read_nvidia_pkl(ADA_PKL)
    classes = nets["G_ema"]["classes"]
    assert classes[""] == "Generator" and classes["synthesis.b32"] == "SynthesisBlock"
    assert classes["synthesis.b8.conv0"] == "SynthesisLayer" and classes["mapping.fc1"] == "FullyConnectedLayer"
    assert not any("." in c for c in classes.values())


# ----------------------------------------------------------------------------------------------------------
# The writer's pickles have the layout of the real ones


def _writer_twin(tmp_path):
    """The writer's pickle of a net with the real ada fixture's configuration."""
    g, d, kw = npw.make_nvidia_state(size=32, channel_base=256, channel_max=16, z_dim=32, w_dim=32, n_mapping=2)
    return npw.write_nvidia_pkl(tmp_path / "twin.pkl", g, d, kw)


def test_writer_matches_the_layout_of_a_real_snapshot(tmp_path):
    twin = _writer_twin(tmp_path)
    with open(ADA_PKL, "rb") as f:
        real_bytes = f.read()
    assert npw.referenced_globals(twin.read_bytes()) == npw.referenced_globals(real_bytes)
    real, fake = nv.read_nvidia_pkl(ADA_PKL), nv.read_nvidia_pkl(twin)
    for key in ("G", "D", "G_ema"):
        assert fake[key]["class_name"] == real[key]["class_name"]
        assert fake[key]["classes"] == real[key]["classes"], key
        assert shapes(fake[key]["state_dict"]) == shapes(real[key]["state_dict"]), key
        assert fake[key]["init_kwargs"] == real[key]["init_kwargs"], key


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
    assert nets["G_ema"]["class_name"] == "Generator" and nets["D"]["class_name"] == "Discriminator"
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
    assert stub.version == 6 and stub.class_name == "Generator"
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
    (dict(g_extra_synthesis=dict(magnitude_ema_beta=0.999, conv_kernel=1)), r"StyleGAN3.*conv_kernel, magnitude_ema"),
    (dict(g_extra_synthesis=dict(resample_filter=[1, 2, 1])), r"resample_filter"),
])
def test_unsupported_generators_are_refused(tmp_path, override, match):
    params = dict(SMALL, n_mapping=2)
    params.update(override)
    g, d, kw = npw.make_nvidia_state(**params)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    with pytest.raises(ValueError, match=match) as err:
        nv.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("g_class,g_classes,match", [
    ("TriPlaneGenerator", None, r"unsupported generator class 'TriPlaneGenerator'"),
    ("MappingNetwork", None, r"unsupported generator class 'MappingNetwork'"),
    # a 'Generator' whose synthesis network is not StyleGAN2's (e.g. another project's network)
    ("Generator", {"block": "SynthesisBlockNoUp"}, r"not StyleGAN2's.*SynthesisBlockNoUp"),
    ("Generator", {"synthesis": "SynthesisNetworkXL"}, r"not StyleGAN2's.*SynthesisNetworkXL"),
    # StyleGAN3's tree: told apart by the sub-module classes, not by the root class name (also 'Generator')
    ("Generator", {"block": "SynthesisInput"}, r"StyleGAN3 \(alias-free\).*SynthesisInput"),
])
def test_generators_of_other_families_are_refused(tmp_path, g_class, g_classes, match):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw, g_class=g_class, g_classes=g_classes)
    with pytest.raises(nv.NvidiaPickleError, match=match) as err:
        nv.load(path)
    assert str(path) in str(err.value) and "stylegan2-ada-pytorch" in str(err.value)


def test_stylegan3_keywords_are_read_in_both_layouts():
    """stylegan3's train.py passes synthesis arguments as top-level Generator keywords."""
    _, _, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    flat = {k: v for k, v in kw["G"].items() if k != "synthesis_kwargs"}
    flat.update(kw["G"]["synthesis_kwargs"])
    assert nv.generator_config_from_init_kwargs(flat) == nv.generator_config_from_init_kwargs(kw["G"])
    assert nv.generator_config_from_init_kwargs(flat)["channel_max"] == 64  # not the 512 default
    with pytest.raises(ValueError, match="StyleGAN3.*magnitude_ema_beta"):
        nv.generator_config_from_init_kwargs(dict(flat, magnitude_ema_beta=0.999), source="x.pkl")


@pytest.mark.parametrize("where,key,value", [
    ("G", "img_resolution", 2 ** 20), ("G", "img_resolution", 2), ("G", "w_dim", 10 ** 9),
    ("G", "z_dim", 10 ** 9), ("G", "w_dim", -1), ("G", "img_resolution", 1024.5),
    ("G.synthesis_kwargs", "channel_max", 10 ** 7), ("G.synthesis_kwargs", "channel_base", 2 ** 40),
    ("G.mapping_kwargs", "num_layers", 10 ** 6),
])
def test_sizes_from_init_kwargs_are_bounded_before_building(tmp_path, monkeypatch, where, key, value):
    """A hostile or corrupt file cannot make the loader build a network of absurd size."""
    from gan_adapt import networks

    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    target = kw["G"] if where == "G" else kw["G"][where.split(".")[1]]
    target[key] = value
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    built = []

    def no_build(self, *args, **kwargs):
        built.append(kwargs)
        raise AssertionError("Generator built before the sizes were checked")

    monkeypatch.setattr(networks.Generator, "__init__", no_build)
    with pytest.raises(SizeLimitError, match=key) as err:
        nv.load(path)
    assert str(path) in str(err.value) and not built


def test_discriminator_sizes_are_bounded(tmp_path):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    kw["D"]["channel_max"] = 10 ** 7
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw)
    ckpt = nv.load(path)  # D is optional: left out, the reason recorded
    assert ckpt.d is None and any("channel_max" in n and "10,000,000" in n for n in ckpt.meta["notes"])


@pytest.mark.parametrize("net,key", [("G_ema", "synthesis.b16.conv1.weight"), ("G_ema", "mapping.w_avg"),
                                     ("G", "synthesis.b4.const"), ("D", "b8.conv0.bias")])
def test_non_finite_weights_are_refused(tmp_path, net, key):
    g, d, kw = npw.make_nvidia_state(**SMALL, n_mapping=2)
    g_train = OrderedDict((k, v.clone()) for k, v in g.items())
    target = {"G_ema": g, "G": g_train, "D": d}[net]
    target[key] = target[key].clone()
    target[key].view(-1)[0] = float("nan") if net != "D" else float("inf")
    path = npw.write_nvidia_pkl(tmp_path / "x.pkl", g, d, kw, g_sd=g_train)
    with pytest.raises(NonFiniteTensorError) as err:
        nv.load(path)
    assert f"{path} ({net})" in str(err.value) and repr(key) in str(err.value)


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
        nv.discriminator_config_from_init_kwargs(kw["D"], class_name="Discriminator", source="x.pkl")


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
    cfg = nv.generator_config_from_init_kwargs(kw["G"], class_name="Generator", state_dict=g)
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
                                                   classes=e["classes"], state_dict=e["state_dict"], source=path)
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
# Loading into our networks (NVIDIA's own outputs are compared above; these cover 8 mapping layers and the clamp)


from gan_adapt import networks  # noqa: E402


def _nv_mapping(g, z, n_mlp, lr=0.01):
    """NVIDIA MappingNetwork semantics: normalise z, then n_mlp equalised-lr FC + lrelu(0.2)*sqrt(2)."""
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n_mlp):
        w, b = g[f"mapping.fc{i}.weight"], g[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(F.linear(x, w * (lr / math.sqrt(w.shape[1])), b * lr), 0.2) * math.sqrt(2)
    return x


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
