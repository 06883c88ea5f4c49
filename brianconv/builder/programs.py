"""Programs: built networks that simulate batches of images, on either of Brian2's devices.

Both implement :class:`Program` (``start`` a batch, ``finish`` it and get its :class:`Records`,
or ``run`` both at once), so the code that runs batches never asks which device it has:

* :class:`RuntimeProgram` — Brian2's runtime device (Cython, or numpy where no compiler exists);
  the network is stored once and restored before every batch. A run happens inside ``start``.
* :class:`StandaloneProgram` — a binary compiled by Brian2's C++ standalone device (see
  :func:`brianconv.builder.cache.build_standalone`). Every batch of images or parameter values is
  a new process of the same binary, set up with Brian2's ``run_args`` protocol (``name=value`` or
  ``name=file`` on the command line, each run with its own results folder), so nothing is
  recompiled and several runs can go in parallel.
"""

import abc
import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from brian2 import prefs, second

from ..errors import BuildError
from .objects import MonitorRequest, create_objects, float_precision, set_before_run, stimulus_rows

__all__ = ["Records", "BuildInfo", "Program", "RuntimeProgram", "StandaloneProgram", "build_runtime",
           "find_compiler", "process_peak_mb", "COMPILE_ARGS", "MANIFEST"]

#: Compiler flags for generated C++ (standalone and Cython). ``-ffp-contract=off`` keeps
#: ``a*b + c`` from being fused into one rounding, so runtime and standalone round alike.
COMPILE_ARGS = ["-w", "-O3", "-ffp-contract=off"]
#: The file in a standalone build folder that describes the binary's inputs and outputs.
MANIFEST = "brianconv_build.json"


