"""The builder and the simulation plumbing: Brian2 objects, counting, caching, failures."""

import errno
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from brian2 import Network
from conftest import needs_compiler

import brianconv
from brianconv import builder
from brianconv.builder.headers import FOLDER_PREFIX
from brianconv.errors import BuildError, InvalidValueError, ShapeError


@pytest.fixture(scope="module")
def snn():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    return brianconv.convert(model, "ttfs", calibration=torch.rand(20, 1, 6, 6), t_max=8)


def test_network_exposes_explicit_brian2_objects(snn):
    objects = snn.network
    assert isinstance(objects.network, Network)
    names = [p.name for p in snn.description.populations]
    assert list(objects.groups) == names
    for population in snn.description.populations:
        group = objects.groups[population.name]
        assert len(group) == population.size
        assert "window_start" in group.variables and "v_th" in group.variables
    conv = snn.description.populations[1].name
    assert "dv/dt" in str(objects.groups[conv].equations)
    for projection in snn.description.projections:
        synapses = objects.synapses[projection.name]
        c = projection.connections
        # the same synapses with the same weights, stored grouped by source neuron
        order = np.lexsort((c.post, c.pre))
        np.testing.assert_array_equal(synapses.i[:], c.pre[order])
        np.testing.assert_array_equal(synapses.j[:], c.post[order])
        assert np.all(np.diff(synapses.i[:]) >= 0)
        if "w" in synapses.variables:
            np.testing.assert_array_equal(synapses.w[:] / projection.weight_unit, c.weight[order])
    # every object is inside the explicit network (nothing relies on Brian2's magic network)
    contained = {obj.name for obj in objects.network.objects}
    assert set(names) <= contained and {p.name for p in snn.description.projections} <= contained


def test_per_image_counts_come_from_windows(snn):
    x = torch.rand(7, 1, 6, 6)
    names = [p.name for p in snn.description.populations if p.threshold]
    result = snn.simulate(x, device="numpy", spikes=names, batch_size=3)
    assert result.n_images == 7 and result.outputs.shape == (7, 3)
    for name in names:
        image, _, _ = result.spikes[name]
        np.testing.assert_array_equal(np.bincount(image, minlength=7), result.spike_counts[name])
    assert result.synaptic_ops.shape == (7,)
    total = sum(result.spike_counts.values())
    assert result.spikes_per_neuron == pytest.approx(total.mean() / snn.description.n_neurons)
    # batching does not change anything
    single = snn.simulate(x, device="numpy", batch_size=7)
    np.testing.assert_array_equal(single.outputs, result.outputs)
    for name in names:
        np.testing.assert_array_equal(single.spike_counts[name], result.spike_counts[name])


def test_simulate_rejects_bad_inputs(snn):
    with pytest.raises(ShapeError, match=r"\(N, 1, 6, 6\)"):
        snn.simulate(torch.rand(2, 1, 5, 5), device="numpy")
    with pytest.raises(InvalidValueError, match="NaN"):
        snn.simulate(torch.full((2, 1, 6, 6), float("nan")), device="numpy")
    with pytest.raises(ShapeError, match="labels"):
        snn.simulate(torch.rand(2, 1, 6, 6), labels=[1, 2, 3], device="numpy")
    with pytest.raises(InvalidValueError, match="device"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="gpu")
    with pytest.raises(InvalidValueError, match="populations"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="numpy", spikes=["no_such_layer"])


def test_missing_compiler_is_a_clear_error(snn, monkeypatch, tmp_path):
    monkeypatch.setattr(builder.cache, "find_compiler", lambda: None)
    with pytest.raises(BuildError, match="No C\\+\\+ compiler.*device='runtime'"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="cpp_standalone", build_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_failed_build_leaves_nothing_to_trust(snn, monkeypatch, tmp_path):
    def broken(description, batch_size, monitors, directory):
        directory.mkdir(parents=True)
        (directory / "half_written.cpp").write_text("int main(")
        raise BuildError("compiler exploded")

    monkeypatch.setattr(builder.cache, "_compile", broken)
    with pytest.raises(BuildError, match="exploded"):
        builder.build_standalone(snn.description, 2, build_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cached_build_is_found_by_fingerprint(snn, tmp_path, monkeypatch):
    """A folder with a manifest is reused without compiling; the key covers weights and batch size."""
    key = snn.description.fingerprint(2)
    assert key == snn.description.fingerprint(2) != snn.description.fingerprint(3)
    other = brianconv.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                            nn.Linear(8, 3)).eval(), "ttfs", calibration=torch.rand(20, 1, 6, 6),
                              t_max=8)
    assert other.description.fingerprint(2) != key
    monkeypatch.setattr(builder.cache, "_compile", lambda *a: pytest.fail("compiled although a build exists"))
    folder = tmp_path / builder.build_key(snn.description, 2, builder.MonitorRequest())
    assert folder.name.startswith(key)
    folder.mkdir()
    (folder / builder.MANIFEST).write_text(json.dumps({"batch_size": 2, "n_steps": 10}))
    program, info = builder.build_standalone(snn.description, 2, build_root=tmp_path)
    assert program.directory == info.directory == folder and not info.compiled


