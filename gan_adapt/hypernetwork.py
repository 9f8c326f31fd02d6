"""HyperDomainNet: a hypernetwork from a CLIP embedding to a domain modulation (one ``cin_mult`` vector per conv).

Architecture (the paper's ``residual_channelin`` mapper, shared backbone):

- backbone: ``Linear → ReLU → BatchNorm`` then ``depth − 1`` residual blocks
  ``x ← ReLU(x + BN(L₂(ReLU(BN(L₁ x)))))``;
- one head per modulated conv: a residual block then ``Linear(width → c_in)``;
- every Linear starts xavier-uniform × 0.01 with zero bias, so d ≈ 0 and the generator starts as the source.

At 1024 px with a 512-d input, width 512 and depth 4 this is 13,913,504 parameters (depth 6: 14,968,224), as in
the spec. BatchNorm means single-query inference runs in ``eval()`` mode (running statistics).

``Hypernetwork.direction(text_or_embedding)`` returns an ordinary :class:`~gan_adapt.directions.Direction`, so a
predicted domain mixes, morphs, transfers and saves like a trained one. Files are safetensors with a JSON
manifest (the mapper config, the CLIP that embeds its inputs, the base generator, the tensors' content hash).
Loading checks the hash, refuses NaN/Inf weights and bounds the mapper's sizes before building it.
``Hypernetwork.from_pretrained(path)`` loads one (``path``: the file, or a run folder holding
``hypernet.safetensors``), ``net.save_pretrained(path, **manifest)`` writes one; ``Hypernetwork.load`` and
``net.save`` are the old names, kept for one release.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adapt_common.files import PretrainedFile, manifest_header, read_checked, require_size, save_with_manifest, \
    tensors_hash, warn_deprecated
from .directions import Direction, DirectionFileError, conv_layers
from .formats.architecture import MAX_CHANNELS, MAX_STYLE_LAYERS
from .networks import Generator

FORMAT = "domain-adapt/hypernetwork"
#: Bounds on a mapper read from a file (the paper's: 512-d CLIP inputs, width 512, depth 4 or 6).
MAX_INPUT_DIM = 4096
MAX_WIDTH = 4096
MAX_DEPTH = 32


@dataclass
class MapperConfig:
    input_dim: int = 512  # the CLIP embedding size
    width: int = 512
    depth: int = 4  # backbone blocks (4 text, 6 image in the paper)
    layers: list = field(default_factory=list)  # [(conv name, c_in)] of the generator it modulates


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.l1, self.bn1 = nn.Linear(width, width), nn.BatchNorm1d(width)
        self.l2, self.bn2 = nn.Linear(width, width), nn.BatchNorm1d(width)

    def forward(self, x):
        y = F.relu(self.bn1(self.l1(x)))
        return F.relu(x + self.bn2(self.l2(y)))


class Hypernetwork(PretrainedFile, nn.Module):
    FILE_NAME = "hypernet.safetensors"  # what a run folder holds
    WHAT = "hypernetwork file"

    def __init__(self, config: MapperConfig):
        super().__init__()
        if not config.layers:
            raise ValueError("MapperConfig.layers is empty: build it with Hypernetwork.for_generator(G, ...)")
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Linear(config.input_dim, w), nn.ReLU(), nn.BatchNorm1d(w))
        self.backbone = nn.Sequential(*[_ResBlock(w) for _ in range(config.depth - 1)])
        self.heads = nn.ModuleList([nn.Sequential(_ResBlock(w), nn.Linear(w, c)) for _, c in config.layers])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                with torch.no_grad():
                    m.weight.mul_(0.01)
                nn.init.zeros_(m.bias)

    @classmethod
    def for_generator(cls, g: Generator, input_dim: int = 512, width: int = 512, depth: int = 4) -> "Hypernetwork":
        layers = [[layer.name, layer.channels] for layer in conv_layers(g)]
        return cls(MapperConfig(input_dim=input_dim, width=width, depth=depth, layers=layers))

    def forward(self, emb: torch.Tensor) -> list[torch.Tensor]:
        """Normalised embeddings [B, input_dim] -> per conv, d [B, c_in]."""
        x = self.backbone(self.stem(F.normalize(emb.float(), dim=-1)))
        return [head(x) for head in self.heads]

    def weight_mults(self, g: Generator, emb: torch.Tensor) -> list[torch.Tensor | None]:
        """Per style layer of ``g``: 1 + d [B, c_in] for the convs, None for toRGB (for ``G.synthesis``)."""
        d = dict(zip([n for n, _ in self.config.layers], self(emb)))
        return [1 + d[layer.name] if layer.name in d else None for layer in g.style_layers()]

    @torch.no_grad()
    def direction(self, emb: torch.Tensor, **meta) -> Direction:
        """The domain modulation for one embedding [D] or [1, D] (eval mode) as a direction."""
        was = self.training
        self.eval()
        d = torch.cat([v[0] for v in self(emb.reshape(1, -1))])
        self.train(was)
        return Direction("cin_mult", [tuple(x) for x in self.config.layers], d,
                         {"derived": "hypernetwork", **meta})

    # -- files -----------------------------------------------------------------------------------------------

    def save(self, path: str | Path, **manifest) -> Path:
        """Deprecated: :meth:`save_pretrained`."""
        warn_deprecated("Hypernetwork.save(path)", "Hypernetwork.save_pretrained(path)")
        return self.save_pretrained(path, **manifest)

    @classmethod
    def load(cls, path: str | Path, *, verify_hash: bool = True) -> "Hypernetwork":
        """Deprecated: :meth:`from_pretrained`."""
        warn_deprecated("Hypernetwork.load(path)", "Hypernetwork.from_pretrained(path)")
        return cls.from_pretrained(path, verify_hash=verify_hash)

    def _write_pretrained(self, path: Path, **manifest) -> Path:
        """The weights, with ``manifest`` (what the trainer records: the CLIP, the base generator ...)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        info = {**manifest_header(FORMAT), "mapper": asdict(self.config),
                "num_parameters": sum(p.numel() for p in self.parameters()), **manifest,
                "content_hash": tensors_hash(tensors)}
        return save_with_manifest(tensors, path, FORMAT, info)

    @classmethod
    def _read_pretrained(cls, path: Path, *, verify_hash: bool = True) -> "Hypernetwork":
        """A hypernetwork file (``verify_hash=False``: accept tensors that differ from its content hash)."""
        tensors, manifest, _ = read_checked(path, FORMAT, cls.WHAT, DirectionFileError, verify_hash=verify_hash)
        config = _mapper_config(manifest.get("mapper"), path)
        with torch.device("meta"):  # the file must hold every tensor of that shape before it is allocated
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
            raise DirectionFileError(f"{path}: its tensors do not fit the mapper its manifest describes "
                                     f"({config.width} wide, depth {config.depth}, {len(config.layers)} heads): "
                                     f"{wrong[:4]} differ")
        net = cls(config)
        net.load_state_dict(tensors)
        net.manifest = manifest
        return net.eval()


def _mapper_config(mapper, path) -> MapperConfig:
    """The manifest's mapper config, every size bounded before a network is built with it."""
    try:
        if not isinstance(mapper, dict) or not isinstance(mapper.get("layers"), list):
            raise ValueError(f"{path}: its manifest has no mapper config with layers; the file is corrupt")
        config = MapperConfig(
            input_dim=require_size("mapper input_dim", mapper.get("input_dim"), MAX_INPUT_DIM, path, 1),
            width=require_size("mapper width", mapper.get("width"), MAX_WIDTH, path, 1),
            depth=require_size("mapper depth", mapper.get("depth"), MAX_DEPTH, path, 1),
            layers=mapper["layers"])
        require_size("the number of mapper heads", len(config.layers), MAX_STYLE_LAYERS, path, 1)
        config.layers = [[str(name), require_size(f"the channels of head {name!r}", c, MAX_CHANNELS, path, 1)]
                         for name, c in config.layers]
    except (TypeError, ValueError) as e:  # ValueError: also a layer that is not a (name, channels) pair
        raise DirectionFileError(str(e) if str(e).startswith(str(path)) else f"{path}: bad mapper config ({e})") from e
    return config
