import pytest
import torch

from mfbo.training import SingleNN


def _grads(detach: bool):
    torch.manual_seed(0)
    net = SingleNN(6, num_layers=1, num_nodes=5, activation="tanh", batchnorm=True).double()
    net.set_detached_batch_stats(detach)
    x = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    net.train()
    y_train = net(x)
    (g_train,) = torch.autograd.grad(y_train.sum(), x)
    # Give eval mode exactly the batch's statistics: eval-mode forces are then the reference.
    linear, bn = net.net[0], net.net[1]
    with torch.no_grad():
        h = linear(x)
        bn.running_mean.copy_(h.mean(0))
        bn.running_var.copy_(h.var(0, unbiased=False))
    net.eval()
    y_eval = net(x)
    (g_eval,) = torch.autograd.grad(y_eval.sum(), x)
    return y_train, y_eval, g_train, g_eval


def test_detached_batch_stats_give_eval_consistent_forces():
    y_train, y_eval, g_train, g_eval = _grads(detach=True)
    torch.testing.assert_close(y_train, y_eval)
    torch.testing.assert_close(g_train, g_eval)
    y_std, _, g_std, _ = _grads(detach=False)
    torch.testing.assert_close(y_std, y_train)  # same forward values as a standard batch norm
    assert (g_std - g_eval).abs().max() > 1e-3  # AMPTorch's train-mode gradient differs


@pytest.mark.parametrize("activation", ["tanh", "silu", "gelu", "softplus"])
def test_architecture_and_xavier_init(activation):
    net = SingleNN(20, num_layers=3, num_nodes=10, activation=activation, batchnorm=True, dropout=0.1)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 501  # AMPTorch's seed SingleNN: 20 -> 3 x 10 (+ batchnorm) -> 1
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.all(m.bias == 0) for m in linears)
    bound = (6 / (20 + 10)) ** 0.5
    assert linears[0].weight.abs().max() <= bound
    assert any(isinstance(m, torch.nn.Dropout) for m in net.modules())


def test_element_outputs_read_each_atom_from_its_elements_unit():
    torch.manual_seed(0)
    net = SingleNN(4, num_layers=1, num_nodes=3, elements=[8, 1]).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    numbers = torch.tensor([1, 8, 8, 1, 29])  # Cu (29) has no unit: it reads the mean of the units
    out = net(x, numbers)
    hidden = net.net[:-1](x)
    units = net.net[-1](hidden)  # columns in sorted element order: H (1), O (8)
    expected = torch.stack([units[0, 0], units[1, 1], units[2, 1], units[3, 0], units[4].mean()])
    torch.testing.assert_close(out, expected)
    assert net.net[-1].out_features == 2 and net.elements == [1, 8]
    with pytest.raises(ValueError, match="atomic numbers"):
        net(x)
    shared = SingleNN(4, num_layers=1, num_nodes=3).double()
    assert shared(x, numbers).shape == (5,)  # one output for all: the numbers are not needed
