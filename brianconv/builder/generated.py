"""Edits to the files Brian2 generates for a standalone build, made before ``make`` runs.

None of them changes what the program computes; each is checked by the runtime-versus-standalone
identity tests, which compare every spike.

Build time (:func:`streamline_makefile`; measured on the ttfs test network of
``tests/test_ttfs.py``, about 120 code objects, GCC 12 with the precompiled header of
:mod:`.headers`):

* **No dependency scan.** The makefile's ``make.deps`` rule runs the preprocessor over every source
  in one process (8 s, in one of the two job slots) so that a later ``make`` rebuilds what a changed
  header touches. A brianconv build folder is compiled once and never edited (a changed network
  gets a new folder, :mod:`.cache`), so the scan is replaced by an empty ``make.deps``.
* **``objects.cpp`` at ``-O1``.** The one file that declares every array and holds the code that
  allocates, loads, writes and frees them and parses the run-time values (``set_variable_by_name``)
  takes 11.4 s at ``-O3`` and 4.5 s at ``-O1``. None of its code computes a neuron or synapse
  variable, so the simulation's arithmetic is unchanged: the code objects, which do all of it, keep
  :data:`~.programs.COMPILE_ARGS` (``-O3 -ffp-contract=off``).

Memory (:func:`exact_spike_queue_capacity`): a projection's spike queue lists, for each source
neuron, the synapses it drives (one ``int`` each), filled by ``push_back``. A vector grown that way
ends with a capacity of the next power of two, up to twice its length: a conv neuron with 288
targets holds 512 slots, 7.1 bytes per synapse instead of 4, on top of the 16 of the synapse's own
``pre``, ``post`` and ``w``. Counting the synapses of each source first and reserving exactly that
many gives the same lists, in the same order, at 4 bytes per synapse.
"""

import logging
from pathlib import Path

__all__ = ["streamline_makefile", "exact_spike_queue_capacity"]

logger = logging.getLogger(__name__)

#: Optimisation of ``objects.cpp`` (GCC uses the last ``-O`` given).
ARRAY_CODE_OPTIMISATION = "-O1"

#: The loop of ``CSpikeQueue::prepare`` (Brian2 2.9) that fills the per-source synapse lists.
_FILL_LOOP = """        for (int i=0; i<n_synapses; i++)
            synapses[sources[i] - source_start].push_back(i + openmp_padding);
"""
_RESERVE_THEN_FILL = """        {   // brianconv: reserve each list exactly (push_back alone leaves up to 2x the slots)
            vector<int> per_source(source_end - source_start, 0);
            for (int i=0; i<n_synapses; i++)
                per_source[sources[i] - source_start]++;
            for (size_t k=0; k<per_source.size(); k++)
                synapses[k].reserve(per_source[k]);
        }
""" + _FILL_LOOP


def streamline_makefile(directory):
    """Skip the dependency scan and compile ``objects.cpp`` at ``-O1`` in build folder ``directory``.

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


def exact_spike_queue_capacity(directory):
    """Make every spike queue of build folder ``directory`` reserve its per-source lists exactly.

    Returns
    -------
    bool
        Whether the queue's source was changed (False, and a debug message, for a Brian2 whose
        ``spikequeue.h`` does not have the loop this edits: that build is as Brian2 writes it).
    """
    header = Path(directory) / "brianlib" / "spikequeue.h"
    text = header.read_text() if header.is_file() else ""
    if text.count(_FILL_LOOP) != 1:
        logger.debug("spikequeue.h has no fill loop to edit; spike queues keep push_back's capacity")
        return False
    header.write_text(text.replace(_FILL_LOOP, _RESERVE_THEN_FILL))
    return True
