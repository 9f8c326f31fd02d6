"""Low-level StyleGAN2 ops: FIR resampling (`upfirdn2d`) and fused bias + activation (`bias_act`).

Every op has three implementations, chosen per call by ``impl``:

- ``"ref"``  : the textbook PyTorch implementation. It is the specification; slow but obviously right.
- ``"torch"``: the optimised pure-PyTorch path used on the CPU. Exact against ``"ref"`` (tests check it).
- ``"cuda"`` : our own CUDA kernels (``ops/csrc``), compiled lazily with ninja on the first CUDA call.

``impl="auto"`` (the default) picks ``"cuda"`` for CUDA tensors when the kernels are built and ``"torch"``
otherwise. Importing this package never compiles anything; a failed build warns once and falls back.
"""
from .upfirdn2d import upfirdn2d, setup_filter, upsample2d, downsample2d, filter2d
from .bias_act import bias_act

__all__ = ["upfirdn2d", "setup_filter", "upsample2d", "downsample2d", "filter2d", "bias_act"]