def find_compiler():
    """Path of the C++ compiler Brian2 will call, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


@dataclass
class Records:
    """What one batch run returns (all arrays indexed by absolute step from 0).

    Attributes
    ----------
    output : np.ndarray, shape (n_steps, n_outputs)
        The output variable, recorded at the end of every step.
    spike_count, synop_count : np.ndarray, shape (n_steps, n_populations)
        Cumulative spikes and synaptic operations (spikes times fan-out) per population.
    spikes : dict
        ``population -> (neuron index array, step array)`` for requested spike monitors.
    states : dict
        ``population -> {variable: array (n_steps, n_recorded)}`` for requested state monitors.
    peak_memory_mb : float or None
        Peak resident memory of the process that ran the batch (standalone runs).
    """

    output: np.ndarray
    spike_count: np.ndarray
    synop_count: np.ndarray
    spikes: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    peak_memory_mb: float = None


@dataclass(frozen=True)
class BuildInfo:
    """What building a program cost: returned next to the :class:`Program` by the build functions.

    Attributes
    ----------
    seconds : float
        Wall-clock seconds spent building (0: an existing program was reused).
    compiled : bool
        True when the build compiled C++ code (a standalone build not found in the cache).
    directory : Path or None
        The standalone build folder.
    """

    seconds: float = 0.0
    compiled: bool = False
    directory: Path = None


class Program(abc.ABC):
    """A built network that simulates batches of up to :attr:`batch_size` images.

    Attributes
    ----------
    device : str
        ``"runtime"`` or ``"cpp_standalone"`` (for reports; callers need not branch on it).
    parallel : bool
        True when runs started with :meth:`start` proceed in the background, so that several
        can be in flight at once; False when :meth:`start` completes the run itself.
    description : brianconv.description.NetworkDescription
    batch_size : int
    """

    device = None
    parallel = False

    @abc.abstractmethod
    def start(self, stimulus, values=None):
        """Begin simulating one batch; returns the handle :meth:`finish` takes.

        Parameters
        ----------
        stimulus : np.ndarray, shape (n <= batch_size, n_inputs)
            The batch's images, flattened.
        values : dict, optional
            ``(population, variable) -> value`` set before the run (:class:`~brianconv.schemes.RunSetup`).
        """

    @abc.abstractmethod
    def finish(self, handle):
        """Wait for the run started as ``handle`` and return its :class:`Records`."""

    def wait(self, handle):
        """Block until the run started as ``handle`` stops computing, without reading its results
        (nothing to wait for where :attr:`parallel` is False)."""

    def run(self, stimulus, values=None):
        """Simulate one batch and return its :class:`Records` (:meth:`start`, then :meth:`finish`)."""
        return self.finish(self.start(stimulus, values))


# ---------------------------------------------------------------------------------------------
# runtime device
# ---------------------------------------------------------------------------------------------

class RuntimeProgram(Program):
    """A description on Brian2's runtime device, restored to its initial state before each run.

    ``target`` is Brian2's code generation target: ``"cython"``, ``"numpy"`` or None (Cython
    where a compiler exists, numpy otherwise).
    """

    device = "runtime"

    def __init__(self, description, batch_size, monitors=None, target=None):
        self.description = description
        self.batch_size = batch_size
        self.monitors = monitors or MonitorRequest()
        self.target = target
        with _runtime_target(target), float_precision(description.precision):
            self.objects = create_objects(description, batch_size, self.monitors)
            self.objects.network.store("initial")
        # Network.restore leaves delays as they are: keep the ones that before_run statements change
        self._initial_delays = {q.name: np.array(self.objects.synapses[q.name].delay_[:]) * second
                                for q in description.projections if q.before_run}
        self.n_steps = description.duration_steps(batch_size)

    def start(self, stimulus, values=None):
        """Simulate one batch now, in this process; the handle is its :class:`Records`."""
        o = self.objects
        with _runtime_target(self.target), float_precision(self.description.precision):
            o.network.restore("initial")
            o.stimulus.values[:] = stimulus_rows(stimulus, self.batch_size, self.description.n_inputs)
            for (population, variable), value in (values or {}).items():
                setattr(o.groups[population], variable, value)
            for name, delays in self._initial_delays.items():
                o.synapses[name].delay = delays
            set_before_run(o, self.description)
            o.network.run(self.n_steps * self.description.dt, namespace={})
        dt = float(self.description.dt)
        return Records(
            output=np.asarray(getattr(o.output_monitor, self.description.output_variable + "_")).T.copy(),
            spike_count=np.asarray(o.count_monitor.spikes_).T.copy(),
            synop_count=np.asarray(o.count_monitor.synops_).T.copy(),
            spikes={name: (np.asarray(m.i_).copy(), np.rint(np.asarray(m.t_) / dt).astype(np.int64))
                    for name, m in o.spike_monitors.items()},
            states={name: {v: np.asarray(getattr(m, v + "_")).T.copy() for v in self.monitors.states[name][0]}
                    for name, m in o.state_monitors.items()},
        )

    def finish(self, handle):
        """The records of a run :meth:`start` already completed."""
        return handle


def build_runtime(description, batch_size, monitors=None, target=None):
    """A :class:`RuntimeProgram` for ``description`` and its :class:`BuildInfo`."""
    start = time.perf_counter()
    program = RuntimeProgram(description, batch_size, monitors, target)
    return program, BuildInfo(seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _runtime_target(target=None):
    """Runtime device with ``target``, by default Cython where a compiler exists and numpy otherwise."""
    old_target = prefs.codegen.target
    old_args = prefs.codegen.cpp.extra_compile_args_gcc
    prefs.codegen.target = target or ("cython" if find_compiler() and _has_cython() else "numpy")
    prefs.codegen.cpp.extra_compile_args_gcc = COMPILE_ARGS
    try:
        yield
    finally:
        prefs.codegen.target = old_target
        prefs.codegen.cpp.extra_compile_args_gcc = old_args


def _has_cython():
    try:
        import Cython  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# C++ standalone device
# ---------------------------------------------------------------------------------------------

@dataclass
class _StandaloneRun:
    """A run in progress: its process, results folder and memory watch."""

    process: subprocess.Popen
    results: Path
    memory: "_MemoryWatch"


class StandaloneProgram(Program):
    """A compiled C++ standalone network, run any number of times through ``run_args``.

    Parameters
    ----------
    directory : Path
        The build folder holding the ``main`` binary and :data:`MANIFEST`.
    description : brianconv.description.NetworkDescription
    """

    device = "cpp_standalone"
    parallel = True

    def __init__(self, directory, description):
        self.directory = Path(directory)
        self.description = description
        with open(self.directory / MANIFEST) as handle:
            self.manifest = json.load(handle)
        self.batch_size = self.manifest["batch_size"]
        self.n_steps = self.manifest["n_steps"]

    def run(self, stimulus, values=None, results_dir=None):
        """Simulate one batch (``results_dir``: where the binary writes, removed after reading)."""
        return self.finish(self.start(stimulus, values, results_dir))

    def start(self, stimulus, values=None, results_dir=None):
        """Launch one run of the binary in the background."""
        results = Path(results_dir or tempfile.mkdtemp(prefix="run-", dir=_scratch_dir()))
        try:
            results.mkdir(parents=True, exist_ok=True)
            args = ["--results_dir", str(results) + os.sep]
            rows = stimulus_rows(stimulus, self.batch_size, self.description.n_inputs)
            args.append(self._file_arg("stimulus.values", rows, results))
            for (population, variable), value in (values or {}).items():
                args.append(self._value_arg(f"{population}.{variable}", value, results))
            with open(results / "stdout.txt", "wb") as out, open(results / "stderr.txt", "wb") as err:
                process = subprocess.Popen([str(self.directory / "main")] + args, cwd=self.directory, stdout=out,
                                           stderr=err)
        except OSError as exc:
            shutil.rmtree(results, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                raise BuildError(f"The disk is full: could not write the run files of {self.directory} to {results} "
                                 f"({exc}). Free space on that disk (runs write to /dev/shm where available, else "
                                 "$TMPDIR).") from exc
            raise
        return _StandaloneRun(process, results, _MemoryWatch(process.pid))

    def wait(self, handle):
        handle.process.wait()

    def finish(self, handle):
        """Wait for a run started by :meth:`start` and read its results (the folder is removed).

        The returned records carry ``peak_memory_mb``: the run's maximum resident memory.
        """
        process, results = handle.process, handle.results
        try:
            process.wait()
            err = (results / "stderr.txt").read_bytes().decode(errors="replace")
            if process.returncode != 0:
                signal = f" (killed by signal {-process.returncode})" if process.returncode < 0 else ""
                raise BuildError(f"The compiled network in {self.directory} exited with code {process.returncode}"
                                 f"{signal}: {err[-2000:]}")
            if "Error" in err or "Cannot set" in err:
                raise BuildError(f"The compiled network rejected its run arguments: {err[-2000:]}")
            out = (results / "stdout.txt").read_bytes().decode(errors="replace")
            if "Error writing output file" in out:  # Brian2's binary reports this on stdout and exits with 0
                raise BuildError(f"The compiled network in {self.directory} could not write its results to {results} "
                                 "(is the disk full?). Free space on that disk (runs write to /dev/shm where "
                                 f"available, else $TMPDIR): {out[-2000:]}")
            records = self._read(results)
            records.peak_memory_mb = handle.memory.peak_mb()
            return records
        finally:
            shutil.rmtree(results, ignore_errors=True)

    def _file_arg(self, key, array, results):
        spec = self.manifest["settable"][key]
        array = np.ascontiguousarray(array, dtype=spec["dtype"])
        if array.size != spec["size"]:
            raise BuildError(f"{key} needs {spec['size']} values, got {array.size}.")
        path = results / f"arg_{key.replace('.', '_')}.dat"
        array.tofile(path)
        return f"{spec['name']}={path}"

    def _value_arg(self, key, value, results):
        if key not in self.manifest["settable"]:
            raise BuildError(f"{key} cannot be set at run time; settable: {sorted(self.manifest['settable'])}.")
        array = np.asarray(value, dtype=self.manifest["settable"][key]["dtype"])
        if array.size == 1:
            return f"{self.manifest['settable'][key]['name']}={array.item()!r}"
        return self._file_arg(key, array, results)

    def _read(self, results):
        m = self.manifest
        read = lambda spec: _read_array(results, spec)  # noqa: E731
        dt = float(self.description.dt)
        spikes = {name: (read(spec["i"]), np.rint(read(spec["t"]) / dt).astype(np.int64))
                  for name, spec in m["spike_monitors"].items()}
        states = {name: {v: read(s) for v, s in spec.items()} for name, spec in m["state_monitors"].items()}
        return Records(read(m["output"]), read(m["spikes"]), read(m["synops"]), spikes, states)


def process_peak_mb(pid="self"):
    """Peak resident memory (``VmHWM`` in ``/proc/<pid>/status``) of a process in MB, or None
    where ``/proc`` is absent."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    peak_kb = _status_field(text, "VmHWM")
    return None if peak_kb is None else int(peak_kb) / 1024.0


