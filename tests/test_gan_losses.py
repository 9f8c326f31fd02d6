"""GAN losses and regularisers against closed forms."""
import copy
import math

import torch
import torch.nn.functional as F

from conftest import TINY
from gan_adapt.networks import Discriminator, Generator
from gan_adapt.training.losses import (accumulate_ema, d_logistic_loss, ema_decay_for, g_nonsaturating_loss,
                                       path_length_penalty, r1_penalty)


def test_logistic_losses_closed_form():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected_d = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2 + \
        (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3))) / 2
    assert abs(d_logistic_loss(real, fake).item() - expected_d) < 1e-6
    assert abs(g_nonsaturating_loss(fake).item() - (F.softplus(-fake).mean().item())) < 1e-7
    # Non-saturating: the G gradient does not vanish when D confidently rejects the fake.
    x = torch.tensor([-10.0], requires_grad=True)
    g_nonsaturating_loss(x).backward()
    assert x.grad.abs().item() > 0.99


def test_r1_matches_analytic_gradient_of_a_linear_critic():
    w = torch.randn(3 * 4 * 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    pred = x.flatten(1) @ w  # D(x) = <w, x>: grad = w for every sample
    assert torch.allclose(r1_penalty(pred, x), w.square().sum(), rtol=1e-5)


def test_r1_and_path_length_backpropagate_into_the_networks():
    torch.manual_seed(0)
    d = Discriminator(32, channel_base=256, channel_max=32)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    r1_penalty(d(x), x).backward()
    assert d.convs[0][0].weight.grad.abs().sum() > 0
    g = Generator(**TINY)
    w = g.get_latent(torch.randn(2, TINY["style_dim"]))
    wplus = g.to_wplus(w).detach().requires_grad_(True)
    img = g.synthesis(g.styles_from_latent(wplus))
    pen, mean, lengths = path_length_penalty(img, wplus, 0.0, decay=0.5)
    assert lengths.shape == (2,) and torch.allclose(mean, 0.5 * lengths.mean().detach())
    pen.backward()
    assert g.convs[0].conv.weight.grad.abs().sum() > 0


def test_ema():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.weight.clone()
    accumulate_ema(ema, model, 0.9)
    torch.testing.assert_close(ema.weight, 0.9 * before + 0.1 * model.weight)
    assert abs(ema_decay_for(32, 10.0) - 0.5 ** (32 / 10000)) < 1e-12
