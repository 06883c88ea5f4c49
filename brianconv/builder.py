"""One builder: a :class:`~brianconv.description.NetworkDescription` becomes Brian2 objects.

:func:`create_objects` makes the ``NeuronGroup``/``Synapses``/monitors of a description inside an
explicit ``brian2.Network`` (never Brian2's "magic" network). Two compiled forms run them:

* :class:`RuntimeProgram` — Brian2's runtime device (Cython, or numpy where no compiler exists);
  the network is stored once and restored before every batch.
* :class:`StandaloneProgram` — Brian2's C++ standalone device. The program is generated and
  compiled once per description (cached under a hash of the description, see
  :func:`build_standalone`), and every batch of images or parameter values is a new run of the
  same binary with Brian2's ``run_args`` protocol (``name=value`` or ``name=file`` on the command
  line, each run with its own results folder), so nothing is recompiled and several runs can go
  in parallel processes.

Both return the same :class:`Records` for a batch.
"""

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import brian2
from brian2 import Clock, Network, NeuronGroup, SpikeMonitor, StateMonitor, Synapses, TimedArray, prefs
from brian2.devices.device import get_device, reset_device, set_device

from .errors import BuildError

__all__ = ["Records", "MonitorRequest", "create_objects", "RuntimeProgram", "StandaloneProgram",
           "build_standalone", "build_runtime", "default_build_root", "find_compiler"]

logger = logging.getLogger(__name__)


class _RoundingOnlyGridFilter(logging.Filter):
    """Drop Brian2's "time grids not aligned" warning when the grids differ only by float rounding.

    The stimulus TimedArray steps ``period_steps * dt``; the ratio of the two steps can come out
    as e.g. 104.00000000000001, which Brian2 reports although its lookup rounds to the nearest
    row and reads the right image. Ratios that are really fractional still warn.
    """

    _RATIO = re.compile(r"ratio: 1/([0-9.eE+-]+)\)")

    def filter(self, record):
        match = self._RATIO.search(record.getMessage())
        if match is None:
            return True
        ratio = float(match.group(1))
        return abs(ratio - round(ratio)) > 1e-9 * ratio


_timedarray_logger = logging.getLogger("brian2.input.timedarray")
if not any(isinstance(f, _RoundingOnlyGridFilter) for f in _timedarray_logger.filters):
    _timedarray_logger.addFilter(_RoundingOnlyGridFilter())

#: Compiler flags for generated C++ (standalone and Cython). ``-ffp-contract=off`` keeps
#: ``a*b + c`` from being fused into one rounding, so runtime and standalone round alike.
COMPILE_ARGS = ["-w", "-O3", "-ffp-contract=off"]
MANIFEST = "brianconv_build.json"
#: Changes whenever the builder lays out the same description differently (part of the cache key).
BUILD_FORMAT = "synapses-source-major-1"


@dataclass
class MonitorRequest:
    """Extra recordings: spike monitors and state monitors on chosen populations.

    Attributes
    ----------
    spikes : list of str
        Populations whose every spike is recorded (index and step).
    states : dict
        ``population -> (variables, neuron indices)``, recorded at every step.
    """

    spikes: tuple = ()
    states: dict = field(default_factory=dict)

    def key(self):
        return repr((tuple(self.spikes), sorted((k, tuple(v[0]), tuple(np.asarray(v[1]).tolist()))
                                                   for k, v in self.states.items())))


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


