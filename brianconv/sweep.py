"""Parameter studies: one compiled network, a grid of run-time parameter values.

>>> table = brianconv.sweep(snn, x, {"t_max": [8, 16, 32], "threshold_scale": [0.5, 1.0]}, labels=y)  # doctest: +SKIP
>>> table.column("accuracy")                                                                         # doctest: +SKIP

Every point re-runs the same C++ standalone program with new ``run_args`` (no recompilation):
the parameters are the run-time parameters of the scheme (``t_max``, ``threshold_scale`` and
``scales`` for ``ttfs``) and the perturbation knobs compiled by ``convert(...,
perturbations=...)`` (:mod:`brianconv.perturbations`). Make ``seed`` a grid axis to repeat every
point with independent draws; :meth:`SweepTable.summary` gives the mean and spread over seeds.

Each row holds the parameters, accuracy (with labels), agreement with the ANN, spikes per neuron,
synaptic operations per image and the RMSE of the decoded outputs against the ANN's.
"""

import csv
import itertools
from dataclasses import dataclass

import numpy as np

from . import distributed
from .errors import InvalidValueError
from .perturbations import check_run_parameters

__all__ = ["sweep", "SweepTable"]


@dataclass
class SweepTable:
    """A tidy table: one row (dict) per parameter point."""

    rows: list

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    @property
    def columns(self):
        return list(self.rows[0]) if self.rows else []

    def column(self, name):
        """The values of one column as a numpy array."""
        return np.array([row[name] for row in self.rows])

    def summary(self, over="seed"):
        """Mean and spread over the values of ``over`` (e.g. repeated seeds), one row per other grid point.

        Every numeric result column ``c`` becomes ``c`` (the mean), ``c_std`` (standard deviation,
        ``ddof=1``; 0 for a single value), ``c_min`` and ``c_max``; ``n_<over>`` counts the repeats.
        The grid columns are those before ``accuracy``/``agreement`` in each row.

        Returns
        -------
        SweepTable
        """
        if over not in self.columns:
            raise InvalidValueError(f"The table has no column {over!r} to summarise over; columns: {self.columns}.")
        first = self.columns.index(_first_result(self.columns))
        grid = [c for c in self.columns[:first] if c != over]
        results = [c for c in self.columns[first:]
                   if isinstance(self.rows[0][c], (float, int, np.floating, np.integer))
                   and not isinstance(self.rows[0][c], (bool, np.bool_))]
        groups = {}
        for row in self.rows:
            groups.setdefault(tuple(repr(row[c]) for c in grid), []).append(row)
        summary = []
        for rows in groups.values():
            entry = {c: rows[0][c] for c in grid}
            entry[f"n_{over}"] = len(rows)
            for c in results:
                values = np.array([row[c] for row in rows], dtype=float)
                entry[c] = float(values.mean())
                entry[f"{c}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                entry[f"{c}_min"], entry[f"{c}_max"] = float(values.min()), float(values.max())
            summary.append(entry)
        return SweepTable(summary)

    def to_csv(self, path):
        """Write the table as CSV."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def __str__(self):
        widths = {c: max(len(c), 10) for c in self.columns}
        lines = ["  ".join(f"{c:>{widths[c]}}" for c in self.columns)]
        for row in self.rows:
            lines.append("  ".join(f"{_fmt(row[c]):>{widths[c]}}" for c in self.columns))
        return "\n".join(lines)


def _first_result(columns):
    """The first result column of a sweep row (the grid columns come before it)."""
    return next(c for c in columns if c in ("accuracy", "agreement"))


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sweep(snn, x, grid, labels=None, device="cpp_standalone", progress=True, executor=None, **simulate_options):
    """Simulate ``snn`` on ``x`` for every combination of the values in ``grid``.

    Parameters
    ----------
    snn : SpikingNetwork
    x : array, shape (N, *input_shape)
    grid : dict
        ``parameter -> list of values``: run-time parameters of the scheme
        (``snn.scheme.run_parameters()``); other names raise
        :class:`~brianconv.errors.InvalidValueError` before anything runs.
    labels : array of int, optional
    device : str
        ``"cpp_standalone"`` compiles once and re-runs the binary for every point.
    progress : bool
        Show a tqdm progress bar (one step per finished point).
    executor : dask.distributed.Client or str, optional
        Simulate the grid points as tasks on a Dask cluster (a client or a scheduler address;
        ``pip install brianconv[dask]``): the program is compiled once here, each worker simulates
        whole points, and the rows keep the grid's order (see :mod:`brianconv.distributed`).
    **simulate_options
        Passed to :meth:`SpikingNetwork.simulate` (``batch_size``, ``n_workers``, ``build_root``).

    Returns
    -------
    SweepTable
    """
    if not grid:
        raise InvalidValueError("The grid is empty: pass {parameter: [values, ...]}.")
    check_run_parameters(snn.scheme, snn.description, grid)
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(list(grid[name]) for name in names))]
    client = distributed.check_executor(executor)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(points), unit="point", desc="sweep")
    try:
        if client is None:
            rows = []
            for parameters in points:
                result = snn.simulate(x, labels=labels, device=device, **simulate_options, **parameters)
                rows.append(_row(parameters, result, labels))
                if bar is not None:
                    bar.update()
        else:  # a Dask cluster: brianconv.distributed
            rows = distributed.sweep_points(client, snn, x, points, _row,
                                            labels, device, bar.update if bar is not None else None,
                                            **simulate_options)
    finally:
        if bar is not None:
            bar.close()
    return SweepTable(rows)


def _row(parameters, result, labels):
    """One table row: the point's parameters and what its :class:`SimulationResult` measured."""
    row = dict(parameters)
    if labels is not None:
        row["accuracy"] = result.accuracy
    row["agreement"] = result.agreement
    row["spikes_per_neuron"] = result.spikes_per_neuron
    row["synaptic_ops"] = float(np.mean(result.synaptic_ops))
    row["rmse"] = float(np.sqrt(np.mean((result.outputs - result.ann_outputs) ** 2)))
    row["compiled"] = bool(result.timing["compiled"])
    return row
