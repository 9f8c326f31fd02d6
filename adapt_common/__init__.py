"""What the GAN and the diffusion adapters share: image I/O, safe file writing, configs, and later CLIP
guidance, metrics and the SynthFaces world. Both ``gan_adapt`` and ``diffusion_adapt`` import from here."""
