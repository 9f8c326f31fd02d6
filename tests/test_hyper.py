"""HyperDomainNet hypernetwork: the paper's parameter counts, identity at start, per-sample modulations equal
their direction files, multi-domain training lowers its loss, resumes exactly and stays in sync under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adapt_common.config import load_config
from gan_adapt.directions import Direction, DomainEdit
from gan_adapt.hypernetwork import Hypernetwork
from gan_adapt.networks import Generator
from gan_adapt.training import hyper
from gan_adapt.training.hyper import HyperConfig, HyperTrainer, resample_near

DOMAINS = ["domains.train=[a pencil sketch of a face,a sepia photo of a face,a negative photo of a face]",
           "domains.names=[sketch,sepia,negative]", "domains.unseen=[a sepia pencil sketch of a face = sketch+sepia]"]


@pytest.mark.parametrize("size,depth,count", [(1024, 4, 13_913_504), (1024, 6, 14_968_224)])
def test_parameter_counts_match_the_paper(size, depth, count):
    with torch.device("meta"):
        g = Generator(size, 512, 8, channel_multiplier=2)
        net = Hypernetwork.for_generator(g, depth=depth)
    assert sum(p.numel() for p in net.parameters()) == count


def test_resample_near():
    v = F.normalize(torch.randn(64, 16), dim=-1)
    r = resample_near(v, 0.95, torch.Generator().manual_seed(0))
    cos = (r * v).sum(-1)
    assert torch.allclose(r.norm(dim=-1), torch.ones(64), atol=1e-5)
    assert cos.min() >= 0.95 - 1e-5 and cos.max() <= 1 + 1e-5 and cos.std() > 0.005


def _args(tiny_ckpt_clip, run, *extra):
    ckpt, clip_path = tiny_ckpt_clip
    return [f"base={ckpt}", f"loss.clip=[{clip_path}]", f"exp.run_dir={run}", "exp.threads=1",
            "mapper.width=32", "mapper.depth=2", "training.batch=4", "logging.log_every=1",
            "logging.sample_every=100", "logging.n_samples=2", *DOMAINS, *extra]


def test_starts_as_the_source_and_directions_match_per_sample_modulation(tiny_ckpt_clip, tmp_path):
    tr = HyperTrainer(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "r")), quiet=True)
    z = torch.randn(2, tr.source.style_dim)
    d = tr.direction_for("a pencil sketch of a face")
    assert d.kind == "cin_mult" and d.delta.abs().max() < 0.05  # xavier x 0.01: near the source
    with torch.no_grad():
        for p in tr.mapper.parameters():
            p.add_(0.2 * torch.randn_like(p))
    tr.mapper.eval()
    texts = ["a pencil sketch of a face", "a sepia photo of a face"]
    emb = tr.guide.encode_texts(texts, ["{}"])[0][:, 0]
    styles = tr.source.styles_from_latent(tr.source.get_latent(z))
    per_sample = tr.source.synthesis(styles, "const", tr.mapper.weight_mults(tr.source, emb))
    for i, text in enumerate(texts):
        one = DomainEdit(tr.source, [(tr.direction_for(text), 1.0)], check=False).generate(z[i:i + 1])
        torch.testing.assert_close(per_sample[i:i + 1], one, rtol=1e-4, atol=1e-5)


def test_training_lowers_the_loss_resumes_exactly_and_exports(tiny_ckpt_clip, tmp_path, monkeypatch):
    from gan_adapt.cli import main
    extra = ["training.iters=24", "training.lr=0.003", "training.convex=false", "training.resample=false",
             "training.per_domain=2", "loss.indomain=0.5",
             "logging.checkpoint_every=12", "evaluation.n=4"]
    straight = hyper.train(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "a", *extra)), quiet=True)
    rows = [r.split(",") for r in (tmp_path / "a" / "log.csv").read_text().splitlines()]
    col = rows[0].index("direction")
    first = sum(float(r[col]) for r in rows[1:7]) / 6
    last = sum(float(r[col]) for r in rows[-6:]) / 6
    assert last < first - 0.02, (first, last)
    import json
    report = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert set(report) == {"sketch", "sepia", "negative", "sketch+sepia"}
    assert report["sketch"]["seen"] and not report["sketch+sepia"]["seen"]
    assert set(report["sketch+sepia"]["clip_domain"]) == {"sketch", "sepia"}
    assert all(0 <= v <= 1 for e in report.values() for v in e["clip_domain"].values())
    # the report's latents are those of seeds evaluation.seed .. +n-1 (0: validation): its sketch error equals the
    # clamped L1 to the true sketch of the source images of those seeds, computed here
    from adapt_common import synthfaces as sf
    from gan_adapt.seeds import z_from_seeds
    with torch.no_grad():
        z = z_from_seeds([0, 1, 2, 3], straight.source.style_dim)
        src = straight.source.generate(z).clamp(-1, 1)
        tgt = DomainEdit(straight.source, [(straight.direction_for("a pencil sketch of a face"), 1.0)],
                         check=False).generate(z).clamp(-1, 1)
    truth = sf.apply_domain(src, "sketch").clamp(-1, 1)
    assert report["sketch"]["pixel_l1"] == pytest.approx(float((tgt - truth).abs().mean() / 2), rel=1e-4)
    assert report["sketch"]["identity_l1"] == pytest.approx(float((src - truth).abs().mean() / 2), rel=1e-4)
    straight.cfg.evaluation.seed = 100_000  # the test split: other latents, another doing-nothing error
    assert straight.evaluate(4)["sketch"]["identity_l1"] != pytest.approx(report["sketch"]["identity_l1"], rel=1e-3)

    real = HyperTrainer.train_step

    def crash(self):
        if self.step == 15:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(HyperTrainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        hyper.train(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "b", *extra)), quiet=True)
    monkeypatch.setattr(HyperTrainer, "train_step", real)
    resumed = hyper.train(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "b", *extra)), resume=True,
                          quiet=True)
    a, b = straight.mapper.state_dict(), resumed.mapper.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    ckpt, clip_path = tiny_ckpt_clip
    out = tmp_path / "sketch.safetensors"
    assert main(["hyper", str(tmp_path / "a" / "hypernet.safetensors"), "--prompt", "a pencil sketch of a face",
                 "--out", str(out), "--clip", str(clip_path)]) == 0
    torch.testing.assert_close(Direction.from_pretrained(out).delta,
                               straight.direction_for("a pencil sketch of a face").delta)


@pytest.mark.timeout(300)
def test_two_processes_under_torchrun_stay_in_sync(tiny_ckpt_clip, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), f"{torchrun}: torch installs this script; the environment is broken"
    run = tmp_path / "ddp"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "tests/hyper_ddp_worker.py",
                        *_args(tiny_ckpt_clip, run, "training.iters=3")], cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    h0, h1 = (run / "rank0.txt").read_text(), (run / "rank1.txt").read_text()
    assert h0.startswith("2 ") and h0 == h1


@pytest.mark.parametrize("convex", [False, True])
def test_per_domain_groups_share_one_target(tiny_ckpt_clip, tmp_path, convex):
    cfg = load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "g", "training.batch=6",
                                             "training.per_domain=3", f"training.convex={convex}"))
    tr = HyperTrainer(cfg, quiet=True)
    weights, ids = tr.domain_weights(6)
    assert weights.shape == (6, 3) and torch.allclose(weights.sum(1), torch.ones(6))
    assert torch.equal(ids[:3], ids[:1].expand(3)) and torch.equal(ids[3:], ids[3:4].expand(3))
    assert torch.equal(weights[0], weights[2]) and torch.equal(weights[3], weights[5])
    if convex:
        assert ids[0] != ids[3]  # two draws are two targets even if they mix the same domains


def test_grouped_indomain_compares_only_pairs_of_one_target():
    a = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([0, 0, 1, 1])
    assert HyperTrainer.grouped_indomain([a], [a], ids) == 0
    b = a.clone()
    b[1] = a[0]  # group 0 collapses: its one pair has cos 1 instead of <a0, a1>
    expected = (1 - a[0] @ a[1]).square() / 2  # group 1 unchanged, averaged over 2 groups
    torch.testing.assert_close(HyperTrainer.grouped_indomain([b], [a], ids), expected)
    b2 = a.clone()
    b2[2] = a[0]  # a change across groups only moves cross-group pairs (not compared) ... and group 1's own pair
    expected2 = ((a[2] @ a[3]) - (a[0] @ a[3])).square() / 2
    torch.testing.assert_close(HyperTrainer.grouped_indomain([b2], [a], ids), expected2)


def test_indomain_needs_groups(tiny_ckpt_clip, tmp_path):
    with pytest.raises(ValueError, match="per_domain"):
        HyperTrainer(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "x", "loss.indomain=1")), quiet=True)
    with pytest.raises(ValueError, match="multiple"):
        HyperTrainer(load_config(HyperConfig, [], _args(tiny_ckpt_clip, tmp_path / "y", "training.per_domain=3")),
                     quiet=True)


def _analogy_args(tiny_ckpt_clip, tiny_generator, tmp_path, *extra):
    from gan_adapt.encoder import StyleEncoder
    enc = StyleEncoder.for_generator(tiny_generator, n_stats=200).save_pretrained(tmp_path / "enc.safetensors")
    return _args(tiny_ckpt_clip, tmp_path / "run", "domains.references=[synthfaces:sketch,synthfaces:sepia,"
                 "synthfaces:negative]", f"domains.invert_encoder={enc}", "analogy.steps=0", "loss.analogy_l1=1",
                 "loss.clip_direction=0", "loss.tt_direction=0", "training.convex=false", "training.mixing=0",
                 "training.batch=6", "training.per_domain=2", *extra)


def test_the_analogy_guide_pulls_each_sample_to_its_own_domains_analogy(tiny_ckpt_clip, tiny_generator, tmp_path,
                                                                       monkeypatch):
    """loss.analogy_l1: one analogy is fitted per domain, from that domain's reference; in a step each sample is
    compared, in pixels, with the analogy of its own domain applied to its own source image. Checked with the
    analogies replaced by constant images (a different grey per domain) and the modulation held at 1 (the source
    image), against the L1 computed here from the same latents."""
    tr = HyperTrainer(load_config(HyperConfig, [], _analogy_args(tiny_ckpt_clip, tiny_generator, tmp_path)),
                      quiet=True)
    assert len(tr.analogies) == 3
    with torch.no_grad():  # fitted on different references: different colour maps
        grey = torch.zeros(1, 3, 8, 8)
        outs = [a(grey) for a in tr.analogies]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    levels = [-0.5, 0.1, 0.6]
    tr.analogies = [lambda x, c=c: torch.full_like(x, c) for c in levels]
    ids = torch.tensor([2, 2, 0, 0, 1, 1])
    monkeypatch.setattr(tr, "domain_weights", lambda batch: (F.one_hot(ids, 3).float(), ids))
    real_mults = tr.mapper.weight_mults
    monkeypatch.setattr(tr.mapper, "weight_mults", lambda g, emb: [None if m is None else m - m.detach() + 1
                                                                   for m in real_mults(g, emb)])
    torch.manual_seed(7)
    stats = tr.train_step()
    torch.manual_seed(7)
    z = torch.randn(6, tr.source.style_dim)
    with torch.no_grad():
        img = tr.source.generate(z).clamp(-1, 1)
    expected = torch.stack([(img[i] - levels[int(k)]).abs().mean() for i, k in enumerate(ids)]).mean()
    assert stats["analogy_l1"] == pytest.approx(float(expected), rel=1e-4)
    assert "direction" not in stats  # no CLIP term was asked for


def test_the_analogy_guide_trains_resumes_exactly_and_refuses_what_it_cannot_use(tiny_ckpt_clip, tiny_generator,
                                                                                  tmp_path, monkeypatch):
    args = _analogy_args(tiny_ckpt_clip, tiny_generator, tmp_path, "training.iters=8", "training.lr=0.01",
                         "logging.checkpoint_every=4")
    straight = hyper.train(load_config(HyperConfig, [], args), quiet=True)
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    assert "analogy_l1" in rows[0] and "direction" not in rows[0]
    real = HyperTrainer.train_step

    def crash(self):
        if self.step == 5:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(HyperTrainer, "train_step", crash)
    args_b = [a.replace(str(tmp_path / "run"), str(tmp_path / "b")) for a in args]
    with pytest.raises(KeyboardInterrupt):
        hyper.train(load_config(HyperConfig, [], args_b), quiet=True)
    monkeypatch.setattr(HyperTrainer, "train_step", real)
    resumed = hyper.train(load_config(HyperConfig, [], args_b), resume=True, quiet=True)
    a, b = straight.mapper.state_dict(), resumed.mapper.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = HyperTrainer(load_config(HyperConfig, [], args), quiet=True).mapper.state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained: the equality above is not trivial

    def refused(*extra):
        with pytest.raises(ValueError) as e:
            HyperTrainer(load_config(HyperConfig, [], [*args, *extra]), quiet=True)
        return str(e.value)
    assert "one reference image per domain" in refused("domains.references=[synthfaces:sketch]")
    assert "convex" in refused("training.convex=true")
    assert "invert_encoder" in refused("domains.invert_encoder=")
    assert "no guidance" in refused("loss.analogy_l1=0")


def test_the_analogy_guide_with_the_mirror_view_and_the_pull(tiny_ckpt_clip, tiny_generator, tmp_path):
    """analogy.mirror + analogy.shrink in the hypernetwork: each domain's analogy averages the colour map of its
    reference's pair and that of the reference's mirror image with its own inversion (analogy.steps=0), pulled by
    the Wiener factor of the two on 16 source faces of seed exp.seed; all computed here from the encoder and the
    colour map alone, and the strengths survive the checkpoint."""
    from adapt_common.colour_map import ColourMap
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.training.clip_guided import reference_image
    args = _analogy_args(tiny_ckpt_clip, tiny_generator, tmp_path, "analogy.mirror=true", "analogy.shrink=2")
    tr = HyperTrainer(load_config(HyperConfig, [], args), quiet=True)
    enc = StyleEncoder.from_pretrained(tmp_path / "enc.safetensors")
    g = tr.source
    probe = g.generate(torch.randn(16, g.style_dim, generator=torch.Generator().manual_seed(tr.cfg.exp.seed)))
    probe = probe.clamp(-1, 1).detach()
    others = g.generate(torch.randn(3, g.style_dim, generator=torch.Generator().manual_seed(9))).clamp(-1, 1).detach()
    strengths = []
    with torch.no_grad():
        for spec, analogy in zip(["synthfaces:sketch", "synthfaces:sepia", "synthfaces:negative"], tr.analogies):
            ref = reference_image(spec, g.size)[0]
            maps = [ColourMap.fit(g.generate(w=enc(r)).clamp(-1, 1), r) for r in (ref, ref.flip(-1))]
            views = torch.stack([m(probe).clamp(-1, 1) for m in maps])
            signal = float((views.mean(0) - probe).abs().mean() / 2)
            disagreement = float((views[0] - views[1]).abs().mean() / 2)
            s = signal ** 2 / (signal ** 2 + 2 * disagreement ** 2)
            assert float(analogy.strength) == pytest.approx(s, abs=2e-3), spec
            mean = torch.stack([m(others).clamp(-1, 1) for m in maps]).mean(0)
            torch.testing.assert_close(analogy(others), (others + s * (mean - others)).clamp(-1, 1), atol=2e-3,
                                       rtol=0)
            strengths.append(s)
    assert len(set(round(s, 4) for s in strengths)) == 3  # each domain its own
    tr.train_step()
    fresh = HyperTrainer(load_config(HyperConfig, [], args), quiet=True)
    for a in fresh.analogies:
        a.strength.fill_(1.0)
    fresh.load_state_dict(tr.state_dict())
    assert [round(float(a.strength), 6) for a in fresh.analogies] == [round(float(a.strength), 6) for a in tr.analogies]
