"""StyleGAN2 domain adaptation: the generator, its checkpoint formats, and (later) the parameterizations
and trainers. ``python -m gan_adapt --help`` lists the commands."""
from .networks import Discriminator, Generator, GeneratorConfig

__all__ = ["Generator", "Discriminator", "GeneratorConfig"]
