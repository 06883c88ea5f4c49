"""Standalone synapses read straight from files: one copy of each synaptic array, in either process.

``Synapses.connect(i=..., j=...)`` and ``syn.w = array`` on Brian2's C++ standalone device keep
every index and weight array several times over: in the Python process as "static arrays" until
the build writes them, and in the compiled binary as a static array, a copy of it in a
``sources``/``targets`` array and the synapses' own ``_synaptic_pre``/``_synaptic_post``/``w``
vectors, all alive until the end of the run, which then writes every one of them to the results
folder. For a network with tens of millions of synapses that is most of the memory.

:class:`SynapseFiles` replaces those calls for the projections of a description. For each one it

* writes ``pre``, ``post``, ``w`` (and per-synapse ``delay``) in source-major order, a range of
  source neurons at a time, to
  ``static_arrays/brianconv_<projection>_<array>`` of the build folder as soon as the projection
  is created, so the Python process holds a chunk's copies at a time, never an array over all
  synapses of a projection (not even the order: :func:`~.objects.source_major_chunks`);
* inserts C++ code in ``main`` that reads them directly into the synapses' vectors (sized once),
  counts ``N_incoming``/``N_outgoing``, sets ``N`` and sizes the other per-synapse variables —
  what Brian2's ``synapses_create_array`` template does, without the intermediate copies;
* frees those vectors after the run (:meth:`release_after_run`), so the binary does not write
  them to every run's results folder.

The synapses, their order and their values are the same as with ``connect``: spikes are unchanged.
"""

import contextlib
from pathlib import Path

import numpy as np
from brian2.devices.cpp_standalone.codeobject import c_data_type

from .objects import shared_delay, source_major_chunks, synapse_delays

__all__ = ["SynapseFiles"]

#: Prefix of the files written to ``static_arrays/`` (Brian2's own files start with ``_static_array``).
PREFIX = "brianconv_"


class SynapseFiles:
    """Connects standalone ``Synapses`` from files written into the build folder ``directory``.

    Parameters
    ----------
    device : brian2.devices.cpp_standalone.CPPStandaloneDevice
        The active standalone device (it names the arrays and receives the inserted code).
    directory : Path
        The build folder (the binary runs with it as its working directory).
    """

    def __init__(self, device, directory):
        self.device = device
        self.folder = Path(directory) / "static_arrays"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.connected = []

    def __call__(self, syn, projection, dt):
        """Create the synapses of ``projection`` (a :class:`~brianconv.description.Projection`) in
        source-major order with its weights and per-synapse delays."""
        c = projection.connections
        n = len(c)
        # each takes the values of the synapses at the given positions (a piece of the order)
        vectors = {"_synaptic_pre": lambda at: c.pre[at], "_synaptic_post": lambda at: c.post[at]}
        if "w" in syn.variables:
            # in float64, then rounded once to the stored type (as connect_in_python does)
            vectors["w"] = lambda at: np.multiply(c.weight[at], float(projection.weight_unit), dtype=np.float64)
        if shared_delay(projection) is None:
            vectors["delay"] = lambda at: synapse_delays(projection, at) * float(dt)
        # a per-synapse delay belongs to the "pre" pathway (Brian2 registers it with the synapses)
        variables = {key: syn.pre.variables["delay"] if key == "delay" else syn.variables[key] for key in vectors}
        paths = {key: self.folder / f"{PREFIX}{syn.name}_{key.strip('_')}" for key in vectors}
        _write_in_chunks(paths, c, vectors, {key: variable.dtype for key, variable in variables.items()})
        lines = [f"// brianconv: {n} synapses of {syn.name} read from static_arrays/{PREFIX}{syn.name}_*", "{"]
        for variable in syn._registered_variables:
            lines.append(f"    {self._name(variable)}.resize({n});")
        if n:
            lines += [_read_file_code(self._name(variables[key]), f"static_arrays/{paths[key].name}", n)
                      for key in vectors]
        pre, post = self._name(syn.variables["_synaptic_pre"]), self._name(syn.variables["_synaptic_post"])
        for counts, size, index in (("N_outgoing", c.n_pre, pre), ("N_incoming", c.n_post, post)):
            name = self._name(syn.variables[counts])
            lines += [f"    {name}.assign({size}, 0);",
                      f"    for (size_t k = 0; k < {n}; k++) {name}[{index}[k]]++;"]
        lines += [f"    {self.device.get_array_name(syn.variables['N'])}[0] = {n};", "}"]
        self.device.insert_code("main", "\n".join(lines))
        syn._connect_called = True  # Brian2's check that synapses exist before a run
        self.connected.append(syn)

    def release_after_run(self):
        """Insert code after the run that frees every connected projection's per-synapse vectors."""
        lines = ["// brianconv: per-synapse vectors are not results; free them before they are written"]
        for syn in self.connected:
            for variable in syn._registered_variables:
                name = self._name(variable)
                lines.append(f"std::vector<{c_data_type(variable.dtype)}>().swap({name});")
        self.device.insert_code("main", "\n".join(lines))

    def _name(self, variable):
        return self.device.get_array_name(variable, access_data=False)


#: Synapses written per chunk: the Python process holds one chunk's copies and order (about 40
#: bytes per synapse of the chunk, 40 MB), not a projection's. Sorting 70 M random synapses takes
#: 22 s in pieces of 1 M, 21 s in pieces of 2 M and 35 s at once (np.lexsort).
CHUNK = 1 << 20


def _write_in_chunks(paths, connections, vectors, dtypes):
    """Write ``vectors[key](piece)`` to ``paths[key]`` as raw ``dtypes[key]`` for consecutive pieces of
    the source-major order (:func:`~.objects.source_major_chunks`), every file in one pass."""
    with contextlib.ExitStack() as stack:
        handles = {key: stack.enter_context(open(path, "wb")) for key, path in paths.items()}
        for at in source_major_chunks(connections, CHUNK):
            for key, values in vectors.items():
                np.ascontiguousarray(values(at), dtype=dtypes[key]).tofile(handles[key])


def _read_file_code(vector, path, n):
    """C++ lines that read ``n`` values from ``path`` into ``vector`` (already of size ``n``)."""
    return (f"    {{\n        std::ifstream f(\"{path}\", std::ios::in | std::ios::binary);\n"
            f"        if (!f.read(reinterpret_cast<char*>(&{vector}[0]), {n} * sizeof({vector}[0]))) {{\n"
            f"            std::cerr << \"Error reading {path}\" << std::endl;\n            exit(1);\n"
            "        }\n    }")
