"""Two processes simulating the same network at once share one build and never clobber it."""

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import needs_compiler

from brianconv.builder.headers import FOLDER_PREFIX

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.nn as nn
    import brianconv
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.rand(9, 6)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=8)
    result = snn.simulate(x, batch_size=4, build_root=sys.argv[1])
    print("RESULT " + json.dumps(dict(outputs=result.outputs.tolist(), compiled=result.timing["compiled"])))
""")


@needs_compiler
@pytest.mark.standalone
def test_two_processes_build_the_same_network_at_once(tmp_path):
    processes = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-2000:]
        line = next(text for text in out.splitlines() if text.startswith("RESULT "))
        results.append(json.loads(line[7:]))
    assert results[0]["outputs"] == results[1]["outputs"]
    # the network's folder, and the precompiled header both processes may have built, once
    folders = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(FOLDER_PREFIX))
    assert len(folders) == 1 and ".tmp-" not in folders[0], folders
    headers = [p.name for p in tmp_path.iterdir() if p.name.startswith(FOLDER_PREFIX)]
    assert len(headers) <= 1 and not any(".tmp-" in name for name in headers), headers
    assert (tmp_path / folders[0] / "brianconv_build.json").is_file()
