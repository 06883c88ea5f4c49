"""Converted networks and their simulation results.

:func:`convert` is the one entry point from a torch model to a :class:`SpikingNetwork`:
trace the model into a layer graph, check it against the scheme, calibrate, describe. A
:class:`SpikingNetwork` simulates any number of inputs on Brian2's runtime or C++ standalone
device and returns a :class:`SimulationResult`.
"""

import logging
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import schemes
from .builder import DEVICES, BuildInfo, MonitorRequest, RuntimeProgram, build
from .errors import AccuracyWarning, CalibrationError, DataNotFoundError, InvalidValueError, ShapeError
from .folding import fold_affine_layers, fold_input_shift, input_shift_for, pool_branches_before_concatenation
from .graph import trace

__all__ = ["convert", "load_network", "SpikingNetwork", "SimulationResult"]

logger = logging.getLogger(__name__)


def convert(model, method="ttfs", calibration=None, input_shape=None, input_range=None, **options):
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
    **options
        Options of the scheme (see its class docstring), e.g. ``t_max=64`` for ``"ttfs"``.

    Returns
    -------
    SpikingNetwork
    """
    scheme = schemes.get(method)(**options)
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
    description = scheme.describe(described, calibrated)
    return SpikingNetwork(graph, scheme, calibrated, description, input_shift=shift, described_graph=described)


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


@dataclass
class SimulationResult:
    """What :meth:`SpikingNetwork.simulate` returns.

    Attributes
    ----------
    predictions : np.ndarray of int, shape (N,)
        Argmax of the decoded outputs.
    outputs : np.ndarray, shape (N, n_outputs)
        Decoded output values, in the ANN's units (comparable with the ANN's logits).
    ann_outputs : np.ndarray, shape (N, n_outputs)
        The ANN's outputs on the same inputs (float64 forward pass of the layer graph).
    spike_counts : dict
        ``population -> int array (N,)``: spikes of that population for each image.
    synaptic_ops_per_population : dict
        ``population -> int array (N,)``: spikes times their exact fan-out, for each image.
    neurons : dict
        ``population -> number of neurons``.
    labels : np.ndarray or None
        The labels passed to ``simulate``.
    spikes : dict
        ``population -> (image, neuron, step)`` arrays for populations monitored with ``spikes=``;
        ``step`` counts from the start of that population's window for the image (a neuron that
        answers an image after its window, see :meth:`Scheme.evaluation_lags`, is still
        attributed to that image, with ``step`` beyond the window).
    stage_marks : dict
        ``population -> [(step, label), ...]``: stage boundaries in the window of each population
        monitored with ``states=`` (e.g. silent/spiking stage of ttfs, ticking phase of tdsnn).
    states : dict
        ``population -> {variable: array (N, window_steps, n_recorded)}`` for ``states=`` monitors,
        one window (the image period) per image, from the population's window start.
    parameters : dict
        The run-time parameters used.
    output_trace : np.ndarray or None
        With ``simulate(..., trace=True)``: the output variable in ANN units over each image's
        output window, shape (N, period_steps, n_outputs) (accuracy as a function of time).
    synaptic_ops_trace : np.ndarray or None
        With ``trace=True``: synaptic operations of all populations accumulated over the first
        ``k + 1`` steps of each population's window, shape (N, period_steps) (operations spent
        up to a given latency; the last column equals :attr:`synaptic_ops`).
    window_starts : dict
        ``population -> step`` where its window for an image begins, counted from the image's entry.
    monitored_indices : dict
        ``population -> neuron indices`` recorded by ``states=``.
    device : str
    timing : dict
        Wall-clock seconds ``build`` (0 when an existing program was reused) and ``simulate``;
        ``compiled`` is True when this call compiled C++ code; ``peak_memory_mb`` is the largest
        resident memory of one standalone run process (None on the runtime device).
    """

    predictions: np.ndarray
    outputs: np.ndarray
    ann_outputs: np.ndarray
    spike_counts: dict
    synaptic_ops_per_population: dict
    neurons: dict
    labels: np.ndarray = None
    spikes: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    device: str = ""
    timing: dict = field(default_factory=dict)
    dt: float = None
    output_trace: np.ndarray = None
    synaptic_ops_trace: np.ndarray = None
    window_starts: dict = field(default_factory=dict)
    monitored_indices: dict = field(default_factory=dict)
    stage_marks: dict = field(default_factory=dict)

    @property
    def n_images(self):
        return len(self.predictions)

    @property
    def synaptic_ops(self):
        """Synaptic operations per image, shape (N,): every spike times its fan-out, all populations."""
        return sum(self.synaptic_ops_per_population.values())

    @property
    def total_spikes(self):
        """Spikes per image, shape (N,), all populations (the input included)."""
        return sum(self.spike_counts.values())

    @property
    def spikes_per_neuron(self):
        """Mean spikes per neuron and image, over all populations (the input included)."""
        return float(np.mean(self.total_spikes) / sum(self.neurons.values()))

    def spikes_per_neuron_by_population(self):
        """``population -> mean spikes per neuron and image``."""
        return {name: float(np.mean(count) / self.neurons[name]) for name, count in self.spike_counts.items()}

    @property
    def ann_predictions(self):
        return np.argmax(self.ann_outputs, axis=1)

    @property
    def accuracy(self):
        """Fraction of correct predictions (needs ``labels``)."""
        if self.labels is None:
            raise InvalidValueError("No labels were passed to simulate(); pass labels=... to get accuracies.")
        return float(np.mean(self.predictions == self.labels))

    @property
    def ann_accuracy(self):
        if self.labels is None:
            raise InvalidValueError("No labels were passed to simulate(); pass labels=... to get accuracies.")
        return float(np.mean(self.ann_predictions == self.labels))

    @property
    def agreement(self):
        """Fraction of images where the SNN and the ANN predict the same class."""
        return float(np.mean(self.predictions == self.ann_predictions))

    def summary(self):
        """A few lines with accuracy, spikes and operations."""
        lines = [f"{self.n_images} images on {self.device}"]
        if self.labels is not None:
            lines.append(f"accuracy: ANN {100 * self.ann_accuracy:.2f} %, SNN {100 * self.accuracy:.2f} %")
        lines.append(f"SNN/ANN agreement: {100 * self.agreement:.2f} %")
        lines.append(f"spikes per neuron: {self.spikes_per_neuron:.4f}; synaptic operations per image: "
                     f"{np.mean(self.synaptic_ops):,.0f}")
        return "\n".join(lines)


class SpikingNetwork:
    """A converted network: its layer graph, scheme, calibration and network description.

    Attributes
    ----------
    graph : brianconv.graph.LayerGraph
        The model's layer graph; it reads the user's inputs (``result.ann_outputs``).
    scheme : brianconv.schemes.Scheme
    calibration : brianconv.calibration.Calibration
    description : brianconv.description.NetworkDescription
    input_shift : brianconv.folding.InputShift or None
        Per-channel input bounds; the network receives ``x - input_shift.low`` (None: ``x``).
    described_graph : brianconv.graph.LayerGraph
        The graph the scheme described: ``graph`` with the input shift folded in (``graph``
        itself without a shift); it reads ``x - input_shift.low``.
    """

    input_shift = None  # networks saved before input shifts existed
    _described_graph = None

    def __init__(self, graph, scheme, calibration, description, input_shift=None, described_graph=None):
        self.graph = graph
        self.scheme = scheme
        self.calibration = calibration
        self.description = description
        self.input_shift = input_shift
        self._described_graph = described_graph
        self._programs = {}
        self._network = None

    def __repr__(self):
        return f"<SpikingNetwork {self.description.summary()}>"

    @property
    def described_graph(self):
        return self._described_graph if self._described_graph is not None else self.graph

    def __getstate__(self):  # compiled programs and Brian2 objects stay behind
        return dict(self.__dict__, _programs={}, _network=None)

    def save(self, path):
        """Write the converted network (graph, scheme, calibration, description) to ``path`` (pickle)."""
        import pickle

        with open(path, "wb") as handle:
            pickle.dump(self, handle)

    @property
    def network(self):
        """The Brian2 objects (runtime device, batches of one image): ``.groups``, ``.synapses``, monitors.

        Inspect equations, thresholds and weights here, e.g. ``snn.network.groups['conv_0'].equations``.
        """
        if self._network is None:
            self._network = RuntimeProgram(self.description, 1).objects
        return self._network

    def program(self, device="cpp_standalone", batch_size=1, monitors=None, build_root=None):
        """The :class:`~brianconv.builder.Program` for ``device`` and ``batch_size`` (built once, then reused)."""
        return self._program(_check_device(device), _check_batch_size(batch_size, 1), monitors, build_root)[0]

    def _program(self, device, batch_size, monitors, build_root):
        """The program and the :class:`~brianconv.builder.BuildInfo` of this call (nothing built: zero)."""
        monitors = monitors or MonitorRequest()
        key = (device, batch_size, monitors.key(), str(build_root))
        if key in self._programs:
            return self._programs[key], BuildInfo()
        program, info = build(self.description, device, batch_size, monitors, build_root)
        self._programs[key] = program
        return program, info

    def values(self, result, population):
        """The values a population carries, in ANN units, shape ``(N, size)``, decoded from ``result``.

        Parameters
        ----------
        result : SimulationResult
            A run of this network that monitored the population (``simulate(..., spikes=[name])``),
            except for the output, whose values are ``result.outputs``.
        population : str
            A population name (``snn.description.populations``) or the name of the layer it
            represents (``snn.graph``).

        Returns
        -------
        np.ndarray, shape (N, size)
        """
        name = self._population_name(population)
        if name == self.description.output_population:
            return np.array(result.outputs)
        return self.scheme.population_values(self.description, result, name)

    def _population_name(self, name):
        """The population called ``name``, or the one that represents layer ``name``."""
        d = self.description
        populations = [p.name for p in d.populations]
        if name in populations:
            return name
        carriers = [p.name for p in d.populations if p.layer == name and p.role != "helper"]
        if len(carriers) == 1:
            return carriers[0]
        layers = {p.layer: p.name for p in d.populations if p.role != "helper" and p.layer is not None}
        raise InvalidValueError(f"No population or layer {name!r}; populations: {', '.join(populations)}; layers "
                                f"(population): {', '.join(f'{k} ({v})' for k, v in layers.items())}.")

    def simulate(self, x, device="cpp_standalone", labels=None, batch_size=None, n_workers=1, spikes=(),
                 states=None, build_root=None, progress=None, trace=False, **parameters):
        """Simulate the network on inputs ``x``.

        Parameters
        ----------
        x : array or tensor, shape (N, *input_shape)
            Preprocessed like the calibration data; the network receives ``x - input_shift.low``
            (values below ``low`` clipped, with an AccuracyWarning), the ANN outputs of the result
            are computed on ``x`` itself.
        device : {"cpp_standalone", "runtime", "cython", "numpy"}
            C++ standalone (compiled once, then run per batch) or Brian2's runtime device (with
            Cython where a compiler exists; "cython"/"numpy" force the code generation target).
        labels : array of int, shape (N,), optional
            For accuracies in the result.
        batch_size : int, optional
            Images per simulation run (default: N rounded up to a power of two, at most 512).
            The compiled program depends on it: keep it fixed to reuse builds.
        n_workers : int or "auto"
            Standalone runs executed in parallel processes, at least 1 ("auto": one per core).
        spikes : sequence of str
            Spiking populations whose spikes are recorded (see ``SimulationResult.spikes`` and
            :meth:`values`).
        states : dict, optional
            ``population -> (variables, neuron indices)`` recorded at every step.
        build_root : path, optional
            Folder for compiled programs (default ``$BRIANCONV_BUILD_DIR`` or ``~/.cache/brianconv/builds``).
        progress : callable, optional
            Called with the number of images finished after each batch.
        trace : bool
            Keep the decoded output at every step of each image's window (``result.output_trace``).
        **parameters
            Run-time parameters of the scheme (e.g. ``t_max=``, ``scales=`` for ttfs; all of them:
            ``snn.scheme.run_parameters()``).

        Raises
        ------
        brianconv.errors.InvalidValueError
            For an unknown device, run-time parameter or population, or a batch size or number
            of workers that is not a positive integer, before anything is built.

        Returns
        -------
        SimulationResult
        """
        x = self.graph.check_input(x)
        x_network = self.input_shift.apply(x) if self.input_shift is not None else x  # clipped at low, warns
        self.scheme.check_input(x_network)
        self.scheme.check_run_input(self.description, x_network)
        n = len(x)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ShapeError(f"labels has shape {labels.shape}; expected ({n},) to match the inputs.")
        device, n_workers = _check_device(device), _check_n_workers(n_workers)
        batch_size = _check_batch_size(batch_size, n)
        setup = self.scheme.setup(self.description, **self.scheme.check_run_parameters(parameters))
        monitors = _monitor_request(self.description, spikes, states)
        program, build_info = self._program(device, batch_size, monitors, build_root)
        flat = x_network.reshape(n, -1)
        batches = [flat[start:start + batch_size] for start in range(0, n, batch_size)]
        batch_values = [setup.batch_values(start) for start in range(0, n, batch_size)]
        start_time = time.perf_counter()
        records = _run_batches(program, batches, batch_values, n_workers, progress)
        elapsed = time.perf_counter() - start_time
        return self._assemble(x, labels, batches, records, setup, device, build_info, elapsed, trace, monitors)

    def _assemble(self, x, labels, batches, records, setup, device, build_info, elapsed, trace, monitors):
        d = self.description
        outputs, spikes, synops, traces, synop_traces = [], {}, {}, [], []
        monitored_spikes, monitored_states = {}, {}
        for batch, rec in zip(batches, records):
            outputs.append(self.scheme.decode(d, setup, rec, len(batch)))
            if trace:
                start = setup.window_starts[d.output_population]
                window = rec.output[start:start + len(batch) * d.period_steps] / float(d.output_unit)
                traces.append(window.reshape(len(batch), d.period_steps, -1))
                synop_traces.append(sum(_per_image_trace(rec.synop_count[:, k], setup.window_starts[p.name],
                                                         d.period_steps, len(batch))
                                        for k, p in enumerate(d.populations)))
            for k, p in enumerate(d.populations):
                start = setup.window_starts[p.name]
                for totals, counts in ((spikes, rec.spike_count), (synops, rec.synop_count)):
                    totals.setdefault(p.name, []).append(_per_image(counts[:, k], start, d.period_steps, len(batch)))
            offset = sum(len(o) for o in outputs[:-1])
            for name, (index, step) in rec.spikes.items():
                lags = self.scheme.evaluation_lags(d, name)
                lag = 0 if lags is None else np.asarray(lags)[index]
                image, local = np.divmod(step - setup.window_starts[name] - lag, d.period_steps)
                keep = (image >= 0) & (image < len(batch)) & (step >= setup.window_starts[name])
                monitored_spikes.setdefault(name, []).append(
                    (image[keep] + offset, index[keep], (local + lag)[keep]))
            for name, variables in rec.states.items():
                start = setup.window_starts[name]
                for variable, values in variables.items():
                    windows = values[start:start + len(batch) * d.period_steps]
                    monitored_states.setdefault(name, {}).setdefault(variable, []).append(
                        windows.reshape(len(batch), d.period_steps, -1))
        outputs = np.concatenate(outputs)
        _warn_silent_populations(d, spikes, sum(len(b) for b in batches))
        monitored = {k: tuple(np.concatenate(parts) for parts in zip(*v)) for k, v in monitored_spikes.items()}
        checked = (_populations_to_check(self.graph, d, self.calibration, monitored)
                   if len(x) >= LOST_NEURON_MIN_IMAGES else [])
        ann_outputs, peaks = _ann_forward(self.graph, x, {d.population(name).layer for name in checked})
        result = SimulationResult(
            predictions=np.argmax(outputs, axis=1), outputs=outputs, ann_outputs=ann_outputs,
            spike_counts={k: np.concatenate(v).astype(np.int64) for k, v in spikes.items()},
            synaptic_ops_per_population={k: np.concatenate(v).astype(np.int64) for k, v in synops.items()},
            neurons={p.name: p.size for p in d.populations}, labels=labels,
            spikes=monitored,
            states={k: {var: np.concatenate(parts) for var, parts in v.items()} for k, v in monitored_states.items()},
            parameters=setup.parameters, device=device, dt=float(d.dt),
            output_trace=np.concatenate(traces) if trace else None,
            synaptic_ops_trace=np.concatenate(synop_traces) if trace else None,
            window_starts=dict(setup.window_starts),
            monitored_indices={name: np.asarray(indices) for name, (_, indices) in monitors.states.items()},
            stage_marks={name: self.scheme.stage_marks(d, setup, name) for name in monitors.states},
            timing=dict(build=build_info.seconds, simulate=elapsed, compiled=build_info.compiled,
                        peak_memory_mb=max((r.peak_memory_mb or 0.0) for r in records) or None))
        _warn_lost_neurons(d, self.calibration, checked, monitored, peaks, len(x))
        return result


def _warn_silent_populations(description, spikes, n_images, min_images=20):
    """An AccuracyWarning for hidden populations that never spiked on a reasonable number of images."""
    if n_images < min_images:
        return
    for population in description.populations:
        if population.role == "hidden" and population.threshold and sum(c.sum() for c in spikes[population.name]) == 0:
            warnings.warn(f"Population {population.name!r} emitted no spike for {n_images} images: the information "
                          "stops there. Check its thresholds (calibration data, percentile, run-time scales).",
                          AccuracyWarning, stacklevel=3)


#: Lost neurons are looked for on runs of at least this many images (see :func:`_warn_lost_neurons`).
LOST_NEURON_MIN_IMAGES = 20
#: ... among neurons whose ANN activation reaches this fraction of their layer's scale.
LOST_NEURON_FRACTION = 0.1


def _populations_to_check(graph, description, calibration, spikes):
    """Monitored hidden populations with one neuron per ANN unit and a calibrated scale."""
    return [name for name in spikes if description.population(name).role == "hidden"
            and description.population(name).layer in calibration.scales
            and description.population(name).size == graph[description.population(name).layer].size]


def _ann_forward(graph, x, layers, chunk=256):
    """The ANN's outputs (N, n_out) and, for each of ``layers``, the largest activation of every
    unit over the images (flattened); one float64 pass in chunks of ``chunk`` images."""
    if not layers:
        return graph.forward(x), {}
    outputs, peaks = [], {layer: -np.inf for layer in layers}
    for start in range(0, len(x), chunk):
        out, activations = graph.forward(x[start:start + chunk], record=True)
        outputs.append(out)
        for layer in layers:
            values = activations[layer]
            peaks[layer] = np.maximum(peaks[layer], values.reshape(len(values), -1).max(axis=0))
    return np.concatenate(outputs), peaks


def _warn_lost_neurons(description, calibration, populations, spikes, peaks, n_images):
    """An AccuracyWarning for monitored neurons that never spiked although the ANN needs them.

    A neuron of a hidden population (one neuron per ANN unit) whose ANN activation reaches
    :data:`LOST_NEURON_FRACTION` of its layer's scale on at least one of the images, yet that
    never spiked on any of them, drops information the ANN uses.
    """
    for name in populations:
        population = description.population(name)
        spiked = np.zeros(population.size, dtype=bool)
        spiked[spikes[name][1]] = True
        needed = peaks[population.layer] >= LOST_NEURON_FRACTION * calibration.scales[population.layer]
        lost = np.nonzero(needed & ~spiked)[0]
        if len(lost):
            warnings.warn(f"{len(lost)} of {population.size} neurons of population {name!r} never spiked in {n_images} "
                          f"images although their ANN activation reaches {LOST_NEURON_FRACTION:.0%} of the layer's "
                          f"scale or more (e.g. neuron {lost[0]}): their information is lost. Lower the thresholds "
                          "(threshold_scale, percentile) or lengthen the code (t_max, duration).",
                          AccuracyWarning, stacklevel=3)


def _per_image(cumulative, start, period, n_images):
    """Counts per image from a cumulative count recorded at every step."""
    padded = np.concatenate([[0.0], cumulative])
    edges = start + np.arange(n_images + 1) * period  # window of image n: [edges[n], edges[n+1])
    return np.rint(padded[edges[1:]] - padded[edges[:-1]])


def _per_image_trace(cumulative, start, period, n_images):
    """Counts accumulated over the first 1 ... period steps of each image's window, shape (n_images, period)."""
    padded = np.concatenate([[0.0], cumulative])
    first = start + np.arange(n_images)[:, None] * period
    return np.rint(padded[first + 1 + np.arange(period)] - padded[first])


