"""upfirdn2d and bias_act: the optimised path against the reference, the reference against scipy, and
first- and second-order gradients."""
import itertools

import numpy as np
import pytest
import torch

import ops
from ops.upfirdn2d import output_size, setup_filter

CASES = [
    # (filter shape, up, down, pad)
    ((4, 4), 2, 1, (2, 1, 2, 1)),  # StyleGAN2 upsample
    ((4, 4), 1, 2, (1, 1, 1, 1)),  # downsample
    ((4, 4), 1, 1, (1, 1, 1, 1)),  # blur after the transposed conv
    ((4, 4), 1, 1, (2, 2, 2, 2)),  # blur before a stride-2 conv in D
    ((3, 5), (2, 3), (1, 2), (3, 0, -1, 2)),  # anisotropic, with a crop
    ((1, 1), 3, 2, (0, 0, 0, 0)),
    ((5, 2), 1, (3, 1), (-2, 4, 1, -1)),
    ((2, 2), 2, 2, (1, 0, 0, 1)),
]


def _norm(up, down):
    up = (up, up) if isinstance(up, int) else up
    down = (down, down) if isinstance(down, int) else down
    return up, down


@pytest.mark.parametrize("fshape,up,down,pad", CASES)
def test_upfirdn2d_torch_path_equals_reference(fshape, up, down, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, generator=gen)
    f = torch.randn(*fshape, dtype=torch.float64, generator=gen)
    ref = ops.upfirdn2d(x, f, up, down, pad, impl="ref")
    out = ops.upfirdn2d(x, f, up, down, pad, impl="torch")
    (ux, uy), (dx, dy) = _norm(up, down)
    assert ref.shape == (2, 3, output_size(7, uy, dy, pad[2], pad[3], fshape[0]),
                         output_size(9, ux, dx, pad[0], pad[1], fshape[1]))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down,k", [(1, 1, 4), (2, 1, 4), (1, 2, 4), (3, 1, 3), (2, 2, 5)])
def test_upfirdn2d_reference_matches_scipy(up, down, k):
    from scipy import signal  # a hard dependency (adapt_common.metrics, lpips, scikit-image need scipy)
    rng = np.random.RandomState(0)
    x = rng.randn(6, 5)
    h = rng.randn(k)
    # scipy's full output corresponds to padding k-1 before and k-up after (no trailing zeros).
    expected = signal.upfirdn(h, signal.upfirdn(h, x, up, down, axis=0), up, down, axis=1)
    p0, p1 = k - 1, k - up
    got = ops.upfirdn2d(torch.from_numpy(x)[None, None], torch.from_numpy(np.outer(h, h)), up, down,
                        (p0, p1, p0, p1), impl="ref")[0, 0].numpy()
    n0, n1 = min(got.shape[0], expected.shape[0]), min(got.shape[1], expected.shape[1])
    assert abs(got.shape[0] - expected.shape[0]) <= 1
    np.testing.assert_allclose(got[:n0, :n1], expected[:n0, :n1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["ref", "torch"])
@pytest.mark.parametrize("fshape,up,down,pad", CASES[:5])
def test_upfirdn2d_gradients(impl, fshape, up, down, pad):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.randn(*fshape, dtype=torch.float64, generator=gen)
    fn = lambda t: ops.upfirdn2d(t, f, up, down, pad, impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_gradient_is_the_transposed_op():
    """d/dx upfirdn2d = upfirdn2d with up/down swapped, flipped filter, the documented padding."""
    from ops.upfirdn2d import _grad_pad
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    up, down, pad = 2, 1, (2, 1, 2, 1)
    y = ops.upfirdn2d(x, f, up, down, pad, impl="ref")
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    g0, g1 = _grad_pad(6, y.shape[2], up, down, pad[0], pad[1], 4)
    manual = ops.upfirdn2d(gy, f.flip([0, 1]), down, up, (g0, g1, g0, g1), impl="ref")
    torch.testing.assert_close(manual, gx)


def test_upfirdn2d_errors_are_clear():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="filter"):
        ops.upfirdn2d(x, torch.ones(4, 4, requires_grad=True))
    with pytest.raises(ValueError, match="empty"):
        ops.upfirdn2d(x, torch.ones(4, 4), pad=(-3, -3, 0, 0))
    with pytest.raises(ValueError, match="unknown impl"):
        ops.upfirdn2d(x, torch.ones(2, 2), impl="fast")
    with pytest.raises(ValueError, match="CUDA"):
        ops.upfirdn2d(x, torch.ones(2, 2), impl="cuda")


def test_setup_filter_and_resampling_helpers():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and abs(f.sum().item() - 1) < 1e-6
    x = torch.randn(2, 3, 8, 8)
    assert ops.upsample2d(x, setup_filter([1, 3, 3, 1], gain=4)).shape == (2, 3, 16, 16)
    assert ops.downsample2d(x, f).shape == (2, 3, 4, 4)
    assert ops.filter2d(x, f).shape == x.shape
    # A constant image stays constant away from the borders under a normalised (and gain-4 upsampling) filter.
    ones = torch.ones(1, 1, 8, 8)
    assert torch.allclose(ops.upsample2d(ones, setup_filter([1, 3, 3, 1], gain=4))[..., 2:-2, 2:-2],
                          torch.ones(1, 1, 12, 12))


ACTS = ["linear", "relu", "lrelu"]


@pytest.mark.parametrize("act,clamp,with_bias", list(itertools.product(ACTS, [None, 0.7], [True, False])))
def test_bias_act_paths_and_gradients(act, clamp, with_bias):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True) if with_bias else None
    ref = ops.bias_act(x, b, act, clamp=clamp, impl="ref")
    out = ops.bias_act(x, b, act, clamp=clamp, impl="torch")
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    inputs = (x, b) if with_bias else (x,)
    fn = lambda *t: ops.bias_act(t[0], t[1] if with_bias else None, act, clamp=clamp, impl="torch")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_bias_act_values_and_defaults():
    x = torch.tensor([[-1.0, 2.0]]).reshape(1, 2)
    b = torch.tensor([0.5, -3.0])
    y = ops.bias_act(x, b, "lrelu")  # x + b = [-0.5, -1.0] -> 0.2 * that * sqrt 2
    torch.testing.assert_close(y, torch.tensor([[-0.1, -0.2]]) * 2 ** 0.5)
    torch.testing.assert_close(ops.bias_act(x, None, "relu"), torch.tensor([[0.0, 2 * 2 ** 0.5]]))
    assert ops.bias_act(x, None, "linear", gain=3.0).tolist() == [[-3.0, 6.0]]
    with pytest.raises(ValueError, match="unknown activation"):
        ops.bias_act(x, None, "gelu")
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.bias_act(x, torch.zeros(3))
