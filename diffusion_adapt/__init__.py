"""Diffusion-model adaptation on ``diffusers`` (SVDiff spectral shifts, DomainStudio losses).

Not implemented yet: it arrives with issue #6. Shared pieces (image I/O, and later CLIP guidance, metrics and
SynthFaces) live in :mod:`adapt_common`.
"""
