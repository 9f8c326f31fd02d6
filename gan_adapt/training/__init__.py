"""StyleGAN2 trainers: adversarial (``engine``: pretraining, few-shot, ADA), one-shot CLIP-guided (``clip_guided``) and
the HyperDomainNet hypernetwork (``hyper``), with their losses and augmentations."""
