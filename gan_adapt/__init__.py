"""StyleGAN2 domain adaptation: the generator (``networks``), checkpoint formats (``formats``), the
parameterizations, direction/adapter/hypernetwork files, morphing, inversion and the trainers (``training``).
``python -m gan_adapt --help`` lists the commands."""
from .networks import Discriminator, Generator, GeneratorConfig

__all__ = ["Generator", "Discriminator", "GeneratorConfig"]
