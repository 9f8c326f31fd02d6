"""StyleGAN2 generator and discriminator with rosinality's state-dict names.

The module tree mirrors rosinality/stylegan2-pytorch (the layout StyleGAN-NADA, JoJoGAN, StyleDomain and
HyperDomainNet checkpoints use), so a rosinality ``g_ema`` loads with ``strict=True``. The code is our own.

Two execution paths share the same parameters and give the same images (within 1e-4 in float32):

- ``impl="ref"``: the textbook path: grouped modulated convolution over the batch and the reference ops.
- ``impl="auto"`` (default): the optimised path: on the CPU a batch > 1 modulates activations instead of
  weights (one shared convolution for the whole batch instead of a grouped one, which oneDNN runs poorly),
  and so does a single sample in the layers where its activations are fewer than the weights (the
  equalised-lr scale goes into the per-channel multiplier, so the stored weight is convolved as it is),
  FIR filters run as depthwise convolutions, bias/activation/noise update in place where autograd allows,
  and a batch rendered without gradients keeps its activations channels-last; on CUDA the compiled kernels of
  :mod:`ops`.

StyleSpace: every modulated layer turns its w into a style vector ``s = A(w)`` (the affine "modulation"
layer). :meth:`Generator.styles_from_latent` returns these vectors and :meth:`Generator.synthesis` renders
from them, which is where StyleDomain directions and HyperDomainNet modulations act.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import ops
from ops._impl import IMPLS
from ops.upfirdn2d import setup_filter, upfirdn2d

DEFAULT_BLUR = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------------------
# Configuration


def channel_table(size: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature maps per resolution: ``min(channel_base // res, channel_max)`` (NVIDIA's rule).

    rosinality's ``channel_multiplier`` m is ``channel_base = 16384 * m`` with ``channel_max = 512``.
    """
    return {2 ** i: max(1, min(channel_base // 2 ** i, channel_max)) for i in range(2, int(math.log2(size)) + 1)}


@dataclass
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator (also what the native checkpoint format stores)."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    lr_mlp: float = 0.01
    blur_kernel: list[int] = field(default_factory=lambda: list(DEFAULT_BLUR))
    conv_clamp: float | None = None  # NVIDIA networks clip activations; rosinality's never do

    def __post_init__(self):
        if self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {self.size}")
        for name in ("style_dim", "n_mlp", "channel_base", "channel_max"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        self.blur_kernel = [int(k) for k in self.blur_kernel]

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def channels(self) -> dict[int, int]:
        return channel_table(self.size, self.channel_base, self.channel_max)


# ----------------------------------------------------------------------------------------------------------
# Layers


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate: weights stored as N(0, 1/lr_mul), scaled at run time."""

    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation  # None or "fused_lrelu"
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.impl = "auto"

    def forward(self, x):
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return ops.bias_act(F.linear(x, self.weight * self.scale), bias, "lrelu", impl=self.impl)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


class EqualConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU (slope 0.2) + gain sqrt(2), with an optional NVIDIA-style clamp."""

    def __init__(self, channels, bias=True, clamp=None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.clamp = clamp
        self.impl = "auto"

    def forward(self, x):
        return ops.bias_act(x, self.bias, "lrelu", clamp=self.clamp, impl=self.impl)


class Blur(nn.Module):
    """FIR low-pass filter [1,3,3,1] (x upsample_factor**2 when it follows a transposed conv)."""

    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        self.register_buffer("kernel", setup_filter(kernel, gain=upsample_factor ** 2))
        self.pad = tuple(pad)
        self.impl = "auto"

    def forward(self, x):
        p0, p1 = self.pad
        return upfirdn2d(x, self.kernel, pad=(p0, p1, p0, p1), impl=self.impl)


class Upsample(nn.Module):
    def __init__(self, kernel, factor=2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", setup_filter(kernel, gain=factor ** 2))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.impl = "auto"

    def forward(self, x):
        p0, p1 = self.pad
        return upfirdn2d(x, self.kernel, up=self.factor, pad=(p0, p1, p0, p1), impl=self.impl)


class _ChannelScale(torch.autograd.Function):
    """``x * s[:, :, None, None] (+ b[None, :, None, None])`` for x [B, C, H, W], s [B, C], b [C] (CPU path).

    Autograd's own backward of the broadcast multiply forms the product ``grad * x`` in full and then sums it
    over H, W; here the gradient of ``s`` is one batched dot product per (b, c) (a matmul, no temporary), about
    3x faster on a 2-core CPU. The backward is made of differentiable ops, so double backward works."""

    @staticmethod
    def forward(ctx, x, s, b):
        ctx.save_for_backward(x, s)
        ctx.has_bias = b is not None
        sv = s.reshape(s.shape[0], s.shape[1], 1, 1)
        return x * sv if b is None else torch.addcmul(b.reshape(1, -1, 1, 1), x, sv)

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        batch, channels = s.shape
        gx = gs = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad * s.reshape(batch, channels, 1, 1)
        if ctx.needs_input_grad[1]:
            if x.is_contiguous() and grad.is_contiguous():
                gs = (grad.reshape(batch, channels, 1, -1) @ x.reshape(batch, channels, -1, 1)).reshape(batch, channels)
            else:  # channels-last: the matmul would copy both to NCHW first, which costs more than the product
                gs = (grad * x).sum((2, 3))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gs, gb


def channel_scale(x: torch.Tensor, s: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``x * s[:, :, None, None] (+ b)`` with a cheaper backward (see :class:`_ChannelScale`)."""
    if s.shape[0] != x.shape[0]:
        s = s.expand(x.shape[0], -1)
    return _ChannelScale.apply(x, s, b)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style vector s, then demodulated.

    ``forward(x, s, weight_mult=None)`` takes the style s itself (not w): ``s = self.modulation(w)``.
    ``weight_mult`` ([B, C_in] or [C_in]) multiplies the demodulated weight per input channel, which is
    HyperDomainNet's domain modulation.
    """

    def __init__(self, in_ch, out_ch, kernel_size, style_dim, demodulate=True, upsample=False,
                 downsample=False, blur_kernel=DEFAULT_BLUR):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample, self.downsample, self.demodulate = upsample, downsample, demodulate
        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)
        # Optional module returning a [C_in] or [B, C_in] multiplier of the demodulated weight (a trained
        # HyperDomainNet domain modulation; see gan_adapt.parameterizations). None in a plain generator.
        self.domain_modulation: nn.Module | None = None
        self.impl = "auto"

    def extra_repr(self):
        return (f"{self.in_channel}, {self.out_channel}, k={self.kernel_size}, up={self.upsample}, "
                f"down={self.downsample}, demod={self.demodulate}")

    def forward(self, x, s, weight_mult=None):
        out, demod = self.forward_parts(x, s, weight_mult)
        return out if demod is None else out * demod.reshape(out.shape[0], self.out_channel, 1, 1)

    def forward_parts(self, x, s, weight_mult=None):
        """(output, demod): demod [B, O] is still to be multiplied into the output, or None when it has
        already been folded into the weights. Lets :class:`StyledConv` fuse it with what follows."""
        if self.domain_modulation is not None:
            mult = self.domain_modulation()
            weight_mult = mult if weight_mult is None else weight_mult * mult
        if self.impl == "ref" or x.is_cuda or (x.shape[0] == 1 and weight_mult is None
                                               and x[0].numel() >= self.weight.numel()):
            # one sample whose activations outnumber the weights: modulating the weights is cheaper
            return self._forward_fused(x, s, weight_mult), None
        return self._forward_activations(x, s, weight_mult)

    def _forward_fused(self, x, s, weight_mult):
        """Textbook path: per-sample weights, one grouped convolution over the batch."""
        batch, in_ch = x.shape[:2]
        if self.impl != "ref" and batch == 1:
            weight = self._modulated_weight_single(s, weight_mult)
        else:
            weight = self.scale * self.weight * s.view(batch, 1, in_ch, 1, 1)
            if self.demodulate:
                demod = torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            if weight_mult is not None:
                weight = weight * weight_mult.reshape(-1, 1, in_ch, 1, 1)
        k = self.kernel_size

        # The batch as groups of one grouped convolution. One sample is left as it is: a reshape would rewrite a
        # channels-last tensor's batch stride, after which the convolutions no longer treat it as channels-last.
        def as_groups(t):
            return t.reshape(1, batch * t.shape[1], t.shape[2], t.shape[3]) if batch > 1 else t

        def from_groups(t):
            return t.reshape(batch, self.out_channel, t.shape[2], t.shape[3]) if batch > 1 else t

        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, self.out_channel, k, k)
            out = self.blur(from_groups(F.conv_transpose2d(as_groups(x), weight, padding=0, stride=2, groups=batch)))
        elif self.downsample:
            out = from_groups(F.conv2d(as_groups(self.blur(x)), weight.reshape(batch * self.out_channel, in_ch, k, k),
                                       padding=0, stride=2, groups=batch))
        else:
            out = from_groups(F.conv2d(as_groups(x), weight.reshape(batch * self.out_channel, in_ch, k, k),
                                       padding=self.padding, groups=batch))
        return out

    def _modulated_weight_single(self, s, weight_mult):
        """One sample's modulated (and demodulated) weight [1, O, I, k, k] in two passes over the weights:
        the per-(o, i) factor scale * s_i * demod_o * mult_i is formed first, on the small [O, I] matrix."""
        w = self.weight[0]
        factor = s.reshape(1, -1) * self.scale  # [1, I]
        if self.demodulate:
            # sum_{i,k,k} (scale W s_i)^2 = sum_i (scale s_i)^2 sum_{k,k} W^2
            demod = torch.rsqrt(factor.square() @ w.square().sum([2, 3]).t() + 1e-8)  # [1, O]
            factor = factor * demod.reshape(-1, 1)  # [O, I]
        if weight_mult is not None:
            factor = factor * weight_mult.reshape(1, -1)
        return (w * factor.reshape(factor.shape[0], -1, 1, 1))[None]

    def _forward_activations(self, x, s, weight_mult):
        """CPU batch path: scale the input by s, one shared conv for the whole batch, scale by demod.

        Mathematically identical to the fused path: conv(x * s, W) * d == conv(x, W * s * d) for per-sample
        s (input channels) and d (output channels).
        """
        w = self.weight[0]  # [O, I, k, k]; the equalised-lr scale goes into the per-channel multiplier
        s = s * self.scale
        mult = s if weight_mult is None else s * weight_mult.reshape(-1, self.in_channel)
        x = channel_scale(x, mult.reshape(-1, self.in_channel))
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1).contiguous(), stride=2)
            out = self.blur(out)
        elif self.downsample:
            out = F.conv2d(self.blur(x), w, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if not self.demodulate:
            return out, None
        # sum_{i,k,k} (W s_i)^2 = sum_i s_i^2 sum_{k,k} W^2; the domain multiplier comes after demodulation
        return out, torch.rsqrt(s.square() @ w.square().sum([2, 3]).t() + 1e-8)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise=None):
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch):
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, style_dim, upsample=False, blur_kernel=DEFAULT_BLUR,
                 demodulate=True, clamp=None):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch, clamp=clamp)

    def forward(self, x, s, noise=None, weight_mult=None):
        if self.conv.impl == "ref" or x.is_cuda:
            return self.activate(self.noise(self.conv(x, s, weight_mult), noise))
        return self._forward_fused_epilogue(x, s, noise, weight_mult)

    def _forward_fused_epilogue(self, x, s, noise, weight_mult):
        """CPU path: demodulation, noise, bias, gain and leaky ReLU in three passes over the activations
        instead of five, with no extra full-size temporary. Uses lrelu(a) * g == lrelu(a * g) for g > 0."""
        out, demod = self.conv.forward_parts(x, s, weight_mult)
        batch, channels, h, w = out.shape
        gain = math.sqrt(2)
        if noise is None:
            noise = out.new_empty(batch, 1, h, w).normal_()
        bias = self.activate.bias
        bias = out.new_zeros(1, channels, 1, 1) if bias is None else bias.reshape(1, -1, 1, 1) * gain
        if demod is None:
            # pass 1, in place: the convolution's backward does not need its output, and a fresh full-size
            # tensor costs more than the arithmetic (page faults: 12 against 1.4 ms at 128 x 256 x 256)
            y = out.mul_(gain).add_(bias)
        else:
            y = channel_scale(out, (demod * gain).reshape(batch, -1), bias.reshape(-1))
        y = y.add_(self.noise.weight * gain * noise)  # pass 2: noise (broadcast over channels)
        y = F.leaky_relu(y, 0.2, inplace=True)  # in-place lrelu's backward reads its output: allowed
        return y if self.activate.clamp is None else y.clamp(-self.activate.clamp, self.activate.clamp)


class ToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True, blur_kernel=DEFAULT_BLUR, clamp=None):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x, s, skip=None, weight_mult=None):
        out = self.conv(x, s, weight_mult) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------------------------
# Generator


@dataclass(frozen=True)
class StyleLayer:
    """One modulated layer of the StyleSpace, in generation order."""

    name: str  # rosinality module path, e.g. "convs.3" or "to_rgbs.1"
    kind: str  # "conv" or "torgb"
    w_index: int  # which row of W+ feeds it
    channels: int  # its style size (= input channels of the conv)
    resolution: int


#: A style edit: (layer, s) -> s', applied to every style vector before synthesis.
StyleEdit = Callable[[StyleLayer, torch.Tensor], torch.Tensor]


class Generator(nn.Module):
    """StyleGAN2 generator (config-f skip architecture) for any power-of-two size.

    ``Generator(size, style_dim, n_mlp, channel_multiplier=2)`` matches rosinality's signature; pass
    ``channel_base``/``channel_max`` for other channel tables, or build from a :class:`GeneratorConfig`.
    """

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 blur_kernel: Sequence[int] = DEFAULT_BLUR, lr_mlp: float = 0.01, *, channel_base: int | None = None,
                 channel_max: int = 512, conv_clamp: float | None = None, config: GeneratorConfig | None = None):
        super().__init__()
        if config is None:
            config = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp,
                                     channel_base=channel_base or int(16384 * channel_multiplier),
                                     channel_max=channel_max, lr_mlp=lr_mlp, blur_kernel=list(blur_kernel),
                                     conv_clamp=conv_clamp)
        self.config = config
        size, style_dim, blur = config.size, config.style_dim, config.blur_kernel
        self.size, self.style_dim = size, style_dim
        self.channels = ch = config.channels
        clamp = config.conv_clamp

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=config.lr_mlp, activation="fused_lrelu")
            for _ in range(config.n_mlp)])

        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur, clamp=clamp)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, clamp=clamp)

        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur, clamp=clamp))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur, clamp=clamp))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur, clamp=clamp))
            in_ch = out_ch
        # Truncation centre: not part of rosinality's g_ema state dict, so not persistent. Checkpoint loaders
        # set it from the file (rosinality `latent_avg`, NVIDIA `w_avg`) or compute it with mean_latent.
        self.register_buffer("latent_avg", torch.zeros(style_dim), persistent=False)
        self.latent_avg_known = False
        self._style_layers = self._build_style_layers()

    # -- implementation switch -----------------------------------------------------------------------------

    def set_impl(self, impl: str) -> "Generator":
        """``"ref"`` for the textbook path, ``"auto"`` for the optimised one (see the module docstring)."""
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl
        return self

    # -- the StyleSpace layout ------------------------------------------------------------------------------

    def style_layers(self) -> list[StyleLayer]:
        """All modulated layers in generation order (S-space order: conv1, to_rgb1, then per block
        convs[2k], convs[2k+1], to_rgbs[k])."""
        return list(self._style_layers)

    def _build_style_layers(self) -> list[StyleLayer]:
        layers = [StyleLayer("conv1", "conv", 0, self.conv1.conv.in_channel, 4),
                  StyleLayer("to_rgb1", "torgb", 1, self.to_rgb1.conv.in_channel, 4)]
        for k in range(len(self.to_rgbs)):
            res = 2 ** (k + 3)
            layers.append(StyleLayer(f"convs.{2 * k}", "conv", 1 + 2 * k, self.convs[2 * k].conv.in_channel, res))
            layers.append(StyleLayer(f"convs.{2 * k + 1}", "conv", 2 + 2 * k,
                                     self.convs[2 * k + 1].conv.in_channel, res))
            layers.append(StyleLayer(f"to_rgbs.{k}", "torgb", 3 + 2 * k, self.to_rgbs[k].conv.in_channel, res))
        return layers

    def style_dims(self, include_torgb: bool = True) -> int:
        return sum(layer.channels for layer in self.style_layers() if include_torgb or layer.kind == "conv")

    # -- mapping -------------------------------------------------------------------------------------------

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim] through the mapping network."""
        return self.style(z)

    mapping = get_latent

    @torch.no_grad()
    def mean_latent(self, n_latent: int = 4096, seed: int | None = None) -> torch.Tensor:
        """Mean of w over ``n_latent`` random z (shape [1, style_dim])."""
        gen = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(n_latent, self.style_dim, generator=gen).to(self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def truncate(self, w: torch.Tensor, truncation: float, truncation_latent: torch.Tensor | None = None):
        if truncation == 1:
            return w
        if truncation_latent is None:
            if not self.latent_avg_known:
                raise ValueError("truncation needs the average latent: this generator has none (load one with "
                                 "latent_avg, or call G.set_latent_avg(G.mean_latent(4096)))")
            truncation_latent = self.latent_avg
        return truncation_latent + truncation * (w - truncation_latent)

    def set_latent_avg(self, w_avg: torch.Tensor) -> None:
        self.latent_avg.copy_(w_avg.reshape(-1).to(self.latent_avg))
        self.latent_avg_known = True

    def to_wplus(self, w: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, n_latent, D]; W+ passes through (checked)."""
        if w.ndim == 2:
            return w.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w.ndim != 3 or w.shape[1] != self.n_latent:
            raise ValueError(f"expected w [B, {self.style_dim}] or w+ [B, {self.n_latent}, {self.style_dim}], "
                             f"got {tuple(w.shape)}")
        return w

    # -- StyleSpace ----------------------------------------------------------------------------------------

    def styles_from_latent(self, wplus: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer style vectors s (list in :meth:`style_layers` order) from w [B, D] or w+ [B, L, D]."""
        wplus = self.to_wplus(wplus)
        return [self.get_submodule(layer.name).conv.modulation(wplus[:, layer.w_index])
                for layer in self._style_layers]

    def make_noise(self, mode: str = "const", batch: int = 1, device=None) -> list[torch.Tensor | None]:
        """Per-layer noise: ``const`` (the stored buffers), ``random`` (fresh each call) or ``none`` (zero)."""
        if mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if mode == "random":
            return [None] * self.num_layers
        if mode == "none":
            return [torch.zeros_like(getattr(self.noises, f"noise_{i}")) for i in range(self.num_layers)]
        raise ValueError(f"unknown noise mode {mode!r}; expected 'const', 'random' or 'none'")

    def synthesis(self, styles: Sequence[torch.Tensor], noise: Sequence[torch.Tensor | None] | str = "const",
                  weight_mults: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Render from per-layer style vectors ``styles`` (as from :meth:`styles_from_latent`).

        ``weight_mults``: optional per-layer multipliers of the demodulated conv weights (same order and
        sizes as ``styles``; None entries leave a layer alone).
        """
        layers = self._style_layers
        if len(styles) != len(layers):
            raise ValueError(f"expected {len(layers)} style vectors, got {len(styles)}")
        for layer, s in zip(layers, styles):
            if s.ndim != 2 or s.shape[1] != layer.channels:
                raise ValueError(f"style for {layer.name} must be [B, {layer.channels}], got {tuple(s.shape)}")
        if isinstance(noise, str):
            noise = self.make_noise(noise)
        mults = weight_mults if weight_mults is not None else [None] * len(layers)
        batch = styles[0].shape[0]
        out = self.input(batch)
        # CPU inference on the optimised path: channels-last activations from the first layer on, which oneDNN
        # convolves without reordering to its blocked layout and back (config-f 256 forward: batch 4 1.6x, batch 1
        # 1.3x less time; the same images within 1e-5). Not with gradients: there the backward gains nothing.
        channels_last = (not out.is_cuda and not torch.is_grad_enabled() and self.conv1.conv.impl != "ref")
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        out = self.conv1(out, styles[0], noise[0], mults[0])
        skip = self.to_rgb1(out, styles[1], None, mults[1])
        i = 2
        for k in range(len(self.to_rgbs)):
            out = self.convs[2 * k](out, styles[i], noise[1 + 2 * k], mults[i])
            out = self.convs[2 * k + 1](out, styles[i + 1], noise[2 + 2 * k], mults[i + 1])
            skip = self.to_rgbs[k](out, styles[i + 2], skip, mults[i + 2])
            i += 3
        return skip.contiguous() if channels_last else skip

    # -- the rosinality-compatible entry point ------------------------------------------------------------

    def forward(self, styles, return_latents=False, inject_index=None, truncation=1, truncation_latent=None,
                input_is_latent=False, noise=None, randomize_noise=True):
        """rosinality's signature: ``styles`` is a list of one (or two, for style mixing) z or w tensors;
        w+ tensors [B, n_latent, D] are accepted with ``input_is_latent=True``."""
        if torch.is_tensor(styles):
            styles = [styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = self.make_noise("random" if randomize_noise else "const")
        if truncation != 1:
            styles = [self.truncate(s, truncation, truncation_latent) for s in styles]
        if len(styles) < 2:
            latent = self.to_wplus(styles[0])
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).expand(-1, inject_index, -1)
            b = styles[1] if styles[1].ndim == 3 else styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index,
                                                                                     -1)
            latent = torch.cat([a[:, :inject_index], b[:, :self.n_latent - inject_index]], 1)
        image = self.synthesis(self.styles_from_latent(latent), noise)
        return (image, latent) if return_latents else (image, None)

    def generate(self, z: torch.Tensor | None = None, *, w: torch.Tensor | None = None, truncation: float = 1.0,
                 noise_mode: str = "const", style_edit: StyleEdit | None = None,
                 weight_mults: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Image from z [B, D], w [B, D] or w+ [B, L, D], with truncation towards ``latent_avg``.

        ``style_edit(layer, s) -> s'`` changes the style vectors before synthesis (StyleSpace edits, StyleDomain
        directions); ``weight_mults`` multiply the demodulated weights per layer (domain modulations).
        """
        if (z is None) == (w is None):
            raise ValueError("pass exactly one of z or w")
        if w is None:
            w = self.get_latent(z)
        w = self.truncate(w, truncation)
        styles = self.styles_from_latent(w)
        if style_edit is not None:
            styles = [style_edit(layer, s) for layer, s in zip(self._style_layers, styles)]
        return self.synthesis(styles, noise_mode, weight_mults)


# ----------------------------------------------------------------------------------------------------------
# Discriminator


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU]; indices match rosinality's (``0.weight``, ``1.bias`` ...)."""

    def __init__(self, in_ch, out_ch, kernel_size, downsample=False, blur_kernel=DEFAULT_BLUR, bias=True,
                 activate=True):
        layers = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, blur_kernel=DEFAULT_BLUR):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


