"""The header every benchmark prints first, so that a results file says how to make it again.

It records the command line as run (every option), the brianconv version and git commit, the
library versions and the machine's cores and load, and no absolute path: a results file can be
compared with a rerun of its first line on another machine.
"""

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def command_line(script, argv=None):
    """``$ python benchmarks/<script> <arguments as run>``."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return f"$ python benchmarks/{Path(script).name} {shlex.join(arguments)}".rstrip()


def _git_commit(repository):
    """The short commit of the checkout ``repository``, with ``+modified`` when tracked files differ from
    it; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repository, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repository,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+modified" if dirty else "")


def versions_line():
    """brianconv, its commit, Python, torch, Brian2 and numpy versions."""
    import brian2
    import numpy
    import torch

    import brianconv

    # the checkout brianconv was imported from (an installed copy or PYTHONPATH may differ from this script's)
    imported_from = Path(brianconv.__file__).resolve().parent.parent
    commit = _git_commit(imported_from)
    where = f" (commit {commit})" if commit else " (not from a git checkout)"
    if imported_from != Path(__file__).resolve().parent.parent:
        where += ", imported from another checkout than this script's"
    return (f"brianconv {brianconv.__version__}{where}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"Brian2 {brian2.__version__}, numpy {numpy.__version__}")


def machine_line():
    """Cores and the load average when the run started (timings depend on both)."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return f"machine: {os.cpu_count()} cores, load average {load} at the start"


def header(script, argv=None):
    """The three provenance lines, joined."""
    return "\n".join([command_line(script, argv), versions_line(), machine_line()])
