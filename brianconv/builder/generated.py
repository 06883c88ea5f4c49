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

Speed and memory (:func:`spike_queues_hold_sources`): for every spike, Brian2's queue copies the
indices of all the synapses it drives into the slot of its delay, the pathway copies that slot
again (``peek``), and the synapse code reads each index back to find ``post`` and ``w``. brianconv
stores a projection's synapses source by source, so a source's synapses are one range of indices:
the queue keeps an offset per source instead of the per-source lists (0 bytes per synapse instead
of 4) and, where every synapse has the same delay, queues the spiking source neurons themselves;
the synapse code walks each one's range. The synapses are visited in the same order, so every sum
is the same bit for bit; projections stored in another order keep Brian2's lists.

Threshold tests (:func:`scheduled_thresholds`): Brian2 tests every neuron of a population at every
step, also where a term shared by all of them is false (brianconv's windows: a ttfs neuron can
fire only in its spiking stage); the loop is now skipped in those steps. A population whose spike
steps are computed in advance (:class:`~brianconv.description.SpikeSchedule`, ttfs with
``integration="event"``) has its neurons sorted by spike step once per window, and each step
copies its own neurons to the spike list, in index order as the loop would: the same spikes
(``tests/test_generated.py``, and the standalone tests of ttfs), 1.28 times as many images per
CPU-second for ttfs with events on the López-Randulfe CNN (``benchmarks/queues.py``).
"""

import logging
import re
import textwrap
from pathlib import Path

__all__ = ["edit_build", "streamline_makefile", "exact_spike_queue_capacity", "spike_queues_hold_sources",
           "scheduled_thresholds"]

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


def edit_build(directory, description):
    """Every edit of this module that a brianconv build gets, in order, before ``make`` runs.

    Parameters
    ----------
    directory : path
        A C++ standalone project written by ``device.build(compile=False)`` for ``description``.
    description : brianconv.description.NetworkDescription

    Returns
    -------
    list of str
        The populations whose spike test reads their schedule (:func:`scheduled_thresholds`).
    """
    exact_spike_queue_capacity(directory)
    if HOLD_SOURCES:
        spike_queues_hold_sources(directory)
    scheduled = []
    if SCHEDULE_THRESHOLDS:
        scheduled = scheduled_thresholds(directory, {p.name: p.spike_schedule for p in description.populations
                                                     if p.spike_schedule is not None})
    streamline_makefile(directory)  # last: it marks the dependency list newer than every source
    return scheduled


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


# -- spike queues that hold source neurons (the module docstring's "Speed and memory") ---------
#: Whether standalone builds apply :func:`spike_queues_hold_sources` (part of the build key);
#: ``benchmarks/queues.py`` turns it off to measure Brian2's own queues beside it in one run.
HOLD_SOURCES = True

_QUEUE_MEMBERS = "    vector< vector<int> > synapses;\n"
_QUEUE_MEMBERS_WITH_RANGES = _QUEUE_MEMBERS + """\
    // brianconv: source k's synapses are first_synapse[k]..first_synapse[k+1]-1 when the sources
    // array is sorted (no per-source lists then); holds_sources: the queue holds source neurons.
    vector<int32_t> first_synapse;
    bool holds_sources;
