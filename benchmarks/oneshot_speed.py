"""One-shot training speed of the demo (`make demo`: configs/oneshot_encoder.yaml, the bundled 64 px generator, its
style-invariant encoder and an image analogy; or ``--config`` another one-shot recipe, e.g. the CLIP-guided
configs/oneshot_sketch_image.yaml) on one CPU thread: the trainer's step as first written ("reference") against its
optimised step ("optimised": bit for bit the same training) and the optimised step with ``training.fast_math``
("fast_math": the same within float rounding), and where the time goes.

    python -m benchmarks.oneshot_speed [--config YAML] [--steps 300] [--chunk 10] [--profile-steps 20]
                                       [--paths ...] [--json PATH] [--set KEY=VALUE ...]

The trainers are built in this process from the demo config (evaluation off, a temporary run folder) and train
``--steps`` steps in turns of ``--chunk`` steps, each with its own copy of the global random stream (so each sees
exactly the latents a run of its own would), so that a change of machine load falls on all alike. Per path: the
summed time of its ``train_step`` calls, wall-clock and this thread's CPU time (CPU time is closer to what the step
costs on a quiet core; wall time is what a user waits on a loaded machine; both are printed with the load
average). The periodic outputs of a real run (a sample grid and a checkpoint, 6 times in 300 steps) and the setup
(loading, the source mean of 256 samples) are timed apart. Then each path's trained direction (all trained tensors
as one vector) is compared with the reference's: the relative difference of the norms.

The profile (``--profile-steps`` more steps of each path) splits a step into the source generator's forward (G_A),
CLIP on its images, the adapted generator's forward and backward (G_B fwd+bwd), CLIP's forward and backward on
those (CLIP B fwd+bwd) and the rest (latents, losses, Adam), by running the path's step with the backward taken in
stages (loss -> G_B's images, then those -> trained tensors), which gives the same gradients. A recipe whose losses
read no CLIP embedding (the encoder recipe's pixel loss) runs CLIP only in the reference step, which computes the
embeddings and drops them, as the step was first written; the optimised step skips it. The losses are the trainer's
own (``ClipTrainer.step_loss``), so the reference step's unread render of G_B(w_ref) counts under "losses + Adam".
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from benchmarks import write_json

CONFIG = "configs/oneshot_encoder.yaml"  # make demo's
ROOT = Path(__file__).resolve().parents[1]
PARTS = ("latents", "G_A fwd", "CLIP A", "G_B fwd+bwd", "CLIP B fwd+bwd", "losses + Adam")


class Clock:
    """Wall-clock and this thread's CPU time, summed over ``with clock:`` blocks."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.thread_time() - self._c


def make_trainer(run_dir: str, optimised: bool, overrides=(), config: str = CONFIG) -> tuple:
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    cfg = load_config(OneShotConfig, [ROOT / config], [f"exp.run_dir={run_dir}", "exp.threads=1", "evaluation.n=0",
                                                       *overrides])
    clock = Clock()
    with clock:
        trainer = ClipTrainer(cfg, quiet=True, optimised=optimised)
    return trainer, clock


def trained_vector(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.param.trainable_parameters()])


def check_profiled_terms(trainer) -> None:
    """The two-stage backward carries the gradient of terms that read G_B's batch; a term on the trained tensors
    themselves or on G_B(w_ref) would lose its gradient, so such a recipe is not profiled."""
    lc = trainer.cfg.loss
    if lc.offsets_l2 > 0 or lc.clip_ref > 0 or lc.rec_l2 > 0 or lc.clip_within > 0:
        raise SystemExit("the profile covers losses on G_B's batch (CLIP direction and in-domain, analogy and truth "
                         "pixels); run this config with --profile-steps 0")


