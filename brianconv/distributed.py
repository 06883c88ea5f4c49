"""Simulations and parameter sweeps on a Dask cluster: the ``executor=`` argument.

``SpikingNetwork.simulate(x, executor=client)`` makes every batch of images a Dask task, and
``brianconv.sweep(snn, x, grid, executor=client)`` every grid point. ``client`` is a
``dask.distributed.Client`` (of a ``LocalCluster``, of dask-jobqueue's ``SLURMCluster`` or
``PBSCluster``, or connected to a scheduler address) or the address itself
(``"tcp://host:8786"``). Dask is an optional extra: ``pip install brianconv[dask]``; the rest of
brianconv never imports it.

How the compiled program reaches the workers (:func:`worker_program`, once per worker process):

1. The client builds the program as it would without a cluster (C++ standalone: compiled once
   into its fingerprint folder, :mod:`brianconv.builder.cache`).
2. Workers that see that folder (same machine or a shared file system) run it in place.
3. If some worker does not see it, the client packs the folder's run-time files (the binary, its
   static arrays and the manifest; not the sources) and every such worker unpacks them, once, into
   its own build cache (``$BRIANCONV_BUILD_DIR`` or ``~/.cache/brianconv/builds`` there).
4. A worker whose platform differs from the client's (:func:`platform_tag`: operating system,
   machine, C library, Brian2 version) cannot run the client's binary: it compiles the
   description itself, once, into that cache.

Runtime devices (``"runtime"``, ``"cython"``, ``"numpy"``) build their Brian2 objects once per
worker process and run one batch at a time there (Brian2's runtime device is not thread-safe).

Results merge in input order: the records of batch ``k`` are the result of task ``k``, whichever
worker ran it and however often. A task whose worker dies is rescheduled by Dask on another
worker (up to ``distributed.scheduler.allowed-failures`` times, 3 by default, then
:class:`~brianconv.errors.ClusterError`); runs are deterministic (Poisson inputs are seeded per
image, :mod:`brianconv.schemes.rate`), so a rerun gives the same records and no image is lost or
counted twice.
"""

import contextlib
import io
import json
import logging
import os
import platform
import shutil
import sys
import tarfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import brian2

from .builder import MANIFEST, MonitorRequest, build, default_build_root
from .errors import ClusterError, InvalidValueError, MissingExtraError

__all__ = ["INSTALL_COMMAND", "require_distributed", "connect", "check_executor", "ProgramSpec", "platform_tag",
           "worker_program", "run_batches", "sweep_points", "pack_build", "unpack_build"]

logger = logging.getLogger(__name__)

#: The command that installs this module's optional dependency.
INSTALL_COMMAND = "pip install brianconv[dask]"
#: Seconds :func:`connect` waits for a scheduler given by its address.
CONNECT_TIMEOUT = 10.0


# -- the client side: executors ------------------------------------------------------------------

def require_distributed():
    """Import and return :mod:`dask.distributed`, or raise :class:`~brianconv.errors.MissingExtraError`."""
    try:
        import dask.distributed
    except ImportError as exc:
        raise MissingExtraError(f"executor= runs simulations on a Dask cluster, and Dask's distributed scheduler is "
                                f"not installed: {INSTALL_COMMAND}") from exc
    return dask.distributed


_CLIENTS = {}


def connect(address, timeout=None):
    """A ``dask.distributed.Client`` of the scheduler at ``address`` (one per address, reused).

    Parameters
    ----------
    address : str
        The scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
    timeout : float, optional
        Seconds to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).

    Raises
    ------
    brianconv.errors.ClusterError
        When no scheduler answers at ``address`` within ``timeout``.
    """
    distributed = require_distributed()
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    client = _CLIENTS.get(address)
    if client is None or client.status != "running":
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"No Dask scheduler answered at {address!r} within {timeout:g} s ({exc}). Start one "
                               "there ('dask scheduler', or a dask-jobqueue cluster's scheduler_address), check the "
                               "host, port and firewall, or pass executor=dask.distributed.Client(...).") from exc
        _CLIENTS[address] = client
    return client


def check_executor(executor):
    """The ``dask.distributed.Client`` that ``executor`` names, or None for no cluster.

    ``executor`` is None, a running ``Client``, or a scheduler address (:func:`connect`).
    """
    if executor is None:
        return None
    distributed = require_distributed()
    if isinstance(executor, str):
        return connect(executor)
    if not isinstance(executor, distributed.Client):
        raise InvalidValueError(f"executor must be a dask.distributed.Client or a scheduler address such as "
                                f"'tcp://host:8786'; got {type(executor).__name__}.")
    if executor.status != "running":
        raise ClusterError(f"The Dask client is {executor.status!r}, not running (closed, or its scheduler is gone): "
                           "connect a new one, e.g. dask.distributed.Client('tcp://host:8786').")
    return executor


