"""The small interface every coding scheme implements, and the registry of schemes.

A scheme is a subclass of the abstract :class:`Scheme`: it must implement :meth:`Scheme.describe`
and :meth:`Scheme.setup`, and may override the other methods, which have working defaults.
:func:`register` makes it available to ``brianconv.convert(model, method=NAME)``.
"""

import abc
import inspect
from dataclasses import dataclass, field

import numpy as np

from ..calibration import calibrate as calibrate_scales
from ..errors import ConversionError, InvalidValueError, UnknownMethodError
from .options import Options
from .projections import (  # noqa: F401  (re-exported: the schemes import them from here)
    FOLDED_OPS,
    folds_into_reader,
    incoming_projections,
    merged_by_source,
    population_names,
    projected_layers,
)

__all__ = ["Scheme", "RunSetup", "register", "unregister", "get", "available", "population_names", "projected_layers",
           "incoming_projections", "FOLDED_OPS", "folds_into_reader",
           "merged_by_source", "clip_of", "carries_non_negative", "check_branch_activations", "limit_scales_to_clips"]

_REGISTRY = {}


def register(cls):
    """Class decorator: make a :class:`Scheme` subclass available under ``cls.name``.

    Raises ``TypeError`` for a class without a ``name`` or with abstract methods left to
    implement, and ``ValueError`` when another class already holds the name.
    """
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no 'name' to register it under.")
    if inspect.isabstract(cls):
        raise TypeError(f"{cls.__module__}.{cls.__name__} cannot be registered as {cls.name!r}: it does not implement "
                        f"{', '.join(sorted(cls.__abstractmethods__))} (see brianconv.schemes.Scheme).")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"A scheme named {cls.name!r} is already registered ({_REGISTRY[cls.name].__module__}); "
                         f"{cls.__module__}.{cls.__name__} needs another name.")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name):
    """Remove the scheme registered as ``name`` (e.g. a scheme registered by a test)."""
    if name not in _REGISTRY:
        raise UnknownMethodError(f"No method {name!r} is registered; registered methods: {', '.join(available())}.")
    del _REGISTRY[name]


def available():
    """Names of the registered schemes (sorted)."""
    return sorted(_REGISTRY)


