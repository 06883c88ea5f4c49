"""One builder: a :class:`~brianconv.description.NetworkDescription` becomes a runnable :class:`Program`.

* :mod:`~brianconv.builder.objects` — the Brian2 objects of a description
  (:func:`create_objects`), inside an explicit ``brian2.Network``.
* :mod:`~brianconv.builder.programs` — the :class:`Program` interface and its two forms:
  :class:`RuntimeProgram` (Brian2's runtime device) and :class:`StandaloneProgram` (a compiled
  C++ standalone binary run once per batch with ``run_args``). Both return the same
  :class:`Records` for a batch.
* :mod:`~brianconv.builder.cache` — standalone builds compiled once per description and kept in
  fingerprint folders (:func:`build_standalone`).

:func:`build` is the entry point: a program for a device, and the :class:`BuildInfo` of what
building it cost.
"""

from ..errors import InvalidValueError
from .cache import BUILD_FORMAT, build_key, build_standalone, default_build_root, standalone_device
from .objects import BrianObjects, MonitorRequest, create_objects, stimulus_rows
from .programs import (
    COMPILE_ARGS,
    MANIFEST,
    BuildInfo,
    Program,
    Records,
    RuntimeProgram,
    StandaloneProgram,
    build_runtime,
    find_compiler,
)

__all__ = ["build", "DEVICES", "Program", "BuildInfo", "Records", "MonitorRequest", "BrianObjects", "create_objects",
           "stimulus_rows", "RuntimeProgram", "StandaloneProgram", "build_standalone", "build_runtime", "build_key",
           "default_build_root", "standalone_device", "find_compiler", "COMPILE_ARGS", "MANIFEST", "BUILD_FORMAT"]

#: ``cpp_standalone``; ``runtime`` (Brian2's runtime device, Cython where a compiler exists, else
#: numpy); ``cython`` and ``numpy`` choose the runtime code generation target explicitly.
DEVICES = ("cpp_standalone", "runtime", "cython", "numpy")


def build(description, device="cpp_standalone", batch_size=1, monitors=None, build_root=None):
    """The program that simulates ``description`` on ``device``, and what building it cost.

    Parameters
    ----------
    description : brianconv.description.NetworkDescription
    device : str
        One of :data:`DEVICES`.
    batch_size : int
        Images per run.
    monitors : MonitorRequest, optional
        Extra spike and state monitors.
    build_root : path, optional
        Folder of the standalone build cache (:func:`default_build_root`).

    Returns
    -------
    (Program, BuildInfo)
    """
    if device == "cpp_standalone":
        return build_standalone(description, batch_size, monitors, build_root)
    if device in DEVICES:
        return build_runtime(description, batch_size, monitors, None if device == "runtime" else device)
    raise InvalidValueError(f"device must be one of {DEVICES}, got {device!r}.")
