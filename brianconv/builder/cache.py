"""The build cache: C++ standalone programs compiled once per description, in fingerprint folders.

A build folder is ``build_root / <fingerprint>`` (:func:`build_key`: the description's
fingerprint, the batch size, the monitors, Brian2's version and :data:`BUILD_FORMAT`). It counts
as built only once its :data:`~brianconv.builder.programs.MANIFEST` exists; builds happen in a
private scratch folder renamed into place at the end, so a failed or killed build leaves nothing
a later run would trust, and two processes never write into the same folder.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import brian2
import numpy as np
from brian2 import prefs
from brian2.codegen.cpp_prefs import get_compiler_and_args
from brian2.devices.device import get_device, reset_device, set_device

from ..errors import BuildError
from . import generated
from .headers import precompiled_header_args
from .objects import MonitorRequest, create_objects, float_precision, set_before_run
from .programs import (
    COMPILE_ARGS,
    MANIFEST,
    BuildInfo,
    StandaloneProgram,
    find_compiler,
)
from .synapse_files import SynapseFiles

__all__ = ["build_standalone", "build_key", "default_build_root", "standalone_device", "BUILD_FORMAT"]

#: Changes whenever the builder lays out the same description differently (part of the cache key).
BUILD_FORMAT = "scheduled-thresholds-1"


def default_build_root():
    """Folder for compiled networks: ``$BRIANCONV_BUILD_DIR`` or ``~/.cache/brianconv/builds``."""
    root = os.environ.get("BRIANCONV_BUILD_DIR")
    return Path(root) if root else Path.home() / ".cache" / "brianconv" / "builds"


def build_key(description, batch_size, monitors):
    """Name of the build folder: the description's fingerprint, the monitors, Brian2's version and
    the builder's layout (:data:`BUILD_FORMAT`)."""
    layout = (BUILD_FORMAT + ("" if generated.HOLD_SOURCES else "-brian2-queues")
              + ("" if generated.SCHEDULE_THRESHOLDS else "-every-neuron-tested"))
    return description.fingerprint(batch_size) + "-" + _short_hash(monitors.key() + brian2.__version__ + layout)


def build_standalone(description, batch_size, monitors=None, build_root=None):
    """Compile ``description`` with Brian2's C++ standalone device, or reuse an earlier build.

    Parameters
    ----------
    description : brianconv.description.NetworkDescription
    batch_size : int
    monitors : MonitorRequest, optional
    build_root : path, optional
        Folder of the cache (default :func:`default_build_root`).

    Returns
    -------
    (StandaloneProgram, BuildInfo)
        ``BuildInfo.compiled`` is False when the folder was found in the cache.
    """
    start = time.perf_counter()
    monitors = monitors or MonitorRequest()
    root = Path(build_root) if build_root is not None else default_build_root()
    final = root / build_key(description, batch_size, monitors)
    compiled = not (final / MANIFEST).is_file()
    if compiled:
        _compile_into(final, description, batch_size, monitors)
    program = StandaloneProgram(final, description)
    return program, BuildInfo(seconds=time.perf_counter() - start, compiled=compiled, directory=final)


def _compile_into(final, description, batch_size, monitors):
    """Compile in a scratch folder next to ``final`` and rename it into place."""
    if find_compiler() is None:
        raise BuildError("No C++ compiler found (looked for $CXX, g++, c++, clang++). Install one "
                         "(e.g. 'apt-get install g++') or simulate with device='runtime'.")
    root = final.parent
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


def _disk_full(directory, exc):
    """The error for a build that ran out of disk space while writing ``directory``."""
    return BuildError(f"The disk is full: could not write the build folder {directory} ({exc}). Free disk space "
                      f"there, or set $BRIANCONV_BUILD_DIR to a folder on a disk with room (builds are cached in "
                      f"{Path(directory).parent}).")


def _short_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@contextlib.contextmanager
def standalone_device(directory):
    """Brian2's C++ standalone device writing to ``directory``, with brianconv's compiler flags (a
    precompiled header, :data:`~.programs.COMPILE_ARGS`) and one compiler per core; every
    preference and the previous device are restored on exit."""
    previous = get_device()
    old_args = prefs.codegen.cpp.extra_compile_args_gcc
    old_make = prefs.devices.cpp_standalone.extra_make_args_unix
    # every file starts from a precompiled standard library (see .headers; same code, faster build)
    compiler = os.environ.get("CXX", "g++")  # what the generated makefile calls
    prefs.codegen.cpp.extra_compile_args_gcc = COMPILE_ARGS + precompiled_header_args(
        compiler, ["-Wno-write-strings", *COMPILE_ARGS], Path(directory).parent)
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
    with standalone_device(directory) as device, float_precision(description.precision):
        synapse_files = SynapseFiles(device, directory)
        objects = create_objects(description, batch_size, monitors, connect=synapse_files)
        if any(q.before_run for q in description.projections):
            device.apply_run_args()  # the run values first: the statements read them
            set_before_run(objects, description)
        n_steps = description.duration_steps(batch_size)
        objects.network.run(n_steps * description.dt, namespace={})
        synapse_files.release_after_run()
        try:
            device.build(directory=str(directory), compile=False, run=False, with_output=False)
            scheduled = generated.edit_build(directory, description)
            device.compile_source(str(directory), get_compiler_and_args()[0], debug=False, clean=False)
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise _disk_full(directory, exc) from exc
            raise BuildError(f"C++ compilation of the {description.scheme} network failed in {directory}: {exc}. "
                             "Check the compiler installation, or simulate with device='runtime'.") from exc
        if not (directory / "main").is_file():
            raise BuildError(f"C++ compilation produced no binary in {directory}; see the compiler output above.")
        return dict(_manifest(device, objects, description, batch_size, monitors, n_steps),
                    scheduled_thresholds=scheduled)


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
