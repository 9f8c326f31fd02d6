"""Where the optimised CPU generator spends its time: conv, upfirdn, activation, modulation, other.

    python -m benchmarks.generator_profile [--size 256] [--cells 1:fwd 4:fwd+bwd] [--repeats 3] [--impl auto]

Config-f at ``--size`` with the random weights of :mod:`benchmarks.generator_speed` (``_build``), the same z and
the stored noise. For each cell (batch, pass) the step runs once under ``torch.profiler`` with labelled regions
(set up here by wrapping functions; the network code is not changed):

- **conv**: the modulated layers' own convolutions (``F.conv2d`` / ``F.conv_transpose2d`` called outside a FIR
  filter), forward and their backward;
- **upfirdn**: the FIR filters (``upfirdn2d``: the blur after the transposed conv and the ToRGB skip upsampling);
- **modulation**: the affine layers A(w), the style multiply (of the weights, or of the activations for
  batch > 1), the demodulation coefficients and their application where it is a separate op;
- **activation**: the rest of ``StyledConv`` (noise, bias, gain, leaky ReLU, and on the optimised CPU path the
  demodulation that is fused into the same ``addcmul``);
- **other**: the mapping network, the ToRGB bias and skip additions, the loss and everything outside.

Each op's self time is given to the innermost label around it; a backward op gets the label of the forward op
that created its autograd node (matched by the profiler's sequence number). The profiler's total is its own
(it adds overhead); the table reports the shares and, timed without the profiler in alternating turns, the step
and its **conv-only time**: the same convolution calls (recorded shapes, strides, groups, and for fwd+bwd their
backward with the same ``requires_grad``) run alone on random tensors.
Results: ``benchmarks/results/generator_profile.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys

import torch
import torch.nn.functional as F

from benchmarks import write_json

CATEGORIES = ("conv", "upfirdn", "activation", "modulation", "other")
PREFIX = "gp::"


class Labeller:
    """Wraps the generator's pieces in ``record_function`` regions and records the convolutions' calls."""

    def __init__(self):
        self.stack: list[str] = []
        self.convs: list[dict] = []
        self.recording = False
        self._undo: list = []

    @contextlib.contextmanager
    def region(self, name):
        self.stack.append(name)
        try:
            with torch.profiler.record_function(PREFIX + name):
                yield
        finally:
            self.stack.pop()

    def wrap(self, owner, attr, label):
        orig = getattr(owner, attr)

        def wrapped(*a, **k):
            with self.region(label):
                return orig(*a, **k)
        setattr(owner, attr, wrapped)
        self._undo.append((owner, attr, orig))

    def wrap_conv(self, attr):
        orig = getattr(F, attr)
        me = self

        def conv(x, w, bias=None, stride=1, padding=0, *rest, **k):
            if me.stack and me.stack[-1] == "upfirdn":
                return orig(x, w, bias, stride, padding, *rest, **k)
            if me.recording:
                me.convs.append({"fn": attr, "x": list(x.shape), "w": list(w.shape), "stride": stride,
                                 "padding": padding, "rest": list(rest), "kw": dict(k),
                                 "x_grad": x.requires_grad, "w_grad": w.requires_grad})
            with me.region("conv"):
                return orig(x, w, bias, stride, padding, *rest, **k)
        setattr(F, attr, conv)
        self._undo.append((F, attr, orig))

    def install(self, g):
        from gan_adapt import networks
        self.wrap_conv("conv2d")
        self.wrap_conv("conv_transpose2d")
        self.wrap(networks, "upfirdn2d", "upfirdn")
        for cls, attrs, label in ((networks.ModulatedConv2d, ("forward", "forward_parts"), "modulation"),
                                  (networks.StyledConv, ("forward",), "activation"),
                                  (networks.ToRGB, ("forward",), "other")):
            for attr in attrs:
                self.wrap(cls, attr, label)
        for name, m in g.named_modules():
            if name.endswith("conv.modulation"):
                self.wrap(m, "forward", "modulation")
        self.wrap(g.style, "forward", "mapping")

    def uninstall(self):
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def attribute(events) -> dict[str, float]:
    """Self CPU time (ms) per label: forward ops by their innermost region, backward ops by their forward op."""
    def label_of(ev):
        while ev is not None:
            if ev.name.startswith(PREFIX):
                return ev.name[len(PREFIX):]
            ev = ev.cpu_parent
        return None

    seq_label = {}
    for ev in events:
        if ev.sequence_nr >= 0 and not ev.name.startswith("autograd::") and ev.cpu_parent is not None:
            lab = label_of(ev)
            if lab is not None:
                seq_label.setdefault(ev.sequence_nr, lab)
    out: dict[str, float] = {}
    for ev in events:
        if ev.name.startswith(PREFIX):
            continue
        lab, e = None, ev
        while e is not None and lab is None:
            if e.name.startswith(PREFIX):
                lab = e.name[len(PREFIX):]
            elif e.name.startswith("autograd::engine::evaluate_function:"):
                lab = seq_label.get(e.sequence_nr, "other")
            e = e.cpu_parent
        lab = lab or "other"
        lab = "other" if lab == "mapping" else lab
        out[lab] = out.get(lab, 0.0) + ev.self_cpu_time_total / 1000
    return out


def conv_only_step(convs: list[dict], mode: str):
    gen = torch.Generator().manual_seed(0)
    calls = []
    for c in convs:
        x = torch.randn(c["x"], generator=gen).requires_grad_(mode != "fwd" and c["x_grad"])
        w = torch.randn(c["w"], generator=gen).requires_grad_(mode != "fwd" and c["w_grad"])
        calls.append((getattr(F, c["fn"]), x, w, c))

    def step():
        if mode == "fwd":
            with torch.no_grad():
                for fn, x, w, c in calls:
                    fn(x, w, None, c["stride"], c["padding"], *c["rest"], **c["kw"])
            return
        for fn, x, w, c in calls:
            y = fn(x, w, None, c["stride"], c["padding"], *c["rest"], **c["kw"])
            if y.requires_grad:
                y.backward(torch.ones_like(y))
    return step


def profile_cell(size: int, batch: int, mode: str, impl: str, repeats: int) -> dict:
    from benchmarks.generator_speed import _build, _step, alternating_times
    g = _build(size).set_impl(impl)
    z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(123))
    step = _step(g, z, mode)
    lab = Labeller()
    lab.install(g)
    try:
        step()  # warm-up
        lab.recording = True
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        lab.recording = False
    finally:
        lab.uninstall()
    shares = attribute(prof.events())
    total_prof = sum(shares.values())
    conv_step = conv_only_step(lab.convs, mode)
    step()
    conv_step()
    times, med = alternating_times({"step": step, "conv_only": conv_step}, repeats)
    return {"size": size, "batch": batch, "mode": mode, "impl": impl, "n_convs": len(lab.convs),
            "profiled_ms": {k: shares.get(k, 0.0) for k in CATEGORIES}, "profiled_total_ms": total_prof,
            "share": {k: shares.get(k, 0.0) / total_prof for k in CATEGORIES},
            "step_median_s": med["step"], "conv_only_median_s": med["conv_only"],
            "step_over_conv_only": med["step"] / med["conv_only"], "times_s": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cells", nargs="+", default=["1:fwd", "1:fwd+bwd", "4:fwd", "4:fwd+bwd"],
                    help="batch:pass pairs")
    ap.add_argument("--impl", default="auto", choices=["auto", "ref"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default="benchmarks/results/generator_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rows = []
    print(f"generator_profile: config-f {args.size} px, impl={args.impl}, {args.threads} threads, load {load_start}")
    print(f"{'batch':>5} {'pass':>8} | " + " ".join(f"{c:>10}" for c in CATEGORIES)
          + f" | {'step s':>7} {'conv s':>7} {'ratio':>6}")
    for cell in args.cells:
        batch, mode = cell.split(":")
        r = profile_cell(args.size, int(batch), mode, args.impl, args.repeats)
        rows.append(r)
        print(f"{batch:>5} {mode:>8} | " + " ".join(f"{100 * r['share'][c]:>9.1f}%" for c in CATEGORIES)
              + f" | {r['step_median_s']:>7.3f} {r['conv_only_median_s']:>7.3f} {r['step_over_conv_only']:>5.2f}x",
              flush=True)
    write_json(args.json, {"threads": args.threads, "machine": platform.machine(),
                           "python": platform.python_version(), "torch": torch.__version__, "repeats": args.repeats,
                           "load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