"""
_QUEUE_CONSTRUCTOR = "        openmp_padding = 0;\n        scalar_delay = 0;\n"
_QUEUE_CONSTRUCTOR_WITH_RANGES = _QUEUE_CONSTRUCTOR + "        holds_sources = false;\n"
_RANGES_OR_LISTS = """        if (holds_sources)
        {   // brianconv: sources queued by an earlier run become their synapses (with their offsets)
            for (size_t slot=0; slot<queue.size(); slot++)
            {
                vector<int32_t> entries;
                entries.swap(queue[slot]);
                for (size_t e=0; e<entries.size(); e++)
                    for (int32_t k=first_synapse[entries[e]]; k<first_synapse[entries[e]+1]; k++)
                        queue[slot].push_back(k);
            }
            holds_sources = false;
        }
        first_synapse.clear();
        bool sorted_sources = true;
        for (int i=1; i<n_synapses && sorted_sources; i++)
            sorted_sources = sources[i] >= sources[i-1];
        if (sorted_sources)
        {   // brianconv: offsets instead of per-source lists
            first_synapse.assign(source_end - source_start + 1, openmp_padding);
            for (int i=0; i<n_synapses; i++)
                first_synapse[sources[i] - source_start + 1]++;
            for (size_t k=1; k<first_synapse.size(); k++)
                first_synapse[k] += first_synapse[k-1] - openmp_padding;
        }
        else
        {
""" + _RESERVE_THEN_FILL + "        }\n"
_QUEUE_DELAY_KIND = "        scalar_delay = (min_delay == max_delay);\n"
_QUEUE_DELAY_KIND_WITH_RANGES = _QUEUE_DELAY_KIND + """\
        // brianconv: hold source neurons where the ranges exist, one delay serves all and no
        // synapse entries are pending from an earlier run
        bool wants_sources = !first_synapse.empty() && scalar_delay;
        for (size_t slot=0; slot<queue.size() && wants_sources; slot++)
            wants_sources = queue[slot].empty();
        holds_sources = wants_sources;
"""
_QUEUE_PUSH = "        const int32_t * __restrict rspikes = spikes;\n"
_QUEUE_PUSH_WITH_RANGES = _QUEUE_PUSH + """\
        if (!first_synapse.empty())
        {   // brianconv: sources with synapses (holds_sources), or each source's range of synapses
            const int32_t * __restrict first = &first_synapse[0];
            vector<int32_t> &homog_queue = queue[(offset+delays[0])%queue.size()];
            for(int idx_spike=start; idx_spike<stop; idx_spike++)
            {
                const int idx_neuron = rspikes[idx_spike] - source_start;
                if (first[idx_neuron+1] == first[idx_neuron]) continue;
                if (holds_sources)
                {
                    homog_queue.push_back(idx_neuron);
                    continue;
                }
                for (int32_t k=first[idx_neuron]; k<first[idx_neuron+1]; k++)
                {
                    const int delay = scalar_delay ? delays[0] : delays[k - openmp_padding];
                    queue[(offset+delay)%queue.size()].push_back(k);
                }
            }
            return;
        }
"""
_QUEUE_EDITS = [(_QUEUE_MEMBERS, _QUEUE_MEMBERS_WITH_RANGES), (_QUEUE_CONSTRUCTOR, _QUEUE_CONSTRUCTOR_WITH_RANGES),
                (_RESERVE_THEN_FILL, _RANGES_OR_LISTS), (_QUEUE_DELAY_KIND, _QUEUE_DELAY_KIND_WITH_RANGES),
                (_QUEUE_PUSH, _QUEUE_PUSH_WITH_RANGES)]

#: The lines of Brian2's ``synapses.cpp`` template (2.9) that the expansion replaces.
_PEEK = re.compile(r"std::vector<int> \*_spiking_synapses = (\w+)\.peek\(\);\n(\s*)const int _num_spiking_synapses "
                   r"= _spiking_synapses->size\(\);\n")
_LOOP = "for(int _spiking_synapse_idx=0;"
_ENTRY = "const size_t _idx = (*_spiking_synapses)[_spiking_synapse_idx];"
_ENTRY_AS_RANGE = ("const int32_t _brianconv_entry = (*_spiking_synapses)[_spiking_synapse_idx];\n"
                   "for (size_t _idx = _brianconv_sources ? _brianconv_first[_brianconv_entry] : _brianconv_entry; "
                   "_idx < (_brianconv_sources ? _brianconv_first[_brianconv_entry + 1] : _brianconv_entry + 1); "
                   "_idx++)\n{")


def spike_queues_hold_sources(directory):
    """Make the spike queues of build folder ``directory`` hold source neurons where they can, and
    every synapse code object expand them (the module docstring's "Speed and memory").

    Run after :func:`exact_spike_queue_capacity`, whose exact lists stay for unsorted projections.

    Returns
    -------
    bool
        Whether the build was changed (False, and a debug message, where Brian2's files differ from
        the 2.9 text these edits expect: then nothing is changed).
    """
    directory = Path(directory)
    header = directory / "brianlib" / "spikequeue.h"
    text = header.read_text() if header.is_file() else ""
    code_objects = {path: _expanded_synapse_loop(code) for path, code in _synapse_code_objects(directory)}
    if any(text.count(old) != 1 for old, _ in _QUEUE_EDITS) or None in code_objects.values():
        logger.debug("spikequeue.h or a synapse code object differs from Brian2 2.9's text; queues left as written")
        return False
    for old, new in _QUEUE_EDITS:
        text = text.replace(old, new)
    header.write_text(text)
    for path, code in code_objects.items():
        path.write_text(code)
    return True


def _synapse_code_objects(directory):
    """``(path, text)`` of the generated sources that read a spike queue (Brian2's ``synapses.cpp``)."""
    sources = ((path, path.read_text()) for path in sorted((directory / "code_objects").glob("*.cpp")))
    return [(path, code) for path, code in sources if ".peek();" in code]


def _expanded_synapse_loop(code):
    """``code`` with its loop over queued synapses turned into a loop over queue entries, each a
    source's range of synapses (``holds_sources``) or one synapse; None if the loop is not found."""
    peek = _PEEK.search(code)
    if peek is None or code.count(_LOOP) != 1 or code.count(_ENTRY) != 1:
        return None
    pathway, indent = peek.group(1), peek.group(2)
    flags = (f"{indent}const bool _brianconv_sources = {pathway}.queue[0]->holds_sources;\n"
             f"{indent}const int32_t * const _brianconv_first = _brianconv_sources ? "
             f"&({pathway}.queue[0]->first_synapse[0]) : 0;\n")
    code = code[:peek.end()] + flags + code[peek.end():]
    body_end = _closing_brace(code, code.index("{", code.index(_LOOP)))
    code = code[:body_end] + "}\n" + code[body_end:]
    return code.replace(_ENTRY, _ENTRY_AS_RANGE)


def _closing_brace(code, opening):
    """Index of the brace that closes the one at ``opening`` (generated code: no braces in strings;
    ``//`` comments are skipped)."""
    depth = 0
    position = opening
    while position < len(code):
        if code.startswith("//", position):
            position = code.find("\n", position)
            if position < 0:
                break
            continue
        depth += {"{": 1, "}": -1}.get(code[position], 0)
        if depth == 0:
            return position
        position += 1
    raise ValueError("unbalanced braces in a generated code object")


# -- threshold tests: skipped in closed windows, scheduled spikes sorted once per window ---------------
#: Whether standalone builds apply :func:`scheduled_thresholds` (part of the build key);
#: ``benchmarks/queues.py`` turns it off to measure the scan of every neuron beside it in one run.
SCHEDULE_THRESHOLDS = True

#: The neuron loop of Brian2's ``threshold.cpp`` template (2.9).
_THRESHOLD_LOOP = "    long _count = 0;\n    for(size_t _idx=0; _idx<N; _idx++)\n"
_CONDITION = re.compile(r"const char _cond = (?P<shared>(?:_lio_\d+ && )*)(?P<rest>[^;\n]+);\n")
_SPIKE_BODY = re.compile(r"if\(_cond\) \{")
_SPIKE_THRESHOLDER = re.compile(r"(\w+?)_spike_thresholder_codeobject(?:_\d+)?\.cpp")
_SCHEDULED = """    // brianconv: scheduled spikes (brianconv.description.SpikeSchedule). In steps {first}..{last}-1 of
    // the window a neuron fires where {variable} equals the step, and nothing writes {variable} in
    // those steps: the neurons are sorted by it once per window (in index order, as the loop below
    // would find them) instead of testing every neuron at every step.
    static std::vector<int32_t> _brianconv_bucket_first, _brianconv_bucket_neurons, _brianconv_next;
    static int64_t _brianconv_sorted_for = -1;
    const int64_t _brianconv_first = ({first}), _brianconv_last = ({last});
    if (local_step >= _brianconv_first && local_step < _brianconv_last)
    {{
        if ({shared})
        {{
            const int64_t _brianconv_range_start = t_in_timesteps - (local_step - _brianconv_first);
            if (_brianconv_range_start != _brianconv_sorted_for)
            {{
                const int64_t _brianconv_steps = _brianconv_last - _brianconv_first;
                _brianconv_bucket_first.assign(_brianconv_steps + 1, 0);
                for (size_t _idx=0; _idx<N; _idx++)
                {{
                    const int64_t _step = {array}[_idx];
                    if (_step >= _brianconv_first && _step < _brianconv_last)
                        _brianconv_bucket_first[_step - _brianconv_first + 1]++;
                }}
                for (int64_t _k=1; _k<=_brianconv_steps; _k++)
                    _brianconv_bucket_first[_k] += _brianconv_bucket_first[_k-1];
                _brianconv_bucket_neurons.resize(_brianconv_bucket_first[_brianconv_steps]);
                _brianconv_next.assign(_brianconv_bucket_first.begin(), _brianconv_bucket_first.end() - 1);
                for (size_t _idx=0; _idx<N; _idx++)
                {{
                    const int64_t _step = {array}[_idx];
                    if (_step >= _brianconv_first && _step < _brianconv_last)
                        _brianconv_bucket_neurons[_brianconv_next[_step - _brianconv_first]++] = _idx;
                }}
                _brianconv_sorted_for = _brianconv_range_start;
            }}
            const int32_t * const _brianconv_bucket = &_brianconv_bucket_first[local_step - _brianconv_first];
            for (int32_t _k=_brianconv_bucket[0]; _k<_brianconv_bucket[1]; _k++)
            {{
                const size_t _idx = _brianconv_bucket_neurons[_k];
{body}
            }}
        }}
    }}
    else
"""


def scheduled_thresholds(directory, schedules=None):
    """Edit the threshold tests of build folder ``directory``: each neuron loop is skipped in steps
    where a condition shared by all neurons is false, and populations with a spike schedule sort
    their neurons by spike step once per window.

    Parameters
    ----------
    directory : path
        A C++ standalone project written by ``device.build(compile=False)``.
    schedules : dict, optional
        ``population name -> SpikeSchedule`` (:class:`brianconv.description.SpikeSchedule`).

    Returns
    -------
    list of str
        The populations whose spike thresholder now reads a schedule. A population whose
        generated test does not have the form the schedule states (``local_step == variable`` after
        shared conditions) keeps its loop, with a debug message.
    """
    directory = Path(directory)
    scheduled = []
    for path in sorted((directory / "code_objects").glob("*thresholder_codeobject*.cpp")):
        code = path.read_text()
        spike_test = _SPIKE_THRESHOLDER.fullmatch(path.name)  # Brian2 numbers repeated names: ..._codeobject_4
        name = spike_test.group(1) if spike_test else None
        schedule = (schedules or {}).get(name)
        edited, reads_schedule = _edited_threshold(code, schedule)
        if reads_schedule:
            scheduled.append(name)
        elif schedule is not None:
            logger.debug("the spike threshold of %s does not match its schedule; it tests every neuron", name)
        if edited != code:
            path.write_text(edited)
    return scheduled


def _shared_and_rest(code):
    """``(shared, rest)`` of a threshold's condition ``_cond = shared && rest``: ``shared`` the
    conjunction of loop-invariant terms (``"true"`` if none), ``rest`` the per-neuron part (None if
    none); None if ``code`` has no neuron loop and condition of that form."""
    found = _CONDITION.findall(code)
    if code.count(_THRESHOLD_LOOP) != 1 or len(found) != 1:
        return None
    shared, rest = found[0]
    terms = [term for term in shared.split(" && ") if term]
    if re.fullmatch(r"_lio_\d+", rest):
        terms, rest = terms + [rest], None
    elif "||" in rest or "?" in rest:  # `a && b || c`: the leading terms alone do not decide it
        terms = []
    return " && ".join(terms) or "true", rest


def _edited_threshold(code, schedule):
    """``(code, reads_schedule)``: ``code`` whose neuron loop runs only where the condition's shared
    terms hold, preceded, where ``schedule`` matches the condition, by the code that reads it."""
    parts = _shared_and_rest(code)
    if parts is None:
        return code, False
    shared, rest = parts
    scheduled = _scheduled_spikes(code, schedule, shared, rest) if schedule is not None else ""
    skip = f"    if ({shared})\n" if shared != "true" else ""
    loop = code.index(_THRESHOLD_LOOP) + len("    long _count = 0;\n")
    edited = code[:loop] + scheduled + skip + code[loop:]
    return ("#include <vector>\n" if scheduled else "") + edited, bool(scheduled)


def _scheduled_spikes(code, schedule, shared, rest):
    """The code that reads ``schedule`` in its steps (ending in ``else``, before the neuron loop);
    empty if the condition is not ``shared && (local_step == variable)``."""
    variable = schedule.variable
    if rest not in (f"(local_step == {variable})", f"({variable} == local_step)"):
        return ""
    array = re.search(rf"const \w+ {variable} = (\w+)\[_idx\];", code)
    names = set(re.findall(r"[A-Za-z_]\w*", schedule.first + " " + schedule.last)) | {"t_in_timesteps", "local_step"}
    spike = _SPIKE_BODY.search(code)
    if array is None or spike is None or not all(re.search(rf"const \w+ {n} = ", code) for n in names):
        return ""
    opening = spike.end() - 1
    body = textwrap.dedent(code[opening + 1:_closing_brace(code, opening)].strip("\n"))
    return _SCHEDULED.format(first=schedule.first, last=schedule.last, variable=variable, shared=shared,
                             array=array.group(1), body=textwrap.indent(body, " " * 16))