def find_compiler():
    """Path of the C++ compiler Brian2 will call, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


def default_build_root():
    """Folder for compiled networks: ``$BRIANCONV_BUILD_DIR`` or ``~/.cache/brianconv/builds``."""
    root = os.environ.get("BRIANCONV_BUILD_DIR")
    return Path(root) if root else Path.home() / ".cache" / "brianconv" / "builds"


# ---------------------------------------------------------------------------------------------
# Brian2 objects
# ---------------------------------------------------------------------------------------------

@dataclass
class BrianObjects:
    """The Brian2 objects of one description, inside an explicit ``brian2.Network``."""

    network: Network
    groups: dict
    synapses: dict
    stimulus: TimedArray
    output_monitor: StateMonitor
    count_monitor: StateMonitor
    spike_monitors: dict
    state_monitors: dict
    counter_synapses: dict


def create_objects(description, batch_size, monitors=None):
    """Create the Brian2 objects of ``description`` for batches of ``batch_size`` images.

    The stimulus is a ``TimedArray`` named ``stimulus`` of shape ``(batch_size + 1, n_inputs)``
    (the extra last row is zeros, read after the last image) with one row per image period.
    Spikes and synaptic operations are counted by a helper group ``spike_counter`` (one neuron
    per population, fed by one synapse per neuron that adds 1 and the neuron's fan-out).
    """
    d = description
    monitors = monitors or MonitorRequest()
    clock = Clock(d.dt, name="brianconv_clock")
    stimulus = TimedArray(np.zeros((batch_size + 1, d.n_inputs)), dt=d.period_steps * d.dt, name="stimulus")
    groups = {}
    for p in d.populations:
        namespace = dict(p.namespace)
        if p.name == d.input_population:
            namespace["stimulus"] = stimulus
        group = NeuronGroup(p.size, p.full_equations, threshold=p.threshold, reset=p.reset,
                            events={name: event[0] for name, event in p.events.items()} or None,
                            method=p.method, namespace=namespace, name=p.name, clock=clock)
        for event, (_, code, *slot) in p.events.items():
            group.run_on_event(event, code, when=slot[0] if slot else "before_synapses")
        group.window_start = p.window_start
        group.period_steps = d.period_steps
        for variable, value in p.values.items():
            setattr(group, variable, value)
        groups[p.name] = group
    synapses = {}
    for q in d.projections:
        homogeneous = np.isscalar(q.delay_steps)
        syn = Synapses(groups[q.source], groups[q.target], model=q.model, on_pre=q.on_pre, name=q.name,
                       clock=clock, delay=q.delay_steps * d.dt if homogeneous and q.delay_steps else None)
        order = _source_major(q.connections)
        syn.connect(i=q.connections.pre[order], j=q.connections.post[order])
        if not homogeneous:
            syn.delay = np.asarray(q.delay_steps)[order] * d.dt
        if "w" in syn.variables:
            syn.w = q.connections.weight[order] * q.weight_unit
        synapses[q.name] = syn
    counter = NeuronGroup(len(d.populations), "spikes : 1\nsynops : 1", name="spike_counter", clock=clock)
    counter_synapses = {}
    fan_out = d.fan_out()
    for k, p in enumerate(d.populations):
        if p.threshold is None:  # never spikes: nothing to count
            continue
        syn = Synapses(groups[p.name], counter, "fanout : 1 (constant)",
                       on_pre="spikes_post += 1\nsynops_post += fanout", name=f"count_{p.name}", clock=clock)
        syn.connect(i=np.arange(p.size), j=np.full(p.size, k))
        syn.fanout = fan_out[p.name]
        counter_synapses[p.name] = syn
    output_monitor = StateMonitor(groups[d.output_population], d.output_variable, record=True, when="end",
                                  name="output_monitor", clock=clock)
    count_monitor = StateMonitor(counter, ["spikes", "synops"], record=True, when="end", name="count_monitor",
                                 clock=clock)
    spike_monitors = {name: SpikeMonitor(groups[name], name=f"spikes_{name}") for name in monitors.spikes}
    state_monitors = {name: StateMonitor(groups[name], list(variables), record=np.asarray(indices), when="end",
                                         name=f"states_{name}", clock=clock)
                      for name, (variables, indices) in monitors.states.items()}
    network = Network(list(groups.values()), list(synapses.values()), counter, list(counter_synapses.values()),
                      output_monitor, count_monitor, list(spike_monitors.values()), list(state_monitors.values()))
    for obj in network.objects:  # they belong to this explicit network (Brian2 marks this on the first run)
        obj._network = network.id
    return BrianObjects(network, groups, synapses, stimulus, output_monitor, count_monitor, spike_monitors,
                        state_monitors, counter_synapses)


def _stimulus_rows(stimulus, batch_size, n_inputs):
    values = np.zeros((batch_size + 1, n_inputs))
    values[:len(stimulus)] = stimulus
    return values


# ---------------------------------------------------------------------------------------------
# runtime device
# ---------------------------------------------------------------------------------------------

class RuntimeProgram:
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
        with _runtime_target(target):
            self.objects = create_objects(description, batch_size, self.monitors)
            self.objects.network.store("initial")
        self.n_steps = description.duration_steps(batch_size)

    def run(self, stimulus, values=None):
        """Simulate one batch. ``stimulus``: (n <= batch_size, n_inputs); ``values``: {(pop, var): value}."""
        o = self.objects
        with _runtime_target(self.target):
            o.network.restore("initial")
            o.stimulus.values[:] = _stimulus_rows(stimulus, self.batch_size, self.description.n_inputs)
            for (population, variable), value in (values or {}).items():
                setattr(o.groups[population], variable, value)
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


def build_runtime(description, batch_size, monitors=None, target=None):
    """A :class:`RuntimeProgram` for ``description``."""
    return RuntimeProgram(description, batch_size, monitors, target)


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

class StandaloneProgram:
    """A compiled C++ standalone network, run any number of times through ``run_args``.

    Parameters
    ----------
    directory : Path
        The build folder holding the ``main`` binary and :data:`MANIFEST`.
    """

    device = "cpp_standalone"

    def __init__(self, directory, description, freshly_built=False):
        self.directory = Path(directory)
        self.description = description
        self.freshly_built = freshly_built
        with open(self.directory / MANIFEST) as handle:
            self.manifest = json.load(handle)
        self.batch_size = self.manifest["batch_size"]
        self.n_steps = self.manifest["n_steps"]

    def run(self, stimulus, values=None, results_dir=None):
        """Simulate one batch (same arguments as :meth:`RuntimeProgram.run`)."""
        process, results = self.start(stimulus, values, results_dir)
        return self.finish(process, results)

    def start(self, stimulus, values=None, results_dir=None):
        """Launch one run in the background; returns what :meth:`finish` needs."""
        results = Path(results_dir or tempfile.mkdtemp(prefix="run-", dir=_scratch_dir()))
        try:
            results.mkdir(parents=True, exist_ok=True)
            args = ["--results_dir", str(results) + os.sep]
            rows = _stimulus_rows(stimulus, self.batch_size, self.description.n_inputs)
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
        process.memory = _MemoryWatch(process.pid)
        return process, results

    def finish(self, process, results):
        """Wait for a run started by :meth:`start` and read its results (the folder is removed).

        The returned records carry ``peak_memory_mb``: the run's maximum resident memory.
        """
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
            records.peak_memory_mb = process.memory.peak_mb()
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


class _MemoryWatch:
    """Samples a process's peak resident memory (``VmHWM`` in ``/proc``) every 50 ms until it exits.

    ``ru_maxrss`` from ``wait4`` would include the Python parent's memory copied at ``fork``; the
    high-water mark in ``/proc`` belongs to the binary alone. Returns None where ``/proc`` is absent.
    """

    def __init__(self, pid):
        import threading

        self.path = Path(f"/proc/{pid}/status")
        self.peak_kb = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        import time

        while True:
            try:
                text = self.path.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb or 0, int(line.split()[1]))
                elif line.startswith("State:") and "Z" in line.split()[1]:
                    return
            time.sleep(0.05)

    def peak_mb(self):
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


def build_standalone(description, batch_size, monitors=None, build_root=None):
    """Compile ``description`` with Brian2's C++ standalone device, or reuse an earlier build.

    The build folder is ``build_root / <fingerprint>`` where the fingerprint hashes the
    description, the batch size and the monitors. A folder counts as built only once its
    manifest exists; the build happens in a private temporary folder that is renamed into place
    at the end, so a failed or killed build leaves nothing a later run would trust, and two
    processes never write into the same folder.

    Returns
    -------
    StandaloneProgram
    """
    monitors = monitors or MonitorRequest()
    root = Path(build_root) if build_root is not None else default_build_root()
    final = root / build_key(description, batch_size, monitors)
    if (final / MANIFEST).is_file():
        return StandaloneProgram(final, description, freshly_built=False)
    if find_compiler() is None:
        raise BuildError("No C++ compiler found (looked for $CXX, g++, c++, clang++). Install one "
                         "(e.g. 'apt-get install g++') or simulate with device='runtime'.")
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        manifest = _compile(description, batch_size, monitors, scratch)
        with open(scratch / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=1)
        try:
            os.rename(scratch, final)
        except OSError:  # another process finished the same build first: use theirs
            if not (final / MANIFEST).is_file():
                raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(scratch, exc) from exc
        raise BuildError(f"Could not write the build folder {scratch}: {exc}. Free disk space or set "
                         "BRIANCONV_BUILD_DIR to a writable folder.") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return StandaloneProgram(final, description, freshly_built=True)


def _disk_full(directory, exc):
    """The error for a build that ran out of disk space while writing ``directory``."""
    return BuildError(f"The disk is full: could not write the build folder {directory} ({exc}). Free disk space "
                      f"there, or set $BRIANCONV_BUILD_DIR to a folder on a disk with room (builds are cached in "
                      f"{Path(directory).parent}).")


def build_key(description, batch_size, monitors):
    """Name of the build folder: the description's fingerprint, the monitors, Brian2's version and
    the builder's layout (:data:`BUILD_FORMAT`)."""
    return description.fingerprint(batch_size) + "-" + _short_hash(monitors.key() + brian2.__version__ + BUILD_FORMAT)


def _source_major(connections):
    """Synapse order grouped by source neuron (then target), stable.

    A spike walks its source's synapses: stored contiguously, their weights and targets are read
    from consecutive memory instead of one cache line per synapse (conv layers list synapses by
    kernel offset). Each synapse keeps its own weight, and the order of the spikes is unchanged,
    so the simulated values are the same.
    """
    return np.lexsort((connections.post, connections.pre))


def _short_hash(text):
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@contextlib.contextmanager
def _standalone_device(directory):
    previous = get_device()
    old_args = prefs.codegen.cpp.extra_compile_args_gcc
    old_make = prefs.devices.cpp_standalone.extra_make_args_unix
    prefs.codegen.cpp.extra_compile_args_gcc = COMPILE_ARGS
    # Brian2's default "make -j" starts one compiler per file at once (about 100 for a CNN),
    # which thrashes a small machine: compile one file per core instead.
    prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{os.cpu_count() or 1}"]
    set_device("cpp_standalone", build_on_run=False, directory=str(directory))
    try:
        yield get_device()
    finally:
        standalone = get_device()
        standalone.reinit()
        standalone.activate(build_on_run=False)
        reset_device(previous)
        prefs.codegen.cpp.extra_compile_args_gcc = old_args
        prefs.devices.cpp_standalone.extra_make_args_unix = old_make


def _compile(description, batch_size, monitors, directory):
    with _standalone_device(directory) as device:
        objects = create_objects(description, batch_size, monitors)
        n_steps = description.duration_steps(batch_size)
        objects.network.run(n_steps * description.dt, namespace={})
        try:
            device.build(directory=str(directory), compile=True, run=False, with_output=False)
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise _disk_full(directory, exc) from exc
            raise BuildError(f"C++ compilation of the {description.scheme} network failed in {directory}: {exc}. "
                             "Check the compiler installation, or simulate with device='runtime'.") from exc
        if not (directory / "main").is_file():
            raise BuildError(f"C++ compilation produced no binary in {directory}; see the compiler output above.")
        return _manifest(device, objects, description, batch_size, monitors, n_steps)


def _manifest(device, o, description, batch_size, monitors, n_steps):
    def file_spec(variable, columns=None):
        return {"file": device.get_array_filename(variable), "dtype": np.dtype(variable.dtype).str,
                "columns": columns}

    settable = {"stimulus.values": {"name": "stimulus.values", "size": int(o.stimulus.values.size),
                                    "dtype": np.dtype(o.stimulus.values.dtype).str}}
    for name, group in o.groups.items():
        for var_name, var in group.variables.items():
            if getattr(var, "read_only", True) or var_name.startswith("_") or not hasattr(var, "size"):
                continue
            if getattr(var, "owner", None) is None or var.owner.name != group.name:
                continue
            settable[f"{name}.{var_name}"] = {"name": f"{group.name}.{var_name}", "size": int(var.size),
                                             "dtype": np.dtype(var.dtype).str}
    n_pop = len(description.populations)
    return {
        "fingerprint": description.fingerprint(batch_size),
        "scheme": description.scheme,
        "batch_size": batch_size,
        "n_steps": int(n_steps),
        "brian2": brian2.__version__,
        "output": file_spec(o.output_monitor.variables[description.output_variable], description.n_outputs),
        "spikes": file_spec(o.count_monitor.variables["spikes"], n_pop),
        "synops": file_spec(o.count_monitor.variables["synops"], n_pop),
        "spike_monitors": {name: {"i": file_spec(m.variables["i"]), "t": file_spec(m.variables["t"])}
                           for name, m in o.spike_monitors.items()},
        "state_monitors": {name: {v: file_spec(m.variables[v], len(monitors.states[name][1]))
                                  for v in monitors.states[name][0]}
                           for name, m in o.state_monitors.items()},
        "settable": settable,
    }