def get(name):
    """The scheme class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"Unknown method {name!r}; available methods: {', '.join(available())}.") from None


@dataclass
class RunSetup:
    """Values that one simulation run sets, and where to read its results.

    Attributes
    ----------
    values : dict
        ``(population, variable) -> value`` set before the run (Brian2 ``run_args`` in standalone).
    window_starts : dict
        ``population -> step`` where its window for image 0 begins in this run.
    readout_step : int or None
        Step inside the output window at which the output is final (None: the whole window).
    parameters : dict
        The user-facing parameter values of this run (for reports).
    image_index_targets : tuple
        ``(population, variable)`` pairs set, for every batch, to the index of the batch's first
        image in the whole input (e.g. so that random input streams differ between batches).
    """

    values: dict = field(default_factory=dict)
    window_starts: dict = field(default_factory=dict)
    readout_step: int = None
    parameters: dict = field(default_factory=dict)
    image_index_targets: tuple = ()

    def batch_values(self, first_image):
        """The run values of the batch whose first image has index ``first_image``."""
        values = dict(self.values)
        values.update({target: int(first_image) for target in self.image_index_targets})
        return values


class Scheme(abc.ABC):
    """Abstract base class of coding schemes: the contract between a scheme and the rest of brianconv.

    :func:`~brianconv.convert` calls, in this order, :meth:`check` (can the scheme represent the
    layer graph?), :meth:`check_input` (on the calibration data), :meth:`calibrate` and
    :meth:`describe`; :meth:`~brianconv.SpikingNetwork.simulate` calls :meth:`check_input`,
    :meth:`setup` (the run-time parameters of one run) and, per batch, :meth:`decode`.

    A subclass sets ``name`` (its registry name, see :func:`register`), ``Options`` (a frozen
    dataclass of its options, their defaults and rules: :mod:`brianconv.schemes.options`),
    ``activations`` and ``ops`` (what it represents), and
    implements the two abstract methods :meth:`describe` and :meth:`setup`; instantiating a
    subclass that misses one raises ``TypeError``. Every other method has a default that a
    scheme overrides where its code needs it. ``tests/example_scheme.py`` is a complete scheme
    in under 100 lines.

    Parameters
    ----------
    **options
        Scheme options (the fields of :attr:`Options`); unknown names and invalid values raise
        :class:`~brianconv.errors.InvalidValueError` naming the option and what it accepts.
    """

    #: The name the scheme is registered under (``convert(model, method=name)``).
    name = None
    #: ANN activations of hidden layers the scheme represents.
    activations = frozenset({"relu"})
    #: Layer types (:attr:`brianconv.graph.Layer.op`) the scheme represents.
    ops = frozenset({"input", "linear", "conv", "avgpool", "maxpool"})
    #: The scheme's options (a frozen :class:`~brianconv.schemes.options.Options` dataclass): the
    #: keyword arguments ``convert(..., **options)`` accepts, their defaults and rules.
    Options = Options
    #: True when :meth:`describe` handles hidden Linear/Conv2d layers without activation that only
    #: residual ``add`` layers read (:func:`folds_into_reader`): they get no neurons and
    #: :func:`incoming_projections` composes them into the sum's projections and bias.
    folds_linear_layers = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__ and cls.name and cls.Options.scheme == Options.scheme:
            cls.Options.scheme = cls.name  # the options' messages name the first scheme that declares them

    def __init__(self, **options):
        self.options = self.Options.create(**options)

    # -- what every scheme implements ------------------------------------------------------
    @abc.abstractmethod
    def describe(self, graph, calibration):
        """The network that represents ``graph``.

        Parameters
        ----------
        graph : brianconv.graph.LayerGraph
            The traced model, already accepted by :meth:`check`.
        calibration : brianconv.calibration.Calibration
            What :meth:`calibrate` returned.

        Returns
        -------
        brianconv.description.NetworkDescription
        """

    @abc.abstractmethod
    def setup(self, description, **parameters):
        """The values one simulation run sets and where to read its results.

        The keyword arguments a subclass declares in its signature are its run-time parameters
        (:meth:`run_parameters`): values applied to the built network without rebuilding it
        (thresholds, a readout step, a seed). A scheme without any declares
        ``setup(self, description)``.

        Parameters
        ----------
        description : brianconv.description.NetworkDescription
            What :meth:`describe` returned.
        **parameters
            The run-time parameters of this run (``simulate(x, **parameters)``).

        Returns
        -------
        RunSetup
        """

    # -- defaults a scheme overrides where needed ------------------------------------------
    def check(self, graph):
        """Raise :class:`~brianconv.errors.ConversionError` for layers this scheme cannot represent.

        Default: every layer's type is in :attr:`ops`, every hidden weighted layer has an
        activation in :attr:`activations` (the output may also have none or a softmax), except
        the layers :func:`folds_into_reader` folds into residual sums, in a scheme that sets
        :attr:`folds_linear_layers`.
        """
        for layer in graph:
            if layer.op not in self.ops:
                raise ConversionError(f"Method {self.name!r} cannot convert layer {layer.name!r} of type {layer.op!r}; "
                                      f"it supports {sorted(self.ops)}.")
            allowed = self.activations if layer is not graph.output else self.activations | {None, "softmax"}
            if folds_into_reader(graph, layer):
                if not self.folds_linear_layers:
                    raise ConversionError(
                        f"Method {self.name!r}: layer {layer.name!r} ({layer.op}) has no activation and feeds only "
                        f"residual additions ({', '.join(c.name for c in graph.consumers(layer.name))}), as in a "
                        f"ResNet block; {self.name!r} cannot fold such a layer into the sum yet. Use a method "
                        f"that does "
                        f"({', '.join(_folding_methods()) or 'none registered'}), or apply an activation to the layer.")
                continue
            if layer.is_weighted and layer is not graph.output and layer.activation is None:
                raise ConversionError(f"Method {self.name!r}: layer {layer.name!r} has no activation; hidden "
                                      f"weighted layers need one of {sorted(self.activations)}.")
            if layer.activation is not None and layer.activation not in allowed:
                raise ConversionError(f"Method {self.name!r} cannot represent the {layer.activation!r} activation "
                                      f"of layer {layer.name!r}; it represents {sorted(self.activations)}.")

    #: activations allowed right after a pooling layer, and the layer types the output may have
    pool_activations = frozenset({None, "relu"})
    output_ops = frozenset({"linear", "conv"})

    def check_pooling_and_output(self, graph):
        """Pooling followed only by :attr:`pool_activations` and no max-pool right after an average pool;
        the output one of :attr:`output_ops`."""
        for layer in graph:
            if layer.op in ("maxpool", "avgpool") and layer.activation not in self.pool_activations:
                raise ConversionError(f"{self.name}: layer {layer.name!r} applies {layer.activation!r} after pooling; "
                                      "only ReLU can be represented.")
            if layer.op == "maxpool" and graph[layer.inputs[0]].op == "avgpool":
                raise ConversionError(f"{self.name}: max-pooling {layer.name!r} directly after average pooling is not "
                                      "supported; average-pool after the max-pool instead.")
        if graph.output.op not in self.output_ops:
            raise ConversionError(f"{self.name}: the output layer {graph.output.name!r} must be "
                                  f"{' or '.join(sorted(self.output_ops))}, not {graph.output.op}.")

    #: True when the code carries only values >= 0 (spike times, spike counts, rates):
    #: :func:`~brianconv.simulation.convert` then shifts the input by its lower bound
    #: (:mod:`brianconv.folding`), so the network receives ``x - low >= 0``.
    needs_nonnegative_input = False

    def check_input(self, x):
        """Raise :class:`~brianconv.errors.InvalidValueError` for inputs the code cannot carry.

        ``x`` (np.ndarray, shape ``(N, *input_shape)``) is the calibration data in ``convert``
        and the simulated inputs in ``simulate``. Default: negative inputs are rejected by a
        scheme that codes values >= 0 (:attr:`needs_nonnegative_input`); any other finite input
        is accepted.
        """
        if self.needs_nonnegative_input and np.min(x) < 0:
            raise InvalidValueError(
                f"Method {self.name!r} codes input values >= 0 and received negative inputs (minimum "
                f"{np.min(x):.3g}). brianconv.convert() handles inputs normalised as in training (negative values): "
                "it shifts them by their lower bound and folds the shift into the first layer. Pass the normalised "
                "calibration data (or input_range=(low, high)) to convert() and simulate the network it returns "
                "on inputs normalised the same way.")

    def check_run_input(self, description, x):
        """Check (or warn about) the inputs ``x`` that ``simulate`` passes to the network, shape ``(N, *input_shape)``.

        Called after :meth:`check_input` with the network's inputs (shifted where the network reads
        ``x - low``). Default: nothing; inputs of a shifted network are checked against the
        calibrated range by :meth:`brianconv.folding.InputShift.apply`.
        """

    def calibrate(self, graph, x):
        """Each layer's activation scale from the calibration data ``x``, shape ``(N, *input_shape)``.

        Default: the ``percentile`` option (100, the maximum, for schemes without one) of every
        layer's positive ANN activations (:func:`brianconv.calibration.calibrate`). Schemes that
        derive their scales differently (ttfs's error-minimising search, tdsnn's scales of the
        coded network) or warn about clipping override it.

        Returns
        -------
        brianconv.calibration.Calibration
        """
        return calibrate_scales(graph, x, getattr(self.options, "percentile", 100.0))

    def unsupported_perturbations(self):
        """``knob -> reason`` for the perturbation knobs (:mod:`brianconv.perturbations`) this scheme's code
        cannot take; ``convert(..., perturbations=...)`` rejects them with the reason. Default: none."""
        return {}

    @classmethod
    def run_parameters(cls):
        """Names of the run-time parameters (the keyword arguments of :meth:`setup`), sorted.

        Returns None when ``setup`` takes ``**parameters`` (any name is passed on to it).
        """
        signature = inspect.signature(cls.setup)
        kinds = {p.kind for p in signature.parameters.values()}
        if inspect.Parameter.VAR_KEYWORD in kinds:
            return None
        names = list(signature.parameters)[2:]  # after self and description
        return sorted(name for name in names if signature.parameters[name].kind in
                      (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))

    def check_run_parameters(self, parameters):
        """Raise :class:`~brianconv.errors.InvalidValueError` naming the unknown run-time parameters.

        ``parameters`` is a mapping or a sequence of names; the error lists the valid names
        (:meth:`run_parameters`). Returns ``parameters``.
        """
        valid = self.run_parameters()
        unknown = [name for name in parameters if valid is not None and name not in valid]
        if unknown:
            accepted = f"its run-time parameters are {', '.join(valid)}" if valid else "it has no run-time parameters"
            raise InvalidValueError(f"Unknown run-time parameter(s) {', '.join(map(repr, unknown))} for method "
                                    f"{self.name!r}; {accepted}.")
        return parameters

    def population_values(self, description, result, population):
        """The values (ANN units) a population carries, shape ``(N, size)``, from recorded spikes.

        ``result`` is a :class:`~brianconv.simulation.SimulationResult` of a run that monitored
        ``population`` (``simulate(..., spikes=[population])``). Users call
        :meth:`brianconv.SpikingNetwork.values`. Default: the scheme decodes no hidden population.
        """
        raise InvalidValueError(f"Method {self.name!r} does not decode hidden populations.")

    def evaluation_lags(self, description, population):
        """Per-neuron steps between the start of an image's window and the step the neuron answers it.

        ``None`` (default): every neuron answers inside the window of its image. Schemes whose
        neurons answer later (AMOS neuron ``k`` evaluates ``k`` steps after its window starts,
        ``k`` windows later when pipelined) return an int array of shape ``(size,)``, so that
        monitored spikes are attributed to the right image.
        """
        return None

    def stage_marks(self, description, setup, population):
        """``[(step, label), ...]``: stage boundaries inside ``population``'s window, for plots (default: none)."""
        return []

    def decode(self, description, setup, records, n_images):
        """Decoded outputs, shape ``(n_images, n_outputs)``, from one batch's records.

        Default: the output variable at ``readout_step`` of each image's output window, divided by
        ``description.output_unit``.
        """
        start = setup.window_starts[description.output_population]
        steps = start + np.arange(n_images) * description.period_steps + setup.readout_step
        return records.output[steps] / float(description.output_unit)


