"""What a simulation returns (:class:`SimulationResult`) and how it is assembled from per-step records.

Per-image counts from cumulative counters, the ANN's outputs on the same inputs, and the
AccuracyWarnings about silent populations and lost neurons.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from .builder.programs import process_peak_mb
from .errors import AccuracyWarning, InvalidValueError

__all__ = ["SimulationResult"]


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
        resident memory of one standalone run process (None on the runtime device);
        ``bytes_per_synapse`` is that peak divided by the synapse count (None on the runtime
        device); ``python_peak_memory_mb`` is the peak resident memory of this Python process so far
        (it includes building the network).
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


def _timing(description, build_info, elapsed, records):
    """``SimulationResult.timing``: seconds, and the memory figures (MB, bytes per synapse)."""
    run_peak = max((r.peak_memory_mb or 0.0) for r in records) or None
    return dict(build=build_info.seconds, simulate=elapsed, compiled=build_info.compiled, peak_memory_mb=run_peak,
                python_peak_memory_mb=process_peak_mb(),
                bytes_per_synapse=None if run_peak is None else run_peak * 2**20 / max(description.n_synapses, 1))


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
