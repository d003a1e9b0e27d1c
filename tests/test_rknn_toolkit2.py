"""The facade on RKNN-Toolkit2: run only where `rknn.api` imports (.ci/run's interop stage).

The toolkit's PC simulator runs builds, export_rknn, init_runtime() and inference on x86; a
board is needed for eval_perf, eval_memory and load_rknn + runtime, so they are not tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rknn.api")
torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from channelcut.rknn import RKNN, demo  # noqa: E402 - after the skips
from test_rknn_quantize import (MEAN, STD, error_rows, run_readme_script,  # noqa: E402
                                seed_loader, write_images)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RKNN_MAGIC = b"RKNN"  # the first bytes of every .rknn file RKNN-Toolkit2 writes
FP16_TOLERANCE = 1e-2  # of the largest output value: the toolkit's simulator runs in fp16


def toolkit_run(tmp_path: Path, dataset: Path | None = None, backend: str | None = None,
                image: np.ndarray | None = None, **config) -> tuple[RKNN, np.ndarray]:
    rknn = RKNN(backend=backend)
    config = {"mean_values": [MEAN], "std_values": [STD]} | config
    assert rknn.config(model_pruning=True, target_platform="rk3588", **config) == 0
    assert seed_loader(tmp_path)(rknn) == 0
    assert rknn.build(do_quantization=dataset is not None, dataset=dataset) == 0
    assert rknn.init_runtime() == 0
    (output,) = rknn.inference([image], data_format="nhwc")
    return rknn, output


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (1, 224, 224, 3), np.uint8)


def test_default_backend_is_the_toolkit():
    assert RKNN().backend == "rknn-toolkit2"


def test_seed_demo_runs_through_the_toolkit(capsys):
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "I const name" in out  # channelcut's pruning log
    (line,) = [line for line in out.splitlines() if line.startswith("cos sim:")]
    assert float(line.split()[-1]) >= 0.999


def test_export_rknn_writes_rockchips_format_and_runs_like_onnx_runtime(tmp_path, image):
    rknn, got = toolkit_run(tmp_path, image=image)
    path = tmp_path / "model.rknn"
    assert rknn.export_rknn(path) == 0
    assert path.read_bytes()[:4] == RKNN_MAGIC  # not ONNX, whose protobuf starts 0x08
    _, want = toolkit_run(tmp_path, backend="onnxruntime", image=image)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= FP16_TOLERANCE * np.max(np.abs(want))


def test_quantized_build_through_the_toolkit(tmp_path, image):
    dataset = write_images(tmp_path, 4, 224, 224)
    rknn, got = toolkit_run(tmp_path, dataset=dataset, image=image)
    _, want = toolkit_run(tmp_path, backend="onnxruntime", image=image)
    assert demo.cos_sim(want, got) >= 0.99 and not np.allclose(got, want, atol=1e-4)
    # its error_analysis.txt and channelcut's share one layout
    assert rknn.accuracy_analysis([str(tmp_path / "images/0.png")], tmp_path / "snapshot") == 0
    assert error_rows(tmp_path / "snapshot" / "error_analysis.txt")


def test_readme_toolkit2_script_runs_unchanged_on_the_toolkit(tmp_path, monkeypatch, capsys):
    run_readme_script(tmp_path, monkeypatch, capsys)
    assert (tmp_path / "model.rknn").read_bytes()[:4] == RKNN_MAGIC


def test_reorder_channel_with_per_channel_mean_matches_onnx_runtime(tmp_path, image):
    """Toolkit2 has no reorder_channel: the reorder stays in the model, after the toolkit's
    mean/std, which are given to it in the raw input's channel order."""
    config = {"mean_values": [[10, 120, 250]], "std_values": [[30, 60, 90]],
              "reorder_channel": "2 1 0"}
    _, got = toolkit_run(tmp_path, image=image, **config)
    _, want = toolkit_run(tmp_path, backend="onnxruntime", image=image, **config)
    assert np.max(np.abs(got - want)) <= FP16_TOLERANCE * np.max(np.abs(want))


def test_toolkit1_options_toolkit2_dropped_are_named_and_ignored(tmp_path, image, capsys):
    rknn = RKNN()
    assert rknn.config(batch_size=4, epochs=2, quantized_dtype="asymmetric_affine-u8",
                       target_platform="rk3588") == 0
    assert seed_loader(tmp_path)(rknn) == 0
    capsys.readouterr()
    dataset = write_images(tmp_path, 2, 224, 224)
    assert rknn.build(do_quantization=True, dataset=dataset, rknn_batch_size=-1) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("W ")]
    assert "W config: RKNN-Toolkit2 does not take batch_size, epochs; ignored" in warnings
