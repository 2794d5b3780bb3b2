"""SingleNN: one MLP shared by every element, atomic energies summed per image."""

from __future__ import annotations

import torch
from torch import nn

from mfbo.errors import ConfigError

__all__ = ["SingleNN", "ACTIVATION_CLASSES"]

ACTIVATION_CLASSES = {"tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus}


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that can treat the batch statistics as constants in training.

    In training mode a standard batch norm makes every atom's output depend on the whole batch,
    so dE/dfeatures (and hence the forces) picks up cross-atom terms through the batch mean and
    variance that do not exist in eval mode: a model trained on such forces predicts different
    forces at inference. With ``detach_stats`` the statistics are computed from the detached
    input: the forward values are the same, and training forces equal the forces of the
    normalised network the model becomes in eval mode. Same state dict as ``nn.BatchNorm1d``.
    """

    detach_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.detach_stats) or x.shape[0] < 2:
            return super().forward(x)
        xd = x.detach()
        mean = xd.mean(0)
        var = xd.var(0, unbiased=False)
        with torch.no_grad():
            n = x.shape[0]
            self.num_batches_tracked.add_(1)
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class SingleNN(nn.Module):
    """AMPTorch's SingleNN architecture.

    ``[Linear -> (BatchNorm1d) -> activation -> (Dropout)] x num_layers -> Linear(num_nodes, 1)``,
    Xavier-uniform weights and zero biases. The element enters only through the
    (valence-density-weighted) fingerprints.

    With ``elements`` the hidden layers stay shared and the output layer has one unit per element
    (the SingleNN of Liu & Kitchin, J. Phys. Chem. C 124, 17811 (2020)): an atom's energy is read
    from its element's unit, so each element gets its own linear read-out of the shared features.
    That gives the element back to the network where per-element feature scaling maps every
    element's fingerprints onto the same range. An element outside ``elements`` reads the mean of
    the units.

    Args:
        n_features: fingerprint length F.
        num_layers, num_nodes: hidden layers x width.
        activation: key of ``ACTIVATION_CLASSES``.
        batchnorm: BatchNorm1d after each hidden linear layer.
        dropout: dropout probability after each hidden activation.
        elements: atomic numbers with an output unit each (None: one output shared by all).
    """

    def __init__(
        self,
        n_features: int,
        num_layers: int = 3,
        num_nodes: int = 10,
        activation: str = "tanh",
        batchnorm: bool = True,
        dropout: float = 0.0,
        elements=None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(num_layers):
            layers.append(nn.Linear(width, num_nodes))
            if batchnorm:
                layers.append(_BatchNorm(num_nodes))
            layers.append(ACTIVATION_CLASSES[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = num_nodes
        self.elements = None if elements is None else sorted(int(z) for z in elements)
        n_out = 1 if self.elements is None else len(self.elements)
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)
        if self.elements is not None:
            unit = torch.full((119,), -1, dtype=torch.long)
            unit[torch.tensor(self.elements, dtype=torch.long)] = torch.arange(n_out)
            self.register_buffer("unit_of_z", unit, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def set_detached_batch_stats(self, detach: bool) -> None:
        """Treat batch-norm statistics as constants in training (see ``_BatchNorm``)."""
        for module in self.modules():
            if isinstance(module, _BatchNorm):
                module.detach_stats = bool(detach)

    def forward(self, features: torch.Tensor, numbers: torch.Tensor | None = None) -> torch.Tensor:
        """Atomic outputs (scaled energy units), shape (n_atoms,).

        Args:
            features: (n_atoms, F) scaled fingerprints.
            numbers: (n_atoms,) atomic numbers; needed only with per-element output units.
        """
        out = self.net(features)
        if self.elements is None:
            return out.squeeze(-1)
        if numbers is None:
            raise ConfigError("this SingleNN has one output unit per element: pass the atoms' atomic numbers")
        unit = self.unit_of_z.to(numbers.device)[numbers]
        known = unit >= 0
        picked = out.gather(1, unit.clamp(min=0).unsqueeze(1)).squeeze(1)
        return torch.where(known, picked, out.mean(dim=1))