def test_fingerprint_covers_per_synapse_delays():
    """AMOS projections carry one delay per synapse: changing one changes the build key."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    snn = brianconv.convert(model, "amos", calibration=torch.rand(8, 6), K=3)
    d = snn.description
    projection = next(q for q in d.projections if not np.isscalar(q.delay_steps))
    key = d.fingerprint(2)
    projection.delay_steps = projection.delay_steps.copy()
    projection.delay_steps[0] += 1
    assert d.fingerprint(2) != key


@pytest.fixture(scope="module")
def tiny():
    """The smallest network that builds: standalone code generation for it takes about a second."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    return brianconv.convert(model, "ttfs", calibration=torch.rand(8, 4), t_max=4, percentile=100)


def _no_space(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _assert_names_the_full_disk(message, folder):
    assert "disk is full" in message and str(folder) in message
    assert "Free disk space" in message and "BRIANCONV_BUILD_DIR" in message


def test_full_disk_during_the_build_is_named_and_leaves_no_cache_entry(tiny, monkeypatch, tmp_path):
    """Brian2 writes every generated source file through ``CPPWriter.write``: there the disk fills up."""
    from brian2.devices.cpp_standalone import device as cpp_device

    attempts = []

    def full(writer, filename, contents):
        attempts.append(filename)
        raise _no_space(os.path.join(writer.project_dir, filename))

    monkeypatch.setattr(cpp_device.CPPWriter, "write", full)
    monkeypatch.setattr(builder.cache, "find_compiler", lambda: "c++")   # the disk fills before anything compiles
    with pytest.raises(BuildError) as info:
        tiny.simulate(torch.rand(2, 4), device="cpp_standalone", build_root=tmp_path)
    assert attempts, "the build never reached the injected write"
    _assert_names_the_full_disk(str(info.value), tmp_path)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert list(tmp_path.rglob(builder.MANIFEST)) == []   # no cache entry a later run would trust
    assert _network_folders(tmp_path) == []               # not even the half-written scratch folder


def test_full_disk_when_writing_the_manifest_leaves_no_cache_entry(tiny, monkeypatch, tmp_path):
    """The last write of a build (its manifest) failing: the compiled folder must not become a cache entry."""
    def compiled(description, batch_size, monitors, directory):
        directory.mkdir(parents=True)
        (directory / "main").write_text("")
        return {"batch_size": batch_size, "n_steps": 1}

    def dump(obj, handle, **kwargs):
        handle.write("{")   # a partial manifest, as a full disk leaves it
        raise _no_space(handle.name)

    monkeypatch.setattr(builder.cache, "_compile", compiled)
    monkeypatch.setattr(builder.cache, "find_compiler", lambda: "c++")
    monkeypatch.setattr(builder.cache.json, "dump", dump)
    with pytest.raises(BuildError) as info:
        builder.build_standalone(tiny.description, 2, build_root=tmp_path)
    _assert_names_the_full_disk(str(info.value), tmp_path)
    assert list(tmp_path.rglob(builder.MANIFEST)) == [] and list(tmp_path.iterdir()) == []


def _fake_build(tiny, folder, main):
    """A build folder with a manifest and a stand-in ``main`` program (shell script)."""
    folder.mkdir()
    size = 3 * tiny.description.n_inputs   # batch of 2 plus the blank row
    (folder / builder.MANIFEST).write_text(json.dumps({"batch_size": 2, "n_steps": 1, "settable": {
        "stimulus.values": {"name": "stimulus.values", "size": size, "dtype": "<f8"}}}))
    (folder / "main").write_text(main)
    (folder / "main").chmod(0o755)
    return builder.StandaloneProgram(folder, tiny.description)


def test_full_disk_when_a_run_writes_its_files_is_named(tiny, monkeypatch, tmp_path):
    program = _fake_build(tiny, tmp_path / "build", "#!/bin/sh\nexit 0\n")

    def full(self, key, array, results):
        raise _no_space(results / "arg_stimulus_values.dat")

    monkeypatch.setattr(builder.StandaloneProgram, "_file_arg", full)
    results = tmp_path / "results"
    with pytest.raises(BuildError, match="disk is full") as info:
        program.run(np.zeros((2, tiny.description.n_inputs)), results_dir=results)
    assert str(results) in str(info.value) and "Free space" in str(info.value)
    assert not results.exists()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in program is a shell script")
def test_run_whose_results_cannot_be_written_is_an_error(tiny, tmp_path):
    """Brian2's binary reports a failed result file on stdout and still exits with 0."""
    program = _fake_build(tiny, tmp_path / "build",
                          "#!/bin/sh\necho 'Error writing output file for _array_ttfs_output_v.'\nexit 0\n")
    results = tmp_path / "results"
    with pytest.raises(BuildError, match="could not write its results") as info:
        program.run(np.zeros((2, tiny.description.n_inputs)), results_dir=results)
    assert str(results) in str(info.value) and "Free space" in str(info.value)
    assert not results.exists()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in program is a shell script")
@pytest.mark.parametrize("ending, named", [("exit 3", "exited with code 3"),
                                           ("kill -9 $$", "killed by signal 9")])
def test_a_compiled_network_that_fails_is_an_error_with_its_stderr(tiny, tmp_path, ending, named):
    """A binary that exits non-zero (or is killed) raises BuildError naming the code and its stderr."""
    program = _fake_build(tiny, tmp_path / "build", f"#!/bin/sh\necho 'bad_alloc in synapses' >&2\n{ending}\n")
    results = tmp_path / "results"
    with pytest.raises(BuildError, match=named) as info:
        program.run(np.zeros((2, tiny.description.n_inputs)), results_dir=results)
    assert "bad_alloc in synapses" in str(info.value) and str(tmp_path / "build") in str(info.value)
    assert not results.exists()


@needs_compiler
def test_a_standalone_sweep_compiles_once_and_matches_the_runtime_at_every_point(tiny, tmp_path):
    """Four grid points through one compiled binary (new values through run_args): one build folder,
    only the first point compiles, and every point gives the numpy device's outputs."""
    x = torch.rand(3, 4)
    grid = {"t_max": [2, 4], "threshold_scale": [0.5, 1.0]}
    table = brianconv.sweep(tiny, x, grid, device="cpp_standalone", build_root=tmp_path, progress=False)
    assert [row["compiled"] for row in table] == [True, False, False, False]
    assert len(list(tmp_path.rglob(builder.MANIFEST))) == 1
    folder = next(tmp_path.rglob(builder.MANIFEST)).parent  # the edits of builder.generated were made
    assert (folder / "make.deps").read_text() == ""
    assert "objects.o: CXXFLAGS += -O1" in (folder / "makefile").read_text()
    queue = (folder / "brianlib" / "spikequeue.h").read_text()
    assert "synapses[k].reserve(per_source[k])" in queue and "holds_sources = wants_sources;" in queue
    expanding = [p for p in (folder / "code_objects").glob("*.cpp") if "_brianconv_entry" in p.read_text()]
    assert expanding and all("_pre_codeobject" in p.name for p in expanding)
    for row in table:
        point = {name: row[name] for name in grid}
        reference = tiny.simulate(x, device="numpy", **point)
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean((reference.outputs - reference.ann_outputs) ** 2)),
                                            rel=1e-9, abs=1e-12)
        assert row["synaptic_ops"] == pytest.approx(np.mean(reference.synaptic_ops), rel=1e-12)


