"""Plots of simulation results; every function returns a matplotlib ``Figure``.

Nothing here calls ``plt.show()``: save with ``fig.savefig(path)`` or show it yourself. The
functions read a :class:`~brianconv.simulation.SimulationResult` recorded with monitors
(``simulate(..., spikes=[...], states={...})``).
"""

import matplotlib.pyplot as plt
import numpy as np

from .errors import InvalidValueError

__all__ = ["membrane_traces", "raster"]


def _stage_marks(result):
    """Stage boundaries (in steps from the window start) a scheme reports through its parameters."""
    t_max = result.parameters.get("t_max")
    return [] if t_max is None else [t_max, 2 * t_max]


def membrane_traces(result, population, image=0, variable="v", threshold=None, unit=1e-3, ax=None):
    """Membrane potential of the monitored neurons of ``population`` during one image's window.

    Parameters
    ----------
    result : SimulationResult
        Recorded with ``states={population: ([variable], indices)}``.
    population : str
    image : int
        Which image of the batch.
    threshold : float, optional
        Threshold in volts, drawn as a dashed line; spikes are marked on it (triangles).
    unit : float
        Volts per plotted unit (1e-3: millivolts).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if population not in result.states or variable not in result.states[population]:
        raise InvalidValueError(f"{population}.{variable} was not recorded; simulate with "
                                f"states={{{population!r}: ([{variable!r}], indices)}}.")
    values = result.states[population][variable][image]  # (steps, neurons)
    steps = np.arange(values.shape[0])
    time_ms = steps * result.dt * 1e3
    fig, ax = _figure(ax)
    indices = result.monitored_indices.get(population, np.arange(values.shape[1]))
    for column in range(values.shape[1]):
        ax.plot(time_ms, values[:, column] / unit, lw=1.2, label=f"neuron {indices[column]}")
    if threshold is not None:
        ax.axhline(threshold / unit, color="k", ls="--", lw=1, label="threshold")
    for mark, name in zip(_stage_marks(result), ("silent | spiking", "end of spiking stage")):
        ax.axvline(mark * result.dt * 1e3, color="grey", ls=":", lw=1)
        ax.text(mark * result.dt * 1e3, ax.get_ylim()[1], " " + name, va="top", fontsize=8, color="grey")
    if population in result.spikes:
        img, neuron, local = result.spikes[population]
        for column, index in enumerate(indices):
            hit = (img == image) & (neuron == index)
            top = threshold / unit if threshold is not None else values.max() / unit
            ax.plot(local[hit] * result.dt * 1e3, np.full(hit.sum(), top), "v", color=f"C{column % 10}", ms=7)
    ax.set_xlabel("time since the window start (ms)")
    ax.set_ylabel(f"{variable} (mV)" if unit == 1e-3 else variable)
    ax.set_title(f"{population}: membrane potential, image {image}")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return fig


def raster(result, image=0, populations=None, ax=None):
    """Spike raster of one image: every monitored population in a band of equal height.

    The time axis is absolute within the image (steps since the image entered the input), so the
    layer-by-layer progression of the code is visible. Inside a band, neurons are ordered by
    index (channel-major), scaled to the band's height.
    """
    populations = [p for p in (populations or result.spikes) if p in result.spikes]
    if not populations:
        raise InvalidValueError("No spikes were recorded; simulate with spikes=[population names].")
    fig, ax = _figure(ax, size=(8, 1 + 0.8 * len(populations)))
    for band, name in enumerate(populations):
        img, neuron, local = result.spikes[name]
        hit = img == image
        start = result.window_starts[name]
        y = band + 0.05 + 0.9 * neuron[hit] / max(result.neurons[name], 1)
        ax.plot((local[hit] + start) * result.dt * 1e3, y, "|", ms=2, color=f"C{band % 10}")
        ax.axhline(band, color="lightgrey", lw=0.5)
    ax.set_yticks(np.arange(len(populations)) + 0.5)
    ax.set_yticklabels([f"{name}\n{result.neurons[name]} neurons, "
                        f"{int(np.sum(result.spikes[name][0] == image))} spikes" for name in populations], fontsize=7)
    ax.set_ylim(0, len(populations))
    ax.set_xlabel("time since the image entered the input (ms)")
    ax.set_title(f"Spike raster, image {image}")
    return fig


def _figure(ax, size=(7, 4)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    return fig, ax
