"""Plots of simulation results; every function returns a matplotlib ``Figure``.

Nothing here calls ``plt.show()``: save with ``fig.savefig(path)`` or show it yourself. The
functions read a :class:`~brianconv.simulation.SimulationResult` recorded with monitors
(``simulate(..., spikes=[...], states={...})``).
"""

import matplotlib.pyplot as plt
import numpy as np

from .errors import InvalidValueError

__all__ = ["membrane_traces", "raster", "accuracy_over_time", "activation_correlation", "layer_bars", "sweep_curves",
           "sweep_heatmap", "robustness_curves"]


def membrane_traces(result, population, image=0, variable="v", threshold=None, unit=1e-3, ax=None):
    """Membrane potential of the monitored neurons of ``population`` during one image's window.

    Stage boundaries the scheme reports (``result.stage_marks``: the silent and spiking stages of
    ttfs, the inhibited window and ticking phase of tdsnn) are drawn as dotted lines.

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
    for mark, name in result.stage_marks.get(population, []):
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


def accuracy_over_time(result, ax=None):
    """Accuracy of the decoded output at every step of the output window (needs ``trace=True`` and labels).

    For rate codes this is the accuracy-latency trade-off; for ttfs the output integrates during its
    silent stage and is final at ``t_max``.
    """
    if result.output_trace is None or result.labels is None:
        raise InvalidValueError("Simulate with trace=True and labels=... to plot accuracy over time.")
    correct = np.argmax(result.output_trace, axis=2) == result.labels[:, None]
    accuracy = 100 * correct.mean(axis=0)
    time_ms = np.arange(1, len(accuracy) + 1) * result.dt * 1e3
    fig, ax = _figure(ax, size=(6, 4))
    ax.plot(time_ms, accuracy, lw=1.5, label="SNN")
    ax.axhline(100 * result.ann_accuracy, color="k", ls="--", lw=1, label=f"ANN {100 * result.ann_accuracy:.2f} %")
    ax.set_xlabel("time since the output window began (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Accuracy over simulated time ({result.n_images} images)")
    ax.legend(loc="lower right")
    return fig


def activation_correlation(snn, result, x, populations=None, max_points=20000):
    """ANN activation against the value the SNN carries, one panel per population.

    ``result`` must come from ``snn.simulate(x, spikes=populations)``; the scheme decodes each
    population's spikes back into ANN units (:meth:`SpikingNetwork.values`).
    """
    populations = [p for p in (populations or result.spikes) if p in result.spikes and
                   snn.description.population(p).role != "input"]
    if not populations:
        raise InvalidValueError("No hidden population's spikes were recorded; simulate with spikes=[...].")
    _, ann = snn.graph.forward(x, record=True)
    fig, axes = plt.subplots(1, len(populations), figsize=(3.2 * len(populations), 3.3), constrained_layout=True,
                             squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], populations):
        layer = snn.description.population(name).layer
        expected = np.maximum(ann[layer].reshape(len(x), -1), 0).ravel()
        carried = snn.values(result, name).ravel()
        pick = rng.choice(len(expected), size=min(max_points, len(expected)), replace=False)
        ax.plot(expected[pick], carried[pick], ".", ms=2, alpha=0.4)
        top = max(expected.max(), carried.max(), 1e-12)
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        r = np.corrcoef(expected, carried)[0, 1] if expected.std() > 0 and carried.std() > 0 else np.nan
        ax.set_title(f"{name}\nr = {r:.3f}", fontsize=9)
        ax.set_xlabel("ANN activation")
    axes[0][0].set_ylabel("SNN value (decoded)")
    return fig


def layer_bars(result, ax=None):
    """Spikes per neuron and synaptic operations per image, per population (two panels)."""
    names = list(result.neurons)
    rates = result.spikes_per_neuron_by_population()
    ops = [float(np.mean(result.synaptic_ops_per_population[n])) for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    left.bar(names, [rates[n] for n in names], color="C0")
    left.set_ylabel("spikes per neuron per image")
    right.bar(names, ops, color="C1")
    right.set_ylabel("synaptic operations per image")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=35, labelsize=8)
    left.set_title(f"mean {result.spikes_per_neuron:.3f} spikes per neuron")
    right.set_title(f"total {sum(ops):,.0f} per image")
    return fig


def sweep_curves(table, x, y, hue=None, ax=None, over="seed", label=None):
    """``y`` against ``x`` from a :class:`~brianconv.sweep.SweepTable`, one line per value of ``hue``.

    A table with a column ``over`` (repeats, e.g. seeds) is summarised first
    (:meth:`~brianconv.sweep.SweepTable.summary`); a table with a ``<y>_std`` column (summarised)
    gets a band of one standard deviation around each line, and the range over the repeats
    (``<y>_min`` ... ``<y>_max``) as a lighter band. ``label`` names a single line (no ``hue``).
    """
    if over in table.columns and over not in (x, hue):
        table = table.summary(over)
    fig, ax = _figure(ax, size=(6, 4))
    groups = sorted(set(table.column(hue))) if hue else [None]
    for value in groups:
        rows = [row for row in table if hue is None or row[hue] == value]
        rows.sort(key=lambda row: row[x])
        xs, ys = [row[x] for row in rows], np.array([row[y] for row in rows], dtype=float)
        line, = ax.plot(xs, ys, "o-", label=label if hue is None else f"{hue} = {value}")
        if f"{y}_std" in table.columns:
            spread = np.array([row[f"{y}_std"] for row in rows])
            ax.fill_between(xs, ys - spread, ys + spread, color=line.get_color(), alpha=0.25, lw=0)
            ax.fill_between(xs, [row[f"{y}_min"] for row in rows], [row[f"{y}_max"] for row in rows],
                            color=line.get_color(), alpha=0.1, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue or label:
        ax.legend(fontsize=8)
    ax.set_title(f"{y} against {x}")
    return fig


def robustness_curves(tables, knob, y="accuracy", chance=None, ax=None):
    """``y`` against one perturbation, one curve (mean and spread over seeds) per scheme.

    Parameters
    ----------
    tables : dict
        ``scheme name -> SweepTable`` swept over ``knob`` (and ``seed``).
    knob : str
        The perturbation on the x axis (a column of every table).
    chance : float, optional
        Drawn as a dotted line (e.g. 0.1 for ten classes).
    """
    fig, ax = _figure(ax, size=(6, 4))
    for scheme, table in tables.items():
        sweep_curves(table, knob, y, ax=ax, label=scheme)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set_title(f"{y} against {knob}, one curve per scheme")
    ax.legend(fontsize=8)
    return fig


def sweep_heatmap(table, x, y, value, ax=None):
    """A heat map of ``value`` over the grid of ``x`` and ``y``."""
    xs, ys = sorted(set(table.column(x))), sorted(set(table.column(y)))
    grid = np.full((len(ys), len(xs)), np.nan)
    for row in table:
        grid[ys.index(row[y]), xs.index(row[x])] = row[value]
    fig, ax = _figure(ax, size=(6, 4))
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.colorbar(image, ax=ax, label=value)
    ax.set_title(value)
    return fig