def test_only_rounding_level_grid_warnings_are_dropped():
    """Brian2's "time grids not aligned" warning is a false alarm for 104.00000000000001 steps."""
    import logging

    template = "Group uses a dt of 100. us while TimedArray uses dt of {} (ratio: 1/{}) → time grids not aligned"
    keep = builder.objects._RoundingOnlyGridFilter().filter
    record = logging.LogRecord("brian2.input.timedarray", logging.WARNING, "", 0, "", None, None)
    record.msg = template.format("10.4 ms", "104.00000000000001")
    assert not keep(record)
    record.msg = template.format("250. us", "2.5")
    assert keep(record)
    record.msg = "another message"
    assert keep(record)


def _network_folders(root):
    """The build root's entries apart from the complete precompiled header (shared by every build)."""
    return [p for p in root.iterdir() if not p.name.startswith(FOLDER_PREFIX)]


def _fake_compiler(folder, version_text, exit_code):
    """An executable that prints ``version_text`` for ``--version`` and otherwise exits ``exit_code``."""
    path = folder / "fake-c++"
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version_text}'; exit 0; fi\nexit {exit_code}\n")
    path.chmod(0o755)
    return str(path)


def test_no_precompiled_header_for_clang_or_when_it_cannot_be_built(tmp_path):
    from brianconv.builder.headers import precompiled_header_args

    clang = _fake_compiler(tmp_path, "Apple clang version 15.0.0", 0)
    assert precompiled_header_args(clang, ["-O3"], tmp_path) == []
    broken_gcc = _fake_compiler(tmp_path, "g++ (GCC) 12.2.0 Copyright (C) Free Software Foundation, Inc.", 1)
    assert precompiled_header_args(broken_gcc, ["-O3"], tmp_path) == []
    assert not list(tmp_path.glob("precompiled-*"))  # nothing half-built is left to be trusted


