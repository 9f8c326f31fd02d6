"""Diffusion-model adaptation on ``diffusers``: SVDiff spectral shifts and DomainStudio losses.

- :mod:`.models`: build / load / save local model folders (``DDPMPipeline`` layout);
- :mod:`.svdiff`: spectral shifts on any torch model, in the public ``spectral_shifts.safetensors`` layout;
- :mod:`.losses`: DomainStudio's relative-distance and high-frequency losses;
- :mod:`.training`: pretraining and few-shot adaptation (``python -m diffusion_adapt train``);
- :mod:`.sampling`: DDIM sampling, DDIM inversion, DDIB translation.

Shared pieces (datasets, image I/O, CLIP, metrics, SynthFaces, the training loop) live in :mod:`adapt_common`.
"""
