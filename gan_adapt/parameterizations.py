"""What trains when a generator is adapted: the parameterizations of StyleDomain and its baselines.

Each parameterization owns a copy of the source generator. The baselines (Full, Mapping, SyntConv, Affine)
unfreeze a subset of the copy's own tensors; the others add small offsets through
``torch.nn.utils.parametrize``, so the generator code stays the one in :mod:`gan_adapt.networks`:

| name | what trains | config-f 1024 |
|---|---|---|
| ``full`` | every generator parameter | 30,370,060 |
| ``mapping`` | the mapping network | 2,101,248 |
| ``syntconv`` | conv and toRGB kernels, their biases, noise strengths | 23,598,476 |
| ``affine`` | every affine (modulation) layer, weight and bias | 4,662,144 |
| ``stylespace`` | an additive offset Δs on every style vector, toRGB included | 9,088 |
| ``direction`` | StyleDomain direction: the offset Δs on the 17 convs' style vectors only | 6,048 |
| ``dommod`` | HyperDomainNet domain modulation: conv weights × (1 + d) per input channel, after demod | 6,048 |
| ``affine_plus`` | Affine + additive (O, I, 1, 1) offsets of the block-64 convs and toRGB | 5,187,968 |
| ``affine_light_plus`` | rank-r (5) additive offsets U·V of every affine + the same block offsets | 637,824 |

The additive StyleSpace offset is an offset of the modulation bias: ``s = A w + b`` so ``s + Δs = A w + (b +
Δs)``. A domain modulation multiplies the *demodulated* weight (what HyperDomainNet's released code does), so
it is not a weight edit and has no merged plain generator. Weight offsets act on the stored weight before modulation and demodulation, as in StyleDomain's
DissimilarDomains code; they are shared across the 3x3 kernel.

Everything else the project knows about a parameterization (the file it exports, the papers' learning rates for
one-shot and few-shot training, what its count is made of) is in its :class:`ParameterizationSpec`, ``SPECS[name]``:
the app and the study take their learning rates from there, and :data:`DIRECTION_KINDS` (which runs export a
direction file rather than an adapter) is derived from it. The trainers' own config defaults are unchanged: a config
gives its learning rate explicitly.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapt_common.files import tensors_hash

from .networks import Generator


@dataclass(frozen=True)
class ParameterizationSpec:
    """What one parameterization is, in one place."""

    name: str
    trains: str  # what trains, in one line
    exports: str  # the file a trained one is written as: a direction of kind "s_delta" / "cin_mult", or "adapter"
    oneshot_lr: float | None  # Adam lr of one-shot (CLIP-guided) training, the papers' value; None: none recorded
    oneshot_betas: tuple[float, float]  # and its Adam betas
    fewshot_lr_g: float | None  # the generator's lr in few-shot (adversarial) training; None: none recorded
    count: str  # what the trainable count is made of
    count_1024: int  # the trainable count on config-f at 1024 px (StyleDomain's tables)
    fewshot_overrides: tuple[str, ...] = ()  # key=value overrides few-shot runs add to their recipe

    @property
    def exports_direction(self) -> bool:
        """Whether a trained one is a direction file (one vector per layer) rather than an adapter file."""
        return self.exports != "adapter"


_STYLEGAN2 = (0.0, 0.999)  # beta1 0 when the generator's own weights train, as in StyleGAN2's optimiser
_ADAM = (0.9, 0.999)  # Adam's defaults, for the offsets (the one-shot trainer's default betas)

#: name -> spec, in the order of StyleDomain's tables.
SPECS: dict[str, ParameterizationSpec] = {s.name: s for s in (
    ParameterizationSpec("full", "every generator parameter", "adapter", 0.002, _STYLEGAN2, 0.002,
                         "all of G: mapping, convs, toRGBs, affines, noise strengths, the constant input", 30_370_060),
    ParameterizationSpec("mapping", "the mapping network", "adapter", None, _ADAM, 0.002,
                         "n_mlp · (w_dim² + w_dim): the mapping network's layers", 2_101_248,
                         fewshot_overrides=("training.mapping_lr_mult=1.0",)),
    ParameterizationSpec("syntconv", "conv and toRGB kernels, their biases, noise strengths", "adapter", None, _ADAM,
                         None, "every synthesis parameter but the affines and the constant input", 23_598_476),
    ParameterizationSpec("affine", "every affine (modulation) layer, weight and bias", "adapter", 0.002, _STYLEGAN2,
                         0.02, "Σ over style layers of (w_dim + 1) · C_in", 4_662_144),
    ParameterizationSpec("stylespace", "an additive offset Δs on every style vector, toRGB included", "s_delta", 0.08,
                         _ADAM, 0.02, "Σ over style layers (convs and toRGBs) of C_in", 9_088),
    ParameterizationSpec("direction", "StyleDomain direction: the offset Δs on the convs' style vectors only",
                         "s_delta", 0.08, _ADAM, None, "Σ over the modulated 3x3 convs of C_in", 6_048),
    ParameterizationSpec("dommod", "HyperDomainNet domain modulation: conv weights × (1 + d) per input channel",
                         "cin_mult", 0.02, _ADAM, None, "Σ over the modulated 3x3 convs of C_in", 6_048),
    ParameterizationSpec("affine_plus", "Affine + additive (O, I, 1, 1) offsets of the block-64 convs and toRGB",
                         "adapter", 0.002, _STYLEGAN2, 0.02,
                         "affine + C_out · C_in of the block's two convs and its toRGB", 5_187_968),
    ParameterizationSpec("affine_light_plus", "rank-r (5) additive offsets U·V of every affine + the same block "
                         "offsets", "adapter", None, _ADAM, 0.008,
                         "Σ over style layers of r · (w_dim + C_in), + the block offsets of affine_plus", 637_824),
)}

PARAMETERIZATIONS = tuple(SPECS)
#: Parameterizations whose trained tensors are one vector per conv layer (the direction-file kinds).
DIRECTION_KINDS = {name: s.exports for name, s in SPECS.items() if s.exports_direction}


def spec(name: str) -> ParameterizationSpec:
    """The spec of a parameterization; an unknown name is refused with the list of known ones."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown parameterization {name!r}; choose one of {', '.join(SPECS)}") from None