# -- what a worker needs to obtain the program ---------------------------------------------------

def platform_tag():
    """Where a compiled binary runs: operating system, machine, C library and Brian2 version."""
    return "-".join([sys.platform, platform.machine(), *platform.libc_ver(), brian2.__version__])


@dataclass(frozen=True)
class ProgramSpec:
    """How a worker obtains the client's program (sent to each worker once).

    Attributes
    ----------
    description : brianconv.description.NetworkDescription
    device : str
        The ``device=`` of ``simulate``.
    batch_size : int
    monitors : brianconv.builder.MonitorRequest
    directory : Path or None
        The client's standalone build folder (None on runtime devices).
    fingerprint : str
        The build's fingerprint (its manifest's on standalone, else the description's).
    platform : str
        :func:`platform_tag` of the client, where the binary was compiled.
    """

    description: object
    device: str
    batch_size: int
    monitors: MonitorRequest
    directory: Path
    fingerprint: str
    platform: str

    @classmethod
    def of(cls, program, device, monitors):
        """The spec of a built ``program`` (:func:`brianconv.builder.build`)."""
        directory = getattr(program, "directory", None)
        directory = None if directory is None else Path(directory).resolve()  # workers may have another cwd
        fingerprint = (program.manifest["fingerprint"] if directory is not None
                       else program.description.fingerprint(program.batch_size))
        return cls(program.description, device, program.batch_size, monitors or MonitorRequest(), directory,
                   fingerprint, platform_tag())

    @property
    def cache_key(self):
        """Names the program within one worker process."""
        return self.device, self.fingerprint, self.monitors.key(), self.directory and self.directory.name


