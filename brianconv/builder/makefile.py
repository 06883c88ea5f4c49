"""Two changes to Brian2's generated makefile that shorten a standalone build, not the program.

Measured on the ttfs test network of ``tests/test_ttfs.py`` (about 120 code objects, GCC 12 with
the precompiled header of :mod:`.headers`):

* **No dependency scan.** The makefile's ``make.deps`` rule runs the preprocessor over every source
  in one process (8 s, in one of the two job slots) so that a later ``make`` rebuilds what a changed
  header touches. A brianconv build folder is compiled once and never edited (a changed network
  gets a new folder, :mod:`.cache`), so the scan is replaced by an empty ``make.deps``.
* **``objects.cpp`` at ``-O1``.** The one file that declares every array and holds the code that
  allocates, loads, writes and frees them and parses the run-time values (``set_variable_by_name``)
  takes 11.4 s at ``-O3`` and 4.5 s at ``-O1``. None of its code computes a neuron or synapse
  variable, so the simulation's arithmetic is unchanged: the code objects, which do all of it, keep
  :data:`~.programs.COMPILE_ARGS` (``-O3 -ffp-contract=off``).
"""

from pathlib import Path

__all__ = ["streamline_makefile"]

#: Optimisation of ``objects.cpp`` (GCC uses the last ``-O`` given).
ARRAY_CODE_OPTIMISATION = "-O1"


def streamline_makefile(directory):
    """Apply both changes to the generated build folder ``directory`` before ``make`` runs.

    Parameters
    ----------
    directory : path
        A C++ standalone project written by ``device.build(compile=False)``.
    """
    directory = Path(directory)
    makefile = directory / "makefile"
    if not makefile.is_file():  # Windows builds use Brian2's win_makefile, left as it is
        return
    text = makefile.read_text()
    if "objects.o:" not in text:
        makefile.write_text(text + f"\nobjects.o: CXXFLAGS += {ARRAY_CODE_OPTIMISATION}\n")
    # Written after every source, so make sees it up to date and never runs the scan.
    (directory / "make.deps").write_text("")