class AddOffset(nn.Module):
    """x -> x + alpha * offset (offset broadcast over x)."""

    def __init__(self, shape: Iterable[int], device=None):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(*shape, device=device))
        self.alpha = 1.0

    def forward(self, x):
        return x + self.alpha * self.offset.to(x.dtype)


class DomainModulation(nn.Module):
    """HyperDomainNet's domain modulation of one conv: () -> 1 + alpha * d, d [C_in] zero-initialised; the conv
    multiplies its demodulated weight by it per input channel (``ModulatedConv2d.domain_modulation``)."""

    def __init__(self, channels: int, device=None):
        super().__init__()
        self.params_in = nn.Parameter(torch.zeros(channels, device=device))
        self.alpha = 1.0

    def forward(self):
        return 1 + self.alpha * self.params_in


class AddLowRank(nn.Module):
    """W [O, I] -> W + alpha * U @ V, U [O, r] zero-initialised, V [r, I] with unit-norm random rows."""

    def __init__(self, out_dim: int, in_dim: int, rank: int, device=None, generator: torch.Generator | None = None):
        super().__init__()
        self.u = nn.Parameter(torch.zeros(out_dim, rank, device=device))
        v = torch.randn(rank, in_dim, generator=generator)
        self.v = nn.Parameter((v / v.norm(dim=1, keepdim=True)).to(device))
        self.alpha = 1.0

    def forward(self, w):
        return w + self.alpha * (self.u @ self.v).to(w.dtype)


def _block_layers(g: Generator, resolution: int) -> list[str]:
    """Module paths of the two convs and the toRGB of the block at ``resolution`` (rosinality naming)."""
    k = int(math.log2(resolution)) - 3
    if k < 0 or k >= len(g.to_rgbs):
        raise ValueError(f"the generator ({g.size}px) has no block at {resolution}px; blocks: "
                         f"{[2 ** (i + 3) for i in range(len(g.to_rgbs))]}")
    return [f"convs.{2 * k}", f"convs.{2 * k + 1}", f"to_rgbs.{k}"]