def profile_step(trainer, clocks: dict[str, Clock]) -> None:
    """One training step of ``trainer`` (either path; :func:`check_profiled_terms`) timed by part; the gradients
    are the step's own (the backward runs in two stages through a detached copy of the adapted image)."""
    from gan_adapt.training.clip_guided import channels_last_input
    guide, g_b = trainer.guide, trainer.param.generator
    with clocks["latents"]:
        z, inject = trainer._latents()
    opt = trainer.optimised
    reads = trainer.losses_read_embeddings()
    embed = reads or not opt  # the step as first written embeds both batches whatever the losses
    with channels_last_input(trainer.source, g_b) if trainer.fast_math else nullcontext():
        with torch.no_grad():
            with clocks["G_A fwd"]:
                img_a, latent = trainer.source(z, inject_index=inject, randomize_noise=False, return_latents=True)
                img_a = img_a.contiguous()
            with clocks["CLIP A"]:
                emb_a = guide.encode_images(img_a) if embed else None
        with clocks["G_B fwd+bwd"]:
            if opt and trainer._adapted_maps_like_source():
                img_b = g_b(latent, input_is_latent=True, randomize_noise=False)[0].contiguous()
            else:
                img_b = g_b(z, inject_index=inject, randomize_noise=False)[0].contiguous()
    x = img_b.detach().requires_grad_(True)
    with clocks["CLIP B fwd+bwd"]:
        emb_b = guide.encode_images(x) if embed else None
    with clocks["losses + Adam"]:
        loss, _ = trainer.step_loss(img_a, x, emb_a, emb_b)
        for g in trainer.opt.param_groups:
            g["lr"] = trainer.lr_at(trainer.step)
        trainer.opt.zero_grad(set_to_none=True)
    with clocks["CLIP B fwd+bwd" if reads else "losses + Adam"]:  # through CLIP when a loss reads embeddings
        (grad_x,) = torch.autograd.grad(loss, x)
    with clocks["G_B fwd+bwd"]:
        img_b.backward(grad_x)
    with clocks["losses + Adam"]:
        trainer.opt.step()
        loss.item()
        trainer.step += 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=CONFIG, help=f"the one-shot recipe (default {CONFIG}, the demo's)")
    ap.add_argument("--steps", type=int, default=300, help="training steps per path (the demo's 300)")
    ap.add_argument("--chunk", type=int, default=10, help="steps per turn of each path")
    ap.add_argument("--profile-steps", type=int, default=20, help="steps per path of the per-part profile (0: none)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/oneshot_speed.json"), help="'' for none")
    ap.add_argument("--paths", nargs="+", default=["reference", "optimised", "fast_math"],
                    choices=["reference", "optimised", "fast_math"], help="which steps to run (reference always)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every path "
                    "(smoke tests: target.source_mean_n=8); the results then are not the demo's")
    args = ap.parse_args(argv)
    args.paths = ["reference", *(p for p in args.paths if p != "reference")]
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 (this benchmark runs torch on one thread either way)", file=sys.stderr)
    torch.set_num_threads(1)
    from adapt_common.loop import rng_state, save_training_state, set_rng_state
    load_start = os.getloadavg()
    paths = {"reference": (False, []), "optimised": (True, []), "fast_math": (True, ["training.fast_math=true"])}
    paths = {k: v for k, v in paths.items() if k in args.paths}
    with tempfile.TemporaryDirectory() as tmp:
        trainers, setup, streams, clocks = {}, {}, {}, {}
        for name, (opt, extra) in paths.items():
            trainers[name], setup[name] = make_trainer(f"{tmp}/{name}", opt, [*args.set, *extra], args.config)
            streams[name], clocks[name] = rng_state(), Clock()
        done = 0
        while done < args.steps:
            k = min(args.chunk, args.steps - done)
            for name, tr in trainers.items():
                set_rng_state(streams[name])
                with clocks[name]:
                    for _ in range(k):
                        tr.train_step()
                streams[name] = rng_state()
            done += k
            print(f"\r{done}/{args.steps} steps", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        ref = trained_vector(trainers["reference"])
        rel = {name: float((trained_vector(tr) - ref).norm() / ref.norm()) for name, tr in trainers.items()}
        outputs = {}
        for name, tr in trainers.items():  # what a real run adds every 50 steps (6 times in 300 steps)
            c = Clock()
            with c:
                save_training_state(tr.checkpoint_path(), tr.state_dict())
                tr.write_samples(Path(tmp) / name / "samples.png")
            outputs[name] = c
        profile = {}
        if args.profile_steps > 0:
            check_profiled_terms(trainers["reference"])
            for name, tr in trainers.items():
                part = {p: Clock() for p in PARTS}
                profile_step(tr, {p: Clock() for p in PARTS})  # warm-up
                for _ in range(args.profile_steps):
                    profile_step(tr, part)
                profile[name] = {p: {"wall_ms": 1000 * c.wall / args.profile_steps,
                                     "cpu_ms": 1000 * c.cpu / args.profile_steps} for p, c in part.items()}
    load_end = os.getloadavg()

    n = args.steps
    res = {"config": args.config, "overrides": list(args.set), "steps": n, "threads": torch.get_num_threads(),
           "torch": torch.__version__,
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
           "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in load_end],
           "paths": {}}
    print(f"one-shot training ({args.config}) on 1 thread, {n} steps per path in chunks of {args.chunk}; load average "
          f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    print(f"{'path':10s} {'steps wall s':>12s} {'steps CPU s':>12s} {'ms/step wall':>13s} {'ms/step CPU':>12s} "
          f"{'setup s':>8s} {'outputs s':>10s} {'300 steps + outputs (wall s)':>29s}")
    for name in paths:
        c, s, o = clocks[name], setup[name], outputs[name]
        per_wall, per_cpu = c.wall / n, c.cpu / n
        demo = 300 * per_wall + 6 * o.wall
        res["paths"][name] = {"steps_wall_s": c.wall, "steps_cpu_s": c.cpu, "ms_per_step_wall": 1000 * per_wall,
                              "ms_per_step_cpu": 1000 * per_cpu, "setup_wall_s": s.wall, "setup_cpu_s": s.cpu,
                              "outputs_wall_s": o.wall, "demo_300_steps_wall_s": demo,
                              "speedup_wall": clocks["reference"].wall / c.wall,
                              "speedup_cpu": clocks["reference"].cpu / c.cpu, "direction_rel_diff": rel[name]}
        print(f"{name:10s} {c.wall:12.1f} {c.cpu:12.1f} {1000 * per_wall:13.1f} {1000 * per_cpu:12.1f} "
              f"{s.wall:8.1f} {o.wall:10.2f} {demo:29.1f}")
    for name, r in res["paths"].items():
        if name != "reference":
            print(f"{name}: steps {r['speedup_wall']:.2f}x faster wall, {r['speedup_cpu']:.2f}x CPU than the "
                  f"reference; its trained direction differs from the reference's by {r['direction_rel_diff']:.2e} "
                  "relative (the bar: 1e-3)")
    if profile:
        res["profile_steps"] = args.profile_steps
        res["profile"] = profile
        print(f"\nprofile, ms per step (mean of {args.profile_steps}), CPU time (wall in brackets)")
        print(f"{'part':16s} " + " ".join(f"{name:>20s}" for name in profile))
        for p in PARTS:
            print(f"{p:16s} " + " ".join(f"{profile[name][p]['cpu_ms']:9.1f} ({profile[name][p]['wall_ms']:7.1f})"
                                           for name in profile))
        print(f"{'total':16s} " + " ".join(
            f"{sum(v['cpu_ms'] for v in profile[name].values()):9.1f} "
            f"({sum(v['wall_ms'] for v in profile[name].values()):7.1f})" for name in profile))
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
