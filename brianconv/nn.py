"""Torch modules for training networks that convert exactly: the TDSNN activation G.

Zhang et al. (AAAI-19, Eq. 11) replace ReLU by the activation the spiking network actually
computes with reverse coding (:mod:`brianconv.schemes.tdsnn`):

    ``G(x) = exp(ceil(L ln(x + 1) - rho) / L)`` for ``x >= 0``, ``G(x) = 1`` for ``x < 0``,

with ``rho = 1/2`` (``rounding="nearest"``, the conversion's default) or ``rho = 0`` (``"up"``,
the paper's Eq. 10). A network with ``G`` in place of every ReLU (and on its input) is what
``convert(model, "tdsnn", L=L, rounding=rounding)`` simulates, to floating-point rounding.
:func:`finetune_tdsnn` fine-tunes a ReLU model through ``G`` (straight-through gradient) and
returns it with its ReLUs, ready to convert.

>>> import torch
>>> from brianconv.nn import TDSNNActivation
>>> g = TDSNNActivation(L=4)
>>> g(torch.tensor([-1.0, 0.0, 0.5, 2.0])).tolist()  # exp(ceil(4 ln(x+1) - 1/2)/4) - 1
[0.0, 0.0, 0.6487212181091309, 1.7182817459106445]
"""

import copy
import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .schemes.tdsnn import ROUNDING_POINTS

__all__ = ["TDSNNActivation", "finetune_tdsnn", "tdsnn_model"]

logger = logging.getLogger(__name__)


class TDSNNActivation(nn.Module):
    """The quantised activation ``G`` of TDSNN (Eq. 11), with a straight-through gradient.

    Parameters
    ----------
    L : float
        Leak constant in steps (the ``L`` of the conversion).
    subtract_one : bool
        True (default): return ``G(x) - 1``, a quantised ReLU; matches ``convert(...,
        offset="fold")``, which folds G's constant 1 into the next layer's bias. False: the
        paper's ``G(x)`` itself; matches ``offset="keep"``.
    max_step : int, optional
        Cut the code at this step (the conversion cuts each layer at ``T(lambda)``).
    rounding : {"nearest", "up"}
        The conversion's ``rounding`` option: ``ln(x + 1)`` rounded to the nearest multiple of
        ``1 / L`` (default) or up (the paper's Eq. 10).

    Notes
    -----
    Quantisation error of ``G(x) - 1`` against ``ReLU(x)`` for ``x >= 0``
    (:func:`brianconv.schemes.tdsnn.code_error_bounds`): with ``"up"``

        ``0 <= G(x) - 1 - x < (x + 1) (exp(1 / L) - 1)``,

    always upwards, by at most ``exp(1/L) - 1`` (13 % for ``L = 8``) of ``x + 1``; with
    ``"nearest"`` at most ``(x + 1)(exp(1 / (2L)) - 1)`` (6.45 %) either way. Without retraining
    the errors of successive layers add up; fine-tuning through G removes most of the loss. The
    forward pass is exact; the backward pass is that of ReLU (straight-through).
    """

    def __init__(self, L, subtract_one=True, max_step=None, rounding="nearest"):
        super().__init__()
        if not L > 0:
            raise ValueError(f"L must be > 0, got {L!r}.")
        if rounding not in ROUNDING_POINTS:
            raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDING_POINTS))}, got {rounding!r}.")
        self.L = float(L)
        self.subtract_one = bool(subtract_one)
        self.max_step = max_step
        self.rounding = rounding

    def steps(self, x):
        """Spike steps ``T(x) = ceil(L ln(x + 1) - rho)`` of the values ``x`` (0 for ``x < 0``)."""
        log_value = self.L * torch.log(torch.clamp(x, min=0) + 1)
        t = torch.clamp(torch.ceil(log_value - ROUNDING_POINTS[self.rounding]), min=0)
        return t if self.max_step is None else torch.clamp(t, max=self.max_step)

    def forward(self, x):
        relu = F.relu(x)
        g = torch.exp(self.steps(x.detach()) / self.L) - (1.0 if self.subtract_one else 0.0)
        offset = 0.0 if self.subtract_one else 1.0
        return relu + offset + (g - relu - offset).detach()

    def extra_repr(self):
        return f"L={self.L:g}, subtract_one={self.subtract_one}, rounding={self.rounding!r}" + (
            f", max_step={self.max_step}" if self.max_step is not None else "")


