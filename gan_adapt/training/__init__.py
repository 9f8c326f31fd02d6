"""Adversarial StyleGAN2 training: losses, regularisers, EMA (the engine arrives with issue #4)."""