@needs_compiler
def test_the_precompiled_header_is_built_once_and_compiles_the_same_object_code(tmp_path):
    """Brian2's code objects start from it: the object file must be byte-identical without it."""
    import subprocess

    from brianconv.builder.headers import STANDARD_HEADERS, precompiled_header_args

    compiler, flags = os.environ.get("CXX", "g++"), ["-w", "-O3", "-ffp-contract=off"]
    args = precompiled_header_args(compiler, flags, tmp_path)
    if not args:
        pytest.skip(f"{compiler} is not GCC: builds use no precompiled header")
    header = args[0][len("-include"):]
    gch = os.path.join(os.path.dirname(header), os.path.basename(header) + ".gch")
    built = os.stat(gch).st_mtime_ns
    assert precompiled_header_args(compiler, flags, tmp_path) == args and os.stat(gch).st_mtime_ns == built
    source = tmp_path / "kernel.cpp"
    # like Brian2's code objects, the file includes <iostream> and the rest of the header itself
    includes = "".join(f"#include <{name}>\n" for name in STANDARD_HEADERS)
    source.write_text(includes + "double f(const std::vector<double>& w) { double s = 0;"
                                 " for (double x : w) s += x * std::exp(-x); return s; }\n")
    objects = []
    for extra in ([], args):
        target = tmp_path / f"kernel{len(extra)}.o"
        subprocess.run([compiler, "-c", *flags, *extra, str(source), "-o", str(target)], check=True)
        objects.append(target.read_bytes())
    assert objects[0] == objects[1]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_source_major_chunks_join_to_the_stable_source_then_target_order(chunk):
    """The pieces the standalone build writes, joined, are every synapse once, sorted by (source,
    target, position) — checked against Python's sort of those tuples — with no piece over
    ``chunk`` synapses unless one source alone has more (source 4 has 9 here; 2 and 6 have none)."""
    from brianconv.builder.objects import _positions_of_sources, source_major_chunks, source_major_order
    from brianconv.connectivity import make_connections

    rng = np.random.default_rng(1)
    pre = np.concatenate([rng.choice([0, 1, 3, 5, 7], 30), np.full(9, 4)])
    post = rng.integers(0, 4, len(pre))  # repeated (pre, post) pairs: ties keep their positions
    connections = make_connections(pre, post, rng.random(len(pre)), 8, 4)
    pieces = list(source_major_chunks(connections, chunk))
    expected = [k for _, _, k in sorted(zip(pre, post, range(len(pre))))]
    assert np.concatenate(pieces).tolist() == expected == source_major_order(connections).tolist()
    for piece in pieces:
        assert len(piece) <= chunk or len(np.unique(pre[piece])) == 1
    assert list(source_major_chunks(make_connections([], [], [], 3, 2), chunk)) == []
    scanned = _positions_of_sources(connections.pre, 3, 5, block=chunk)  # the scan, block by block
    assert scanned.tolist() == [k for k, source in enumerate(pre) if 3 <= source < 5]
