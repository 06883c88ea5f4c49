"""The batch runner of :meth:`~brianconv.simulation.SpikingNetwork.simulate` and the checks of its arguments."""

import numbers
import os

import numpy as np

from .builder import DEVICES, MonitorRequest
from .errors import InvalidValueError


def _run_batches(program, batches, batch_values, n_workers, progress):
    """Run every batch (with its own run values), keeping up to ``n_workers`` runs in flight where the
    program runs in the background (:attr:`~brianconv.builder.Program.parallel`), one at a time otherwise."""
    in_flight = n_workers if program.parallel else 1
    records = [None] * len(batches)
    running = []
    for index, (batch, values) in enumerate(zip(batches, batch_values)):
        if program.parallel and len(running) == in_flight:
            # every slot is busy: once the oldest run ends, start this batch on the freed core and only
            # then read the oldest run's results, so the core does not wait for Python
            program.wait(running[0][2])
        running.append((index, len(batch), program.start(batch, values)))
        if len(running) > in_flight or not program.parallel:
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