def _swap_relus(module, make):
    """Replace every ``nn.ReLU`` child (recursively) by ``make(relu)``; return the replaced ones."""
    replaced = []
    for name, child in module.named_children():
        if isinstance(child, (nn.ReLU, TDSNNActivation)):
            new = make(child)
            setattr(module, name, new)
            replaced.append((module, name, child))
        else:
            replaced += _swap_relus(child, make)
    return replaced


def tdsnn_model(model, L, subtract_one=True, rounding="nearest"):
    """A copy of ``model`` computing the coded network: input and every ``nn.ReLU`` through G.

    ReLUs applied with ``torch.relu``/``F.relu`` inside a custom ``forward`` are not replaced.
    """
    coded = copy.deepcopy(model)
    _swap_relus(coded, lambda _: TDSNNActivation(L, subtract_one, rounding=rounding))
    return nn.Sequential(TDSNNActivation(L, subtract_one, rounding=rounding), coded)


def finetune_tdsnn(model, data, L, epochs=1.0, lr=1e-4, batch_size=128, subtract_one=True, seed=0,
                   progress=None, rounding="nearest"):
    """Fine-tune ``model`` through the TDSNN activation and return it with its ReLUs.

    Every ``nn.ReLU`` is replaced by :class:`TDSNNActivation` ``(L, subtract_one, rounding=rounding)``
    and the input is coded the same way; the copy is trained with Adam on the cross-entropy, with
    the straight-through gradient of ReLU; the trained weights are returned in a copy of ``model``
    (ReLUs restored), so that ``convert(result, "tdsnn", L=L, offset="fold" if subtract_one else
    "keep", rounding=rounding)`` simulates the fine-tuned coded network. ``model`` itself is not changed.

    Parameters
    ----------
    model : torch.nn.Module
        A trained ReLU model.
    data : torch DataLoader or (images, labels) arrays
        Training data; images of shape (N, *input_shape) with values >= 0.
    L : float
        Leak constant of the conversion.
    epochs : float
        Passes over ``data`` (fractions allowed: 0.25 trains on the first quarter of the batches).
    lr, batch_size, seed
        Adam learning rate, batch size (arrays only) and the seed of the shuffling.
    progress : callable, optional
        Called with ``(step, n_steps, loss)`` after every batch.
    rounding : {"nearest", "up"}
        The code's rounding, as the conversion's option of that name.

    Returns
    -------
    torch.nn.Module
        The fine-tuned model in eval mode, same architecture as ``model``.
    """
    tuned = copy.deepcopy(model)
    coded = nn.Sequential(TDSNNActivation(L, subtract_one, rounding=rounding), tuned)
    replaced = _swap_relus(tuned, lambda _: TDSNNActivation(L, subtract_one, rounding=rounding))
    generator = torch.Generator().manual_seed(seed)
    if isinstance(data, (tuple, list)):
        images = torch.as_tensor(np.asarray(data[0]), dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(data[1]), dtype=torch.long)
        dataset = torch.utils.data.TensorDataset(images, labels)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    else:
        loader = data
    n_steps = max(1, round(epochs * len(loader)))
    optimiser = torch.optim.Adam(coded.parameters(), lr=lr)
    coded.train()
    step = 0
    while step < n_steps:
        for images, labels in loader:
            optimiser.zero_grad()
            loss = F.cross_entropy(coded(images.float()), labels)
            loss.backward()
            optimiser.step()
            step += 1
            if progress:
                progress(step, n_steps, float(loss))
            if step >= n_steps:
                break
    for parent, name, relu in replaced:
        setattr(parent, name, relu)
    logger.info("fine-tuned %d steps through G (L=%g)", n_steps, L)
    return tuned.eval()