def _run_batches(program, batches, batch_values, n_workers, progress):
    """Run every batch (with its own run values), keeping up to ``n_workers`` runs in flight where the
    program runs in the background (:attr:`~brianconv.builder.Program.parallel`), one at a time otherwise."""
    in_flight = n_workers if program.parallel else 1
    records = [None] * len(batches)
    running = []
    for index, (batch, values) in enumerate(zip(batches, batch_values)):
        running.append((index, len(batch), program.start(batch, values)))
        if len(running) >= in_flight:
            _finish_first(program, running, records, progress)
    while running:
        _finish_first(program, running, records, progress)
    return records


def _finish_first(program, running, records, progress):
    index, size, handle = running.pop(0)
    records[index] = program.finish(handle)
    if progress:
        progress(size)


# -- argument checks ------------------------------------------------------------------------------

def _check_device(device):
    if device not in DEVICES:
        raise InvalidValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}.")
    return device


def _check_n_workers(n_workers):
    """``"auto"`` (one per core) or a positive integer."""
    if n_workers == "auto":
        return os.cpu_count() or 1
    if isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) or n_workers < 1:
        raise InvalidValueError(f"n_workers must be a positive integer or 'auto'; got {n_workers!r}.")
    return int(n_workers)


def _check_batch_size(batch_size, n_images):
    """A positive integer; None: ``n_images`` rounded up to a power of two, at most 512."""
    if batch_size is None:
        return min(1 << int(np.ceil(np.log2(max(n_images, 1)))), 512)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive integer (images per run); got {batch_size!r}.")
    return int(batch_size)


def _monitor_request(description, spikes, states):
    """The :class:`~brianconv.builder.MonitorRequest` of ``spikes=`` and ``states=``, checked against the network."""
    spikes = (spikes,) if isinstance(spikes, str) else tuple(spikes or ())
    states = dict(states or {})
    populations = [p.name for p in description.populations]
    spiking = [p.name for p in description.populations if p.threshold is not None]
    for argument, names in (("spikes", spikes), ("states", states)):
        unknown = [name for name in names if name not in populations]
        if unknown:
            raise InvalidValueError(f"{argument}= names unknown population(s) {', '.join(map(repr, unknown))}; the "
                                    f"populations are {', '.join(populations)}.")
    silent = [name for name in spikes if name not in spiking]
    if silent:
        raise InvalidValueError(f"spikes= names population(s) {', '.join(map(repr, silent))} without spikes (no "
                                f"threshold; the output population's values are result.outputs); spiking "
                                f"populations: {', '.join(spiking)}.")
    return MonitorRequest(spikes, states)
