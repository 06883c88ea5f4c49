"""A converted network (:class:`SpikingNetwork`): build, simulate on any device, decode."""

import time

import numpy as np

from . import distributed
from . import perturbations as knobs
from .batches import _check_batch_size, _check_device, _check_n_workers, _monitor_request, _run_batches
from .builder import BuildInfo, MonitorRequest, RuntimeProgram, build
from .errors import InvalidValueError, ShapeError
from .results import (
    LOST_NEURON_MIN_IMAGES,
    SimulationResult,
    _ann_forward,
    _per_image,
    _per_image_trace,
    _populations_to_check,
    _timing,
    _warn_lost_neurons,
    _warn_silent_populations,
)

__all__ = ["SpikingNetwork"]


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
        They are made with the numpy code generation target, so inspecting compiles nothing; simulate
        with :meth:`simulate`.
        """
        if self._network is None:
            self._network = RuntimeProgram(self.description, 1, target="numpy").objects
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
                 states=None, build_root=None, progress=None, trace=False, executor=None, **parameters):
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
        executor : dask.distributed.Client or str, optional
            Run the batches as tasks on a Dask cluster (a client or a scheduler address; needs
            ``pip install brianconv[dask]``; ``n_workers`` is then unused): see :mod:`brianconv.distributed`.
        **parameters
            Run-time parameters of the scheme (e.g. ``t_max=``, ``scales=`` for ttfs; all of them:
            ``snn.scheme.run_parameters()``) and the perturbation knobs compiled by ``convert``
            (``snn.description.perturbations``).

        Raises
        ------
        brianconv.errors.InvalidValueError
            For an unknown device, run-time parameter or population, or a batch size or number
            of workers that is not a positive integer, before anything is built.
        brianconv.errors.MissingExtraError, brianconv.errors.ClusterError
            With ``executor=``: Dask is not installed, or the scheduler cannot be reached.

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
        client = distributed.check_executor(executor)
        batch_size = _check_batch_size(batch_size, n)
        setup = knobs.setup_run(self.scheme, self.description, parameters)
        monitors = _monitor_request(self.description, spikes, states)
        program, build_info = self._program(device, batch_size, monitors, build_root)
        flat = x_network.reshape(n, -1)
        batches = [flat[start:start + batch_size] for start in range(0, n, batch_size)]
        batch_values = [setup.batch_values(start) for start in range(0, n, batch_size)]
        start_time = time.perf_counter()
        if client is None:
            records = _run_batches(program, batches, batch_values, n_workers, progress)
        else:  # a Dask cluster: brianconv.distributed
            records = distributed.run_batches(client, program, device, monitors, batches, batch_values, progress)
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
            timing=_timing(d, build_info, elapsed, records))
        _warn_lost_neurons(d, self.calibration, checked, monitored, peaks, len(x))
        return result