def is_build(directory, fingerprint):
    """True when ``directory`` holds a finished standalone build of ``fingerprint``."""
    try:
        with open(Path(directory) / MANIFEST) as handle:
            return json.load(handle)["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError):
        return False


#: Parts of a standalone build folder that only compilation needs (not shipped to workers).
_SOURCE_FOLDERS = {"code_objects", "brianlib", "results"}
_SOURCE_SUFFIXES = {".cpp", ".h", ".o", ".deps", ".pyx"}


def pack_build(directory):
    """The run-time files of a standalone build folder as a gzipped tar archive (bytes)."""
    directory = Path(directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if (path.is_dir() or relative.parts[0] in _SOURCE_FOLDERS or path.suffix in _SOURCE_SUFFIXES
                    or path.name == "makefile"):
                continue
            archive.add(path, arcname=str(relative))
    return buffer.getvalue()


def unpack_build(archive, directory):
    """Unpack :func:`pack_build`'s ``archive`` into ``directory``, atomically (scratch folder, then rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.parent / f"{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as files:
            files.extractall(scratch, filter="data")
        (scratch / "results").mkdir(exist_ok=True)
        try:
            os.rename(scratch, directory)
        except OSError:  # another worker process on this machine unpacked it first
            if not (directory / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("Unpacked the shipped build into %s", directory)


# -- the worker side -----------------------------------------------------------------------------

_PROGRAMS = {}
_PROGRAMS_LOCK = threading.Lock()
_RUNTIME_LOCK = threading.Lock()


def worker_program(spec, archive=None):
    """The program of ``spec`` in this (worker) process: obtained once, then reused.

    ``archive`` is :func:`pack_build` of the client's folder, or None when every worker sees it.
    """
    with _PROGRAMS_LOCK:
        if spec.cache_key not in _PROGRAMS:
            _PROGRAMS[spec.cache_key] = _obtain_program(spec, archive)
        return _PROGRAMS[spec.cache_key]


def _obtain_program(spec, archive):
    """Run the client's folder in place, or unpack the shipped one, or (another platform) compile here."""
    if spec.directory is None:
        return build(spec.description, spec.device, spec.batch_size, spec.monitors)[0]
    if is_build(spec.directory, spec.fingerprint):
        root = spec.directory.parent
    else:
        root = default_build_root()
        local = root / spec.directory.name
        if archive is not None and spec.platform == platform_tag() and not is_build(local, spec.fingerprint):
            unpack_build(archive, local)
    program, info = build(spec.description, spec.device, spec.batch_size, spec.monitors, root)
    if info.compiled:
        logger.info("Compiled %s on this worker (platform %s, the client's is %s)", info.directory, platform_tag(),
                    spec.platform)
    return program


def _one_at_a_time(program):
    """Runtime programs share Brian2's global state: one run per process at a time."""
    return contextlib.nullcontext() if program.parallel else _RUNTIME_LOCK


def _run_batch(spec, archive, stimulus, values):
    """A Dask task: the :class:`~brianconv.builder.Records` of one batch."""
    program = worker_program(spec, archive)
    with _one_at_a_time(program):
        return program.run(stimulus, values)


def _sweep_point(snn, x, labels, spec, archive, options, parameters, row):
    """A Dask task: ``row(parameters, result, labels)`` of one grid point simulated on this worker."""
    program = worker_program(spec, archive) if spec.directory is not None else None
    root = program.directory.parent if program is not None else None
    with _RUNTIME_LOCK if program is None else contextlib.nullcontext():
        result = snn.simulate(x, labels=labels, device=spec.device, build_root=root, **options, **parameters)
    return row(parameters, result, labels)


def _identity(value):
    return value


# -- the client side: tasks ----------------------------------------------------------------------

def _hold(client, value):
    """A future of ``value`` that the workers fetch once each; recomputed by Dask if its holder dies."""
    return client.submit(_identity, value, pure=False, key=f"brianconv-{type(value).__name__}-{uuid.uuid4().hex}")


def _ship(client, spec):
    """Futures of ``spec`` and of the packed build (None when every worker sees the client's folder)."""
    archive = None
    if spec.directory is not None:
        sees = client.run(is_build, spec.directory, spec.fingerprint)
        blind = sorted(worker for worker, seen in sees.items() if not seen)
        if blind:
            logger.info("%d of %d workers do not see %s: shipping its run-time files", len(blind), len(sees),
                        spec.directory)
            archive = _hold(client, pack_build(spec.directory))
    return _hold(client, spec), archive


def _gather_in_order(client, futures, sizes, progress, what):
    """The futures' results in their order, calling ``progress(size)`` as each task finishes."""
    distributed = require_distributed()
    index = {future.key: k for k, future in enumerate(futures)}
    results = [None] * len(futures)
    try:
        for future in distributed.as_completed(futures):
            k = index[future.key]
            results[k] = future.result()
            if progress:
                progress(sizes[k])
    except distributed.KilledWorker as exc:
        raise ClusterError(f"The workers running {what} {index.get(exc.task, '?')} died too often (Dask's "
                           f"distributed.scheduler.allowed-failures): {exc}. Usually they run out of memory: lower "
                           "batch_size or give the workers more memory.") from exc
    finally:
        client.cancel([future for future in futures if not future.done()])
    return results


def run_batches(client, program, device, monitors, batches, batch_values, progress=None):
    """The :class:`~brianconv.builder.Records` of every batch, in input order, each batch a Dask task.

    Parameters
    ----------
    client : dask.distributed.Client
    program : brianconv.builder.Program
        Built on the client (:meth:`SpikingNetwork.program`).
    device : str
    monitors : brianconv.builder.MonitorRequest
    batches : list of np.ndarray, each (n <= batch_size, n_inputs)
    batch_values : list of dict
        Run-time values of each batch (``RunSetup.batch_values``).
    progress : callable, optional
        Called with the number of images of each batch as it finishes.
    """
    spec, archive = _ship(client, ProgramSpec.of(program, device, monitors))
    call = uuid.uuid4().hex
    futures = [client.submit(_run_batch, spec, archive, batch, values, pure=False, key=f"brianconv-batch-{k}-{call}")
               for k, (batch, values) in enumerate(zip(batches, batch_values))]
    return _gather_in_order(client, futures, [len(batch) for batch in batches], progress, "batch")


def sweep_points(client, snn, x, points, row, labels=None, device="cpp_standalone", progress=None, **options):
    """``row(parameters, result, labels)`` for every grid point, in order, each point a Dask task.

    The program is built on the client first (``options``: ``batch_size``, ``spikes``, ``states``,
    ``build_root``, as for :meth:`SpikingNetwork.simulate`); every worker then simulates whole points.

    Parameters
    ----------
    client : dask.distributed.Client
    snn : SpikingNetwork
    x : array, shape (N, *input_shape)
    points : list of dict
        ``parameter -> value`` of each grid point.
    row : callable
        ``row(parameters, result, labels) -> dict``, a module-level function (it runs on the workers).
    progress : callable, optional
        Called with 1 as each point finishes.
    """
    from .batches import _check_batch_size, _monitor_request

    batch_size = _check_batch_size(options.pop("batch_size", None), len(x))
    monitors = _monitor_request(snn.description, options.get("spikes"), options.get("states"))
    program = snn.program(device, batch_size, monitors, options.pop("build_root", None))
    spec, archive = _ship(client, ProgramSpec.of(program, device, monitors))
    network, inputs, targets = (_hold(client, value) for value in (snn, x, labels))
    call = uuid.uuid4().hex
    options = dict(options, batch_size=batch_size)
    futures = [client.submit(_sweep_point, network, inputs, targets, spec, archive, options, parameters, row,
                             pure=False, key=f"brianconv-point-{k}-{call}")
               for k, parameters in enumerate(points)]
    return _gather_in_order(client, futures, [1] * len(points), progress, "grid point")