def _folding_methods():
    """Names of the registered schemes that fold linear layers into residual sums."""
    return [name for name in available() if _REGISTRY[name].folds_linear_layers]


# -- residual additions, concatenations and clipped ReLU -----------------------------------------

def carries_non_negative(graph, name, input_non_negative):
    """True if layer ``name`` can only carry values >= 0 (ReLU-like activation, or a max, mean, sum or
    concatenation of such values); the input counts as non-negative if ``input_non_negative``."""
    layer = graph[name]
    if layer.op == "input":
        return input_non_negative
    if layer.activation in ("relu", "clipped_relu"):
        return True
    return layer.activation is None and layer.op in ("maxpool", "avgpool", "cat", "add") and all(
        carries_non_negative(graph, source, input_non_negative) for source in layer.inputs)


def check_branch_activations(graph, scheme, input_non_negative):
    """Raise where an ``add`` or ``cat`` applies an activation its spiking version does not.

    A ``cat`` has no neurons (:data:`FOLDED_OPS`): its activation must be the identity on what it
    carries, i.e. none, or ReLU of non-negative branches. A hidden ``add`` is a population of
    ReLU neurons: without an activation of its own its terms must be non-negative.

    Parameters
    ----------
    graph : LayerGraph
    scheme : str
        The scheme's name, for the message.
    input_non_negative : bool
        Whether the scheme's input carries only values >= 0 (checked on the data by ``check_input``).
    """
    for layer in graph:
        if layer.op not in ("add", "cat") or layer is graph.output:
            continue
        branches = all(carries_non_negative(graph, source, input_non_negative) for source in layer.inputs)
        if layer.op == "cat" and layer.activation not in (None, "relu") or \
                layer.op == "cat" and layer.activation == "relu" and not branches:
            raise ConversionError(f"{scheme}: the concatenation {layer.name!r} applies {layer.activation!r}, which "
                                  "its readers' synapses cannot apply; move the activation into each branch.")
        if layer.op == "add" and layer.activation is None and not branches:
            raise ConversionError(f"{scheme}: the sum {layer.name!r} has no activation but a term that can be "
                                  "negative; its neurons would apply ReLU. Apply ReLU after the sum (as ResNets do).")


