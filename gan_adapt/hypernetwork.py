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
manifest (the mapper config, the CLIP that embeds its inputs, the base generator).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adapt_common.files import read_with_manifest, save_with_manifest
from .directions import Direction, DirectionFileError, conv_layers
from .networks import Generator

FORMAT = "domain-adapt/hypernetwork"


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


class Hypernetwork(nn.Module):
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
        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        info = {"format": FORMAT, "version": "1", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "mapper": asdict(self.config), "num_parameters": sum(p.numel() for p in self.parameters()), **manifest}
        return save_with_manifest(tensors, path, FORMAT, info)

    @classmethod
    def load(cls, path: str | Path) -> "Hypernetwork":
        tensors, manifest, _ = read_with_manifest(path, FORMAT, "hypernetwork file", DirectionFileError)
        net = cls(MapperConfig(**manifest["mapper"]))
        net.load_state_dict(tensors)
        net.manifest = manifest
        return net.eval()
