"""From a torch model to a :class:`~brianconv.simulation.SpikingNetwork`, and back from a saved file.

:func:`convert` is the one entry point from a torch model to a spiking network: trace the model
into a layer graph, check it against the scheme, calibrate, describe.
"""

import numpy as np

from . import perturbations as knobs
from . import schemes
from .description import weights_stored_as
from .errors import CalibrationError, DataNotFoundError, InvalidValueError
from .folding import fold_affine_layers, fold_input_shift, input_shift_for, pool_branches_before_concatenation
from .graph import trace
from .network import SpikingNetwork

__all__ = ["convert", "describe", "load_network"]


def convert(model, method="ttfs", calibration=None, input_shape=None, input_range=None, perturbations=None,
            precision="float64", **options):
    """Convert a trained torch model into a spiking network.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The trained ANN (put in eval mode; BatchNorm is folded, Dropout and a softmax head dropped),
        or a program exported from it (e.g. ``torch.export.load("model.pt2")``); see
        :func:`brianconv.graph.trace`.
    method : str
        A registered coding scheme (``brianconv.schemes.available()``).
    calibration : array or tensor, shape (N, *input_shape)
        Samples (e.g. a few hundred training images) used to set each layer's scale, preprocessed
        as in training (mean/std-normalised data with negative values is fine).
    input_shape : tuple, optional
        Shape of one sample; taken from ``calibration`` when omitted.
    input_range : (low, high), optional
        Bounds of the input values, each a scalar or one value per input channel (axis 0 of a
        sample). Schemes that code values >= 0 (ttfs, tdsnn, amos, rate with Poisson input)
        receive ``x - low``, the shift folded exactly into the first weighted layer(s)
        (:mod:`brianconv.folding`); without ``input_range`` ``low`` is the calibration data's
        minimum per channel, or 0 when it is non-negative (then nothing changes). Given, it applies
        to every scheme.
    perturbations : sequence of str or "all", optional
        Biophysical knobs to compile in (``tau_m``, ``t_ref``, ``sigma_v``, ``sigma_th``, ``p_fail``,
        ``sigma_w``, ``sigma_delay``, ``weight_bits``, ``seed``; :mod:`brianconv.perturbations`); they become run-time
        parameters of ``simulate`` and ``sweep``. None (default): the unperturbed network.
    precision : {"float64", "float32"}
        Storage of the built network's floating-point state and weights (Brian2's
        ``core.default_float_dtype``). ``"float32"`` halves the weight memory; each sum is then
        rounded to about 6e-8 of its terms' magnitude instead of 1e-16, which moves a spike only
        where a membrane lies that close to a threshold (tests/test_precision.py). Default float64.
    **options
        Options of the scheme (see its class docstring), e.g. ``t_max=64`` for ``"ttfs"``.

    Returns
    -------
    SpikingNetwork
    """
    if precision not in ("float64", "float32"):
        raise InvalidValueError(f"precision must be 'float64' or 'float32', got {precision!r}.")
    scheme = schemes.get(method)(**options)
    compiled_knobs = knobs.requested_knobs(scheme, perturbations)
    if calibration is None:
        raise CalibrationError(f"Method {method!r} needs calibration data: pass calibration=<a few hundred "
                               "training samples, shape (N, *input_shape)>.")
    calibration = calibration.detach().cpu().numpy() if hasattr(calibration, "detach") else np.asarray(calibration)
    if calibration.ndim < 2 or len(calibration) == 0:
        raise CalibrationError(f"Calibration data must be a non-empty batch (N, *input_shape); got shape "
                               f"{calibration.shape}.")
    graph = trace(model, tuple(input_shape) if input_shape is not None else calibration.shape[1:])
    graph = pool_branches_before_concatenation(fold_affine_layers(graph))
    scheme.check(graph)
    x = graph.check_input(calibration)
    shift = None
    if scheme.needs_nonnegative_input or input_range is not None:
        shift = input_shift_for(x, input_range)
        x = shift.apply(x)
    described = fold_input_shift(graph, shift.low) if shift is not None else graph
    scheme.check_input(x)
    calibrated = scheme.calibrate(described, x)
    description = describe(scheme, described, calibrated, compiled_knobs, precision)
    return SpikingNetwork(graph, scheme, calibrated, description, input_shift=shift, described_graph=described)


def describe(scheme, graph, calibration, compiled_knobs=(), precision="float64"):
    """The network description of a checked, calibrated ``graph``: the scheme's description with the
    perturbation knobs ``compiled_knobs`` compiled in and the storage ``precision``."""
    # float32 weights are stored as the run stores them (4 bytes each) as soon as each projection exists
    with weights_stored_as(np.float32 if precision == "float32" else None):
        description = knobs.compile_knobs(scheme.describe(graph, calibration), compiled_knobs)
    description.precision = precision
    return description


def load_network(path):
    """Read a network written by :meth:`SpikingNetwork.save` (``brianconv convert``). Only open trusted files.

    Raises :class:`~brianconv.errors.DataNotFoundError` for a missing file and
    :class:`~brianconv.errors.InvalidValueError` for a file that is not a whole saved network.
    """
    import pickle

    try:
        with open(path, "rb") as handle:
            network = pickle.load(handle)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"No saved network at {path}: write one with SpikingNetwork.save or "
                                "'brianconv convert -o FILE'.") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as exc:
        raise InvalidValueError(f"{path} is not a readable saved network (corrupt or truncated file, or saved by "
                                f"an incompatible version: {type(exc).__name__}: {exc}). Convert the model again "
                                "and save it with SpikingNetwork.save or 'brianconv convert -o FILE'.") from exc
    if not isinstance(network, SpikingNetwork):
        raise InvalidValueError(f"{path} does not hold a converted network (found {type(network).__name__}).")
    return network