def limit_scales_to_clips(graph, calibration):
    """Keep the scale of every ``clipped_relu`` layer at or below its clip ``a`` (in place).

    A scheme's code saturates at the scale ``lambda``: one spike per step (rate), the earliest
    spike time (ttfs). With ``lambda = a`` that saturation *is* the clip, exactly. The calibrated
    percentile of values the ANN already clipped is at most ``a``, and equals ``a`` once more than
    ``100 - percentile`` % of the positive activations reach the clip; below that the percentile
    is kept (values in ``(lambda, a]`` saturate at ``lambda``, the percentile's usual trade of rare
    outliers for resolution). A scale above ``a`` (e.g. from a threshold search) would let values
    above the clip through, so it is lowered to ``a``.
    """
    for layer in graph:
        if layer.activation == "clipped_relu":
            calibration.scales[layer.name] = min(calibration.scales[layer.name], clip_of(layer))


def clip_of(layer):
    """The upper end ``a`` of a clipped ReLU (``min(max(x, 0), a)``: ReLU6, hardtanh(0, a), clamp(0, a)),
    None for any other activation."""
    if layer.activation != "clipped_relu":
        return None
    clip = layer.params.get("clip")
    if clip is None or not np.isfinite(clip) or clip <= 0:
        raise ConversionError(f"Layer {layer.name!r} has a clipped ReLU without a positive finite "
                              f"params['clip'] (got {clip!r}); it must give the upper end a of min(max(x, 0), a).")
    return float(clip)
