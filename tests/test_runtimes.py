"""The runtime layer (issue 15 §1): every registered backend runs here or says in one line why
not, files go to the runtime their suffix names, an ``.onnx`` to the fastest runtime that reads
it (OpenVINO, else ONNX Runtime), scoring an ONNX export imports neither torch nor timm, and
OpenVINO scores the same ONNX file as ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edge_iqa
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes import CONFIG_KEY, default_runtimes, get_runtime, load_artifact, runtime_for, runtime_names

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, tiny_student) -> tuple[Path, object]:
    """A random-init tiny student and its FP32 ONNX export (the exporter's own conversion)."""
    import torch

    from edge_iqa.checkpoint import save_checkpoint
    from edge_iqa.model import build_model
    from export.onnx import torch2onnx

    torch.manual_seed(0)
    model = build_model(tiny_student).eval()
    folder = tmp_path_factory.mktemp("runtimes")
    save_checkpoint(folder / "tiny.pt", model)
    return torch2onnx(model, folder / "tiny.onnx"), model


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return [*paths[:2], folder / "broken.jpg", *paths[2:]]


@pytest.mark.parametrize("name", runtime_names())
def test_every_backend_has_the_interface_and_runs_or_says_why_not(name):
    backend = get_runtime(name)
    assert backend.NAME == name and isinstance(backend.SUFFIXES, tuple) and backend.SUFFIXES
    assert all(s.startswith(".") for s in backend.SUFFIXES)
    reason = backend.unavailable()
    assert reason is None or (isinstance(reason, str) and reason and "\n" not in reason), reason
    if reason is None:
        assert isinstance(backend.version(), str) and backend.version() != "not installed"


def test_the_runtimes_this_machine_has_run_and_the_others_give_their_reason():
    here = {n: get_runtime(n).unavailable() for n in runtime_names()}
    for name in ("torch", "onnxruntime", "openvino"):  # the test extra installs these
        assert here[name] is None, f"{name}: {here[name]}"
    if sys.platform != "darwin":
        assert "macOS" in here["coreml"]


def test_files_go_to_the_runtime_their_suffix_names(tmp_path):
    assert runtime_for("m.pt") == runtime_for("m.pth") == "torch"
    assert runtime_for("m.onnx") == "onnxruntime"
    assert runtime_for("m.plan") == runtime_for("m.engine") == "tensorrt"
    assert runtime_for("m.mlpackage") == "coreml"
    with pytest.raises(EdgeIQAError, match="unknown model file type"):
        runtime_for("m.txt")
    with pytest.raises(EdgeIQAError, match="unknown runtime 'tflite'; choose one of torch, onnxruntime"):
        get_runtime("tflite")
    with pytest.raises(EdgeIQAError, match="file not found"):
        load_artifact(tmp_path / "missing.onnx")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(EdgeIQAError, match=r"runtime openvino takes \.onnx files, not \.pt"):
        load_artifact(tmp_path / "m.pt", "openvino")


def test_an_engine_here_is_one_line_naming_its_sidecar_or_the_missing_runtime(onnx_model, tmp_path):
    trt = get_runtime("tensorrt")
    engine = tmp_path / "model_int8.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(EdgeIQAError, match="no model_int8.plan.json next to the engine"):
        load_artifact(engine)
    _, model = onnx_model
    (tmp_path / "model_int8.plan.json").write_text(json.dumps({CONFIG_KEY: model.config.to_dict()}))
    if trt.unavailable() is None:
        pytest.skip("tensorrt imports here: tests/test_export_matrix.py runs real engines")
    with pytest.raises(EdgeIQAError) as err:
        load_artifact(engine)
    assert str(err.value) == f"{engine}: {trt.unavailable()}" and "\n" not in str(err.value)


def test_an_onnx_file_goes_to_the_fastest_runtime_that_reads_it(onnx_model, photos, tmp_path):
    import onnx

    from export.quantize import ViewCalibrationReader, quantize_onnx

    path, _ = onnx_model
    assert default_runtimes(path) == ["openvino", "onnxruntime"]  # the test extra installs openvino
    assert default_runtimes(path, device="cuda") == ["onnxruntime"]
    assert default_runtimes("m.pt") == ["torch"]
    assert edge_iqa.load(path, threads=1).loaded.runtime == "openvino"
    # the QOperator INT8 layout has ONNX Runtime's com.microsoft ops, which OpenVINO cannot read
    reader = ViewCalibrationReader(edge_iqa.load(path).config, [p for p in photos if p.name != "broken.jpg"])
    qoperator = quantize_onnx(path, tmp_path / "int8.onnx", reader, flavour="cpu", layout="qoperator")
    assert any(node.domain == "com.microsoft" for node in onnx.load(qoperator).graph.node)
    assert edge_iqa.load(qoperator, threads=1).loaded.runtime == "onnxruntime"
    with pytest.raises(EdgeIQAError, match="OpenVINO cannot read it"):
        edge_iqa.load(qoperator, runtime="openvino")


def test_the_score_command_says_which_runtime_it_scored_in(onnx_model, photos):
    done = subprocess.run([sys.executable, "-m", "edge_iqa.cli", "score", str(onnx_model[0]), str(photos[0]), "--json",
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runtime"].startswith("openvino ")
    done = subprocess.run([sys.executable, "-m", "edge_iqa.cli", "score", str(onnx_model[0]), str(photos[0]),
                           "--runtime", "onnxruntime", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 scored, 0 failed; runtime onnxruntime " in done.stderr, done.stderr


def test_openvino_scores_the_onnx_file_as_onnx_runtime_does(onnx_model, photos):
    path, _ = onnx_model
    ort = edge_iqa.load(path, runtime="onnxruntime", threads=1)
    ov = edge_iqa.load(path, runtime="openvino", threads=1)
    assert (ort.loaded.runtime, ov.loaded.runtime) == ("onnxruntime", "openvino")
    assert ov.loaded.threads == 1 and ov.loaded.device == "CPU"
    a, b = ort.score_paths(photos, batch_size=2), ov.score_paths(photos, batch_size=2)
    assert [r.error is None for r in a] == [r.error is None for r in b] == [True, True, False, True, True, True]
    got = np.array([r.score for r in b if r.score is not None])
    want = np.array([r.score for r in a if r.score is not None])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)  # FP32 in both (OpenVINO's f32 precision hint)


def test_every_backend_that_runs_here_scores_alike(onnx_model, photos):
    path, _ = onnx_model
    torch_scores = edge_iqa.load(path.with_suffix(".pt"), threads=1).score_paths(photos)
    onnx_scores = edge_iqa.load(path, threads=1).score_paths(photos)
    for t, o in zip(torch_scores, onnx_scores):
        assert (t.score is None) == (o.score is None) and (t.error == o.error)
        if t.score is not None:
            assert abs(t.score - o.score) < 1e-4


def test_decoding_threads_give_the_rows_of_the_plain_loop_in_order(onnx_model, photos):
    scorer = edge_iqa.load(onnx_model[0], threads=1)
    plain = scorer.score_paths(photos * 3, batch_size=2, num_workers=0)
    threaded = scorer.score_paths(photos * 3, batch_size=2, num_workers=2)
    assert plain == threaded and [r.path for r in threaded] == [str(p) for p in photos * 3]
    assert "broken.jpg" in plain[2].error


BLOCK_TORCH = """
import sys, json, importlib.abc

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ImportError(f'{name} is blocked: scoring an export must not import it')
        return None

if sys.argv[1] == 'block':
    sys.meta_path.insert(0, NoTorch())
from edge_iqa.cli import main
code = main(['score', *sys.argv[2:], '--json'])
print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'timm': 'timm' in sys.modules}))
"""


@pytest.mark.parametrize("torch_importable", [False, True], ids=["torch-blocked", "torch-installed"])
def test_scoring_an_onnx_export_never_imports_torch(onnx_model, photos, torch_importable):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "allow" if torch_importable else "block",
                           str(onnx_model[0]), str(photos[0]), str(photos[1])],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, proc.stderr[-2000:]
    scored, flags = json.loads("\n".join(lines[:-1])), json.loads(lines[-1])
    assert flags == {"code": 0, "torch": False, "timm": False}
    assert [r["error"] for r in scored["results"]] == [None, None]


GPU_BUFFERS = """
import sys, json
sys.meta_path.insert(0, NoTorch())
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.cuda_buffers import DeviceBuffers
import numpy as np
try:
    buffers = DeviceBuffers()
    pointer = buffers.upload('x', np.arange(6, dtype=np.float32).reshape(2, 3))
    back = buffers.download('x', (2, 3))
    outcome = {'ran': True, 'round_trip': back.tolist(), 'pointer': pointer != 0}
    buffers.close()
except EdgeIQAError as err:
    outcome = {'ran': False, 'error': str(err)}
print(json.dumps({**outcome, 'torch': 'torch' in sys.modules}))
"""


def test_engine_buffers_use_the_cuda_runtime_bindings_never_torch():
    """The TensorRT backend's device memory goes through cuda-bindings with torch blocked: on a GPU
    the copy round-trips, without one CUDA's own error comes back as one line naming the call."""
    pytest.importorskip("cuda.bindings", reason="cuda-bindings is not installed (edge-iqa[tensorrt] brings it)")
    block = BLOCK_TORCH.split("if sys.argv[1]")[0]
    proc = subprocess.run([sys.executable, "-c", block + GPU_BUFFERS], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["torch"] is False
    if outcome["ran"]:
        assert outcome["round_trip"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and outcome["pointer"]
    else:
        assert outcome["error"].startswith("CUDA cudaStreamCreate failed: ") and "\n" not in outcome["error"]


def test_engine_buffers_without_the_cuda_bindings_say_what_to_install(monkeypatch):
    from edge_iqa.runtimes import cuda_buffers

    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(EdgeIQAError, match=r"^TensorRT engines need NVIDIA's CUDA runtime bindings .*pip install cuda-bindings"):
        cuda_buffers.cuda_runtime()
