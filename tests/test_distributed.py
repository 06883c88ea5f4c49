"""``executor=``: simulate and sweep on a Dask LocalCluster with two worker processes.

One small rate network with Poisson input (spikes, synaptic operations and counter-based random
inputs) is compiled once for the module, on the client; a worker plugin counts every standalone
compilation on the workers, which must stay at zero.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import needs_compiler

import brianconv
from brianconv import distributed as bd
from brianconv.builder import MonitorRequest
from brianconv.errors import ClusterError, InvalidValueError, MissingExtraError

IMAGES, BATCH = 12, 2  # six batch tasks
GRID = {"seed": [0, 3], "threshold_scale": [0.8, 1.0]}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A rate network with Poisson input, its inputs and the simulate options every test uses."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(IMAGES, 12)
    snn = brianconv.convert(model, "rate", calibration=x, input="poisson", duration=48)
    spiking = [p.name for p in snn.description.populations if p.threshold is not None]
    options = dict(batch_size=BATCH, spikes=spiking, build_root=tmp_path_factory.mktemp("client-builds"))
    return snn, x.numpy(), options


@pytest.fixture(scope="module")
def reference(network):
    """The network simulated in this process, one run at a time (compiles the module's program)."""
    snn, x, options = network
    return snn.simulate(x, n_workers=1, **options)


def _count_builds():
    """On a worker: count standalone compilations and unpacked builds (``cache._test_compiles``, ...)."""
    from brianconv import distributed
    from brianconv.builder import cache

    if hasattr(cache, "_test_compiles"):
        return
    compile_, unpack = cache._compile, distributed.unpack_build
    cache._test_compiles = distributed._test_unpacks = 0

    def counting_compile(*args, **kwargs):
        cache._test_compiles += 1
        return compile_(*args, **kwargs)

    def counting_unpack(*args, **kwargs):
        distributed._test_unpacks += 1
        return unpack(*args, **kwargs)

    cache._compile, distributed.unpack_build = counting_compile, counting_unpack


def _forget_programs():
    """On a worker: drop the programs it obtained, so that the next task obtains its program anew."""
    from brianconv import distributed

    distributed._PROGRAMS.clear()


def _builds():
    """On a worker: (compilations, unpacked builds) since the worker started."""
    from brianconv import distributed
    from brianconv.builder import cache

    return cache._test_compiles, distributed._test_unpacks


@pytest.fixture(scope="module")
def worker_root(tmp_path_factory):
    """The workers' build cache ($BRIANCONV_BUILD_DIR there), apart from the client's."""
    return tmp_path_factory.mktemp("worker-builds")


@pytest.fixture(scope="module")
def client(worker_root):
    """A LocalCluster of two single-threaded worker processes with their own build cache."""
    dask_distributed = pytest.importorskip("dask.distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

    class CountBuilds(dask_distributed.WorkerPlugin):
        def setup(self, worker):  # also on a worker the nanny restarts
            _count_builds()

    cluster = dask_distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                            env={"BRIANCONV_BUILD_DIR": str(worker_root)})
    client = dask_distributed.Client(cluster)
    client.register_plugin(CountBuilds())
    yield client
    client.close()
    cluster.close()


def _assert_same_results(result, expected):
    assert result.n_images == expected.n_images == IMAGES
    assert np.array_equal(result.outputs, expected.outputs)
    for name in expected.spike_counts:
        assert np.array_equal(result.spike_counts[name], expected.spike_counts[name]), name
        assert np.array_equal(result.synaptic_ops_per_population[name], expected.synaptic_ops_per_population[name])
    assert set(result.spikes) == set(expected.spikes)
    for name, (image, neuron, step) in expected.spikes.items():
        for got, want in zip(result.spikes[name], (image, neuron, step)):
            assert np.array_equal(got, want), name


@needs_compiler
@pytest.mark.standalone
def test_cluster_results_equal_one_process_with_poisson_input(network, reference, client):
    snn, x, options = network
    finished = []
    result = snn.simulate(x, executor=client, progress=finished.append, **options)
    _assert_same_results(result, reference)
    assert reference.spike_counts["input"].sum() > 0  # the Poisson input spiked
    assert sorted(finished) == [BATCH] * (IMAGES // BATCH)
    assert not result.timing["compiled"]


@needs_compiler
@pytest.mark.standalone
def test_cluster_sweep_equals_the_sweep_here_in_grid_order(network, reference, client):
    snn, x, options = network
    here = brianconv.sweep(snn, x, GRID, progress=False, **options)
    there = brianconv.sweep(snn, x, GRID, progress=False, executor=client, **options)
    assert there.rows == here.rows
    assert len({row["synaptic_ops"] for row in here.rows}) == len(here.rows)  # the points differ


@needs_compiler
@pytest.mark.standalone
def test_workers_never_compile_the_cached_program(network, reference, client):
    snn, x, options = network
    for _ in range(2):
        snn.simulate(x, executor=client, **options)
    brianconv.sweep(snn, x, GRID, progress=False, executor=client, **options)
    assert set(client.run(_builds).values()) == {(0, 0)}  # they run the client's folder (same machine)


@needs_compiler
@pytest.mark.standalone
def test_workers_without_the_folder_unpack_it_once_and_run_it(network, reference, client, worker_root, tmp_path):
    snn, x, options = network
    monitors = MonitorRequest(tuple(options["spikes"]), {})
    program = snn.program("cpp_standalone", BATCH, monitors, options["build_root"])
    spec = bd.ProgramSpec.of(program, "cpp_standalone", monitors)
    unseen = replace(spec, directory=tmp_path / "not-shared" / program.directory.name)  # no worker sees it
    archive = bd.pack_build(program.directory)
    values = snn.scheme.setup(snn.description).batch_values(0)
    batch = x[:BATCH]
    client.run(_forget_programs)
    futures = [client.submit(bd._run_batch, unseen, archive, batch, values, pure=False, workers=[worker])
               for worker in client.scheduler_info()["workers"] for _ in range(2)]
    expected = program.run(batch, values)
    for records in client.gather(futures):
        for field in ("output", "spike_count", "synop_count"):
            assert np.array_equal(getattr(records, field), getattr(expected, field)), field
    counts = client.run(_builds).values()
    assert sum(compiles for compiles, _ in counts) == 0
    # each worker unpacks at most once, for both of its tasks (4 without the cache); two workers that
    # reach the empty folder at the same moment may both unpack (unpack_build: the rename's loser discards)
    assert 1 <= sum(unpacks for _, unpacks in counts) <= 2
    assert bd.is_build(worker_root / program.directory.name, spec.fingerprint)


def test_the_numpy_runtime_device_on_the_cluster_gives_the_same_results(network, client):
    snn, x, options = network
    options = dict(options, build_root=None)
    here = snn.simulate(x[:4], device="numpy", **options)
    there = snn.simulate(x[:4], device="numpy", executor=client, **options)
    assert np.array_equal(there.outputs, here.outputs)
    for name in here.spike_counts:
        assert np.array_equal(there.spike_counts[name], here.spike_counts[name]), name


def test_a_missing_dask_names_the_pip_command(network, monkeypatch):
    snn, x, options = network
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    assert bd.check_executor(None) is None  # no executor: Dask is never imported
    with pytest.raises(MissingExtraError, match=r"pip install brianconv\[dask\]"):
        snn.simulate(x, executor="tcp://127.0.0.1:8786", **options)
    with pytest.raises(MissingExtraError, match=r"pip install brianconv\[dask\]"):
        brianconv.sweep(snn, x, GRID, progress=False, executor="tcp://127.0.0.1:8786", **options)


def test_brianconv_imports_without_dask():
    script = textwrap.dedent("""
        import sys
        sys.modules.update({"dask": None, "dask.distributed": None, "distributed": None})
        import brianconv, brianconv.distributed
        print("OK", "dask" in sys.modules and sys.modules["dask"] is not None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["OK", "False"]


def test_an_unreachable_scheduler_is_named(network, monkeypatch):
    pytest.importorskip("dask.distributed")
    snn, x, options = network
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(bd, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(ClusterError, match=f"No Dask scheduler answered at '{address}' within 1 s"):
        snn.simulate(x, executor=address, **options)
    with pytest.raises(InvalidValueError, match="executor must be a dask.distributed.Client"):
        snn.simulate(x, executor=2, **options)


def test_a_closed_client_is_refused(network, client):
    import dask.distributed

    snn, x, options = network
    closed = dask.distributed.Client(client.scheduler.address)
    closed.close()
    with pytest.raises(ClusterError, match="'closed', not running"):
        snn.simulate(x, executor=closed, **options)


# last: the nanny's restart of the killed worker may take a while
@needs_compiler
@pytest.mark.standalone
def test_a_killed_worker_loses_and_duplicates_no_image(network, reference, client):
    snn, x, options = network
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(images):
        if killed:
            return
        for worker, keys in client.processing().items():
            if any("brianconv-batch" in str(key) for key in keys) and worker in pids:
                os.kill(pids[worker], signal.SIGKILL)
                killed.append((worker, list(keys)))
                return

    result = snn.simulate(x, executor=client, progress=kill_a_busy_worker, **options)
    assert killed, "no worker was running a batch when the first one finished"
    rerun = [key for key in killed[0][1] if _ran_twice(client, key)]
    assert rerun, "the killed worker's batch did not run again elsewhere"
    _assert_same_results(result, reference)


def _ran_twice(client, key):
    """True when the scheduler sent ``key`` to a worker twice (its story: (origin, key, start, finish, ...))."""
    story = client.story(key, on_error="ignore")
    return sum(1 for event in story if event[0] == "scheduler" and event[3] == "processing") >= 2