@dataclass
class DiscriminatorConfig:
    size: int = 1024
    channel_base: int = 32768
    channel_max: int = 512
    blur_kernel: list[int] = field(default_factory=lambda: list(DEFAULT_BLUR))
    stddev_group: int = 4
    stddev_feat: int = 1

    def __post_init__(self):
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")

    def to_dict(self) -> dict:
        return asdict(self)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with minibatch standard deviation (rosinality layout)."""

    def __init__(self, size: int = 1024, channel_multiplier: float = 2, blur_kernel: Sequence[int] = DEFAULT_BLUR,
                 *, channel_base: int | None = None, channel_max: int = 512, config: DiscriminatorConfig | None = None):
        super().__init__()
        if config is None:
            config = DiscriminatorConfig(size=size, channel_base=channel_base or int(16384 * channel_multiplier),
                                         channel_max=channel_max, blur_kernel=list(blur_kernel))
        self.config = config
        ch = channel_table(config.size, config.channel_base, config.channel_max)
        blur = config.blur_kernel
        log_size = int(math.log2(config.size))
        convs = [ConvLayer(3, ch[config.size], 1)]
        in_ch = ch[config.size]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = config.stddev_group, config.stddev_feat
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
                                          EqualLinear(ch[4], 1))

    set_impl = Generator.set_impl

    def forward(self, x):
        out = self.convs(x)
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"discriminator batch {batch} must be divisible by the minibatch-stddev group {group}")
        std = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        std = std.repeat(group, 1, height, width)
        out = self.final_conv(torch.cat([out, std], 1))
        return self.final_linear(out.view(batch, -1))