def _status_field(text, name):
    """The first word of field ``name`` in a ``/proc/<pid>/status`` text, or None."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    return None


class _MemoryWatch:
    """Samples a process's peak resident memory (``VmHWM`` in ``/proc``) every 50 ms until it exits.

    ``ru_maxrss`` from ``wait4`` would include the Python parent's memory copied at ``fork``; the
    high-water mark in ``/proc`` belongs to the binary alone. Returns None where ``/proc`` is absent.
    """

    def __init__(self, pid):
        import threading

        self.path = Path(f"/proc/{pid}/status")
        self.peak_kb = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stopped.is_set():
            try:
                text = self.path.read_text()
            except OSError:
                return
            peak_kb = _status_field(text, "VmHWM")
            if peak_kb is not None:
                self.peak_kb = max(self.peak_kb or 0, int(peak_kb))
            if "Z" in (_status_field(text, "State") or ""):
                return
            self.stopped.wait(0.05)

    def peak_mb(self):
        """The peak (MB) once the process has exited (the watch stops at once instead of finishing its sleep)."""
        self.stopped.set()
        self.thread.join(timeout=1.0)
        return None if self.peak_kb is None else self.peak_kb / 1024.0


def _read_array(folder, spec):
    data = np.fromfile(folder / spec["file"], dtype=spec["dtype"])
    if spec.get("columns"):
        data = data.reshape(-1, spec["columns"])
    return data


def _scratch_dir():
    """Results of a run are written here and removed after reading (RAM-backed where possible)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
