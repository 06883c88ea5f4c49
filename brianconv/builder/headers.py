"""A precompiled header of the C++ standard library for standalone builds (GCC only).

Brian2's C++ standalone build compiles one file per code object (about 60 for a small CNN,
several hundred for a deep one), and each file first parses the same standard-library headers.
Measured with ``g++ -ftime-report`` on a code object of a converted CNN, parsing is 82 % of a
file's compile time. A precompiled header (``.gch``) of those headers, built once per compiler and
flags and kept in the build cache, brings a code object from 1.27 s to 0.40 s of compile time and
a whole small-CNN build (``make -j2``) from 49 s to 23 s on this project's 2-core machine.

The code objects compile to byte-identical object files (checked with ``cmp``): the header only
supplies, ready-parsed, declarations every file includes anyway, and each of them is guarded, so
the files' own ``#include`` lines add nothing after it. Where the compiler is not GCC (clang uses a
different precompiled format) or the header cannot be built, builds go on without it.
"""

import hashlib
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

__all__ = ["STANDARD_HEADERS", "precompiled_header_args"]

logger = logging.getLogger(__name__)

#: What Brian2's generated files and its ``brianlib`` include from the standard library.
STANDARD_HEADERS = ("algorithm", "cassert", "climits", "cmath", "cstdint", "cstdlib", "ctime", "fstream",
                    "iostream", "iterator", "limits", "map", "random", "set", "utility", "vector",
                    "assert.h", "math.h", "stdint.h", "stdlib.h")

HEADER_NAME = "brianconv_std.h"
#: Start of the name of the header's folder in the build cache (next to the compiled networks).
FOLDER_PREFIX = "precompiled-"


def precompiled_header_args(compiler, flags, cache_root):
    """Compiler arguments that make every compiled file start from the precompiled header.

    Parameters
    ----------
    compiler : str
        The C++ compiler the build's makefile calls (``$CXX`` or ``g++``).
    flags : list of str
        The flags every file is compiled with; the header is compiled with the same ones (GCC
        uses a ``.gch`` only when they match).
    cache_root : Path
        Folder where the header is kept, in a subfolder named after compiler, flags and headers.

    Returns
    -------
    list of str
        ``["-include<path of the header>"]`` (one word: Brian2 treats each flag on its own), or
        ``[]`` for a compiler other than GCC or when the header could not be built (the build is
        then as without it, only slower).
    """
    version = _gcc_version(compiler)
    if version is None:
        return []
    key = hashlib.sha256(repr((version, list(flags), STANDARD_HEADERS)).encode()).hexdigest()[:12]
    folder = Path(cache_root) / f"{FOLDER_PREFIX}{key}"
    if not (folder / (HEADER_NAME + ".gch")).is_file() and not _build(compiler, flags, folder):
        return []
    return [f"-include{folder / HEADER_NAME}"]


def _gcc_version(compiler):
    """The first line of ``compiler --version`` when it is GCC, else None."""
    try:
        text = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = text.splitlines()[0] if text else ""
    return first if "clang" not in text.lower() and "Free Software Foundation" in text else None


def _build(compiler, flags, folder):
    """Compile the header into ``folder`` (built aside and renamed in, so concurrent builds are safe)."""
    scratch = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        scratch.mkdir(parents=True)
        header = scratch / HEADER_NAME
        header.write_text("".join(f"#include <{name}>\n" for name in STANDARD_HEADERS))
        command = [compiler, "-x", "c++-header", *flags, str(header), "-o", str(header) + ".gch"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            logger.info("No precompiled header (builds are slower, not different): %s", done.stderr.strip())
            return False
        try:
            os.rename(scratch, folder)
        except OSError:  # another process built it first
            pass
        return (folder / (HEADER_NAME + ".gch")).is_file()
    except (OSError, subprocess.SubprocessError) as exc:
        logger.info("No precompiled header (builds are slower, not different): %s", exc)
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