class Parameterization(nn.Module):
    """A trainable view of a frozen source generator. ``self.generator`` is the adapted generator (use it
    like any :class:`Generator`); :meth:`trainable_parameters` are all that get gradients."""

    def __init__(self, name: str, source: Generator, *, block: int = 64, rank: int = 5, seed: int = 0):
        super().__init__()
        self.spec = spec(name)
        self.name = name
        self.block, self.rank = block, rank
        on_meta = any(t.is_meta for t in source.parameters())
        self.source_hash = None if on_meta else tensors_hash(source.state_dict())  # names the base in exports
        g = copy.deepcopy(source)
        g.requires_grad_(False)
        g.latent_avg_known = source.latent_avg_known
        self.generator = g
        self._unfrozen: list[str] = []  # names of the generator's own tensors that train (baselines)
        device = next(g.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        layers = g.style_layers()

        if name == "full":
            self._unfrozen = [n for n, _ in g.named_parameters()]
        elif name == "mapping":
            self._unfrozen = [n for n, _ in g.named_parameters() if n.startswith("style.")]
        elif name == "syntconv":
            self._unfrozen = [n for n, _ in g.named_parameters()
                              if not n.startswith("style.") and ".modulation." not in n and n != "input.input"]
        elif name in ("affine", "affine_plus"):
            self._unfrozen = [n for n, _ in g.named_parameters() if ".modulation." in n]
        for n in self._unfrozen:
            g.get_parameter(n).requires_grad_(True)

        if name in ("stylespace", "direction"):
            for layer in layers:
                if name == "direction" and layer.kind != "conv":
                    continue
                mod = g.get_submodule(layer.name).conv.modulation
                parametrize.register_parametrization(mod, "bias", AddOffset((layer.channels,), device))
        if name == "dommod":
            for layer in layers:
                if layer.kind == "conv":
                    g.get_submodule(layer.name).conv.domain_modulation = DomainModulation(layer.channels, device)
        if name == "affine_light_plus":
            for layer in layers:
                mod = g.get_submodule(layer.name).conv.modulation
                out_dim, in_dim = mod.weight.shape
                parametrize.register_parametrization(mod, "weight", AddLowRank(out_dim, in_dim, rank, device, gen))
        if name in ("affine_plus", "affine_light_plus"):
            for path in _block_layers(g, block):
                conv = g.get_submodule(path).conv
                _, out_ch, in_ch, _, _ = conv.weight.shape
                parametrize.register_parametrization(conv, "weight", AddOffset((1, out_ch, in_ch, 1, 1), device))
        for p in self._offset_parameters():
            p.requires_grad_(True)

    # -- what trains -----------------------------------------------------------------------------------------

    def _offset_modules(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.generator.named_modules()
                if isinstance(m, (AddOffset, AddLowRank, DomainModulation))]

    def _offset_parameters(self) -> list[nn.Parameter]:
        return [p for _, m in self._offset_modules() for p in m.parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.generator.get_parameter(n) for n in self._unfrozen] + self._offset_parameters()

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def describe(self) -> str:
        return f"{self.name}: {self.num_trainable():,} trainable parameters"

    # -- strength, export, merge ---------------------------------------------------------------------------

    def set_strength(self, alpha: float) -> None:
        """Scale every offset (StyleDomain's direction strength α); baselines have none."""
        for _, m in self._offset_modules():
            m.alpha = float(alpha)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what trains: the unfrozen tensors by their generator names and the offsets by their paths."""
        out = {n: self.generator.get_parameter(n).detach().clone() for n in self._unfrozen}
        for path, m in self._offset_modules():
            for pn, p in m.named_parameters():
                out[f"{path}.{pn}"] = p.detach().clone()
        return out

    def load_trained_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        expected = {n: t.shape for n, t in self.trained_state_dict().items()}
        if set(sd) != set(expected):
            missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
            raise ValueError(f"these trained parameters do not fit a {self.name} parameterization of this "
                             f"generator: missing {missing[:4]}, unexpected {extra[:4]}")
        with torch.no_grad():
            for n, t in sd.items():
                if t.shape != expected[n]:
                    raise ValueError(f"{n}: shape {tuple(t.shape)}, expected {tuple(expected[n])}")
                target = self.generator.get_parameter(n)
                target.copy_(t)

    def merged_generator(self) -> Generator:
        """A plain :class:`Generator` with the offsets baked into its weights (at the current strength).

        Built fresh and filled with the parametrized values: removing parametrizations from a deep copy would
        break this one too (parametrize injects a class that the copy shares).
        """
        if self.name == "dommod":
            raise ValueError("a domain modulation multiplies the demodulated weights, so it cannot be merged into a "
                             "plain generator; save it as a direction file (gan_adapt.directions) instead")
        g = Generator(config=self.generator.config).to(next(self.generator.parameters()).device)
        sd = {}
        with torch.no_grad():
            for name in g.state_dict():
                path, _, attr = name.rpartition(".")
                module = self.generator.get_submodule(path) if path else self.generator
                sd[name] = getattr(module, attr).detach().clone()
        g.load_state_dict(sd)
        g.latent_avg.copy_(self.generator.latent_avg)
        g.latent_avg_known = self.generator.latent_avg_known
        return g.requires_grad_(False).eval()
