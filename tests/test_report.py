"""The report a deployment engineer reads (issue 15): the text's order and 80 columns, the JSON
in the same order, the HTML file, progress on a terminal, verification on the user's data."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from channelcut import api, cli, verify
from channelcut.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import report_screenshot  # noqa: E402

# exporter-style names, long enough that the tables must shorten them to fit 80 columns
CONV1 = "/backbone/backbone.stage_one/backbone.stage_one.0/expand_convolution/Conv"
CONV2 = "/backbone/backbone.stage_one/backbone.stage_one.0/project_convolution/Conv"
SIDE = "/side_branch/side_branch.0/Conv"
W1 = "onnx::Conv_weight_of_the_expanding_convolution_with_a_long_exporter_name_1"


def layered_model() -> onnx.ModelProto:
    """x[1,3,8,8] -> conv1 (4 out, padded) -> Relu -> conv2 (2 out, padded) -> y, and a side
    conv (2 out) read by a TopK -> z.

    conv1's channel 3 is zero (bias -1 through Relu) and channel 2 the constant 1 (zero
    weights, bias 1): the full cut removes both, folding the constant into a border map of
    conv2 (it is padded). The side conv's channel 1 is zero too, but TopK has no channel rule:
    it keeps it (one blocker).
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w1[2:], b1[2], b1[3] = 0.0, 1.0, -1.0
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    ws = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    ws[1] = 0.0
    pads = {"pads": [1, 1, 1, 1]}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", W1, "b1"], ["h"], name=CONV1, **pads),
         helper.make_node("Relu", ["h"], ["r"], name="/backbone/relu/Relu"),
         helper.make_node("Conv", ["r", "w2"], ["y"], name=CONV2, **pads),
         helper.make_node("Conv", ["x", "ws"], ["s"], name=SIDE),
         helper.make_node("TopK", ["s", "k"], ["z", "zi"], name="/head/TopK", axis=1)],
        "layered",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in (
            (w1, W1), (b1, "b1"), (w2, "w2"), (ws, "ws"), (np.array([1], np.int64), "k"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "layered.onnx"
    onnx.save(layered_model(), str(path))
    return path


def cut_files(capsys, model_path: Path, *more: str) -> tuple[str, dict, str]:
    """Run `channelcut cut -v` (every rewrite allowed) with JSON and HTML reports: (stdout,
    JSON, HTML)."""
    out_dir = model_path.parent
    code = cli.main(["cut", str(model_path), "-o", str(out_dir / "cut.onnx"), "-v",
                     "--target", "min-flops",  # every rewrite: a border fold adds constants
                     "--report-json", str(out_dir / "r.json"), "--report-html",
                     str(out_dir / "r.html"), *more])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, json.loads((out_dir / "r.json").read_text()), (out_dir / "r.html").read_text()


def test_text_report_summary_first_layers_by_name_80_columns(capsys, model_path):
    out, data, _ = cut_files(capsys, model_path)
    lines = out.splitlines()
    assert lines[-1].startswith("wrote ")  # the output's path, whole
    lines = lines[:-2]
    assert max(len(line) for line in lines) <= 80
    titles = ["summary", "channels per layer (kept/original)", "const change detail",
              "folds and reinsertions", "blockers", "verification", "time per stage"]
    starts = [next(i for i, line in enumerate(lines) if line.startswith(t)) for t in titles]
    assert starts == sorted(starts) and starts[0] == 0

    summary = "\n".join(lines[:starts[1]])
    for label in ("model:", "inputs:", "mode:", "weights:", "params:", "FLOPs:", "removed:",
                  "verified:", "blocked most:"):
        assert f"\n{label}" in summary
    assert "x 1x3x8x8" in summary and "full cut" in summary
    assert "blocked most: TopK (1 channels)" in summary

    # layers by module path, channel pairs kept/original as in the JSON's [kept, original]
    layer_rows = lines[starts[1] + 2:starts[2] - 1]
    by_layer = {row.split()[0]: row.split()[2:4] for row in layer_rows}
    json_layers = {layer["layer"]: layer for layer in data["layers"]}
    assert set(by_layer) == set(json_layers) == {
        "backbone.stage_one.0.expand_convolution", "backbone.stage_one.0.project_convolution"}
    for name, (cin, cout) in by_layer.items():
        assert cin == "/".join(map(str, json_layers[name]["in_channels"]))
        assert cout == "/".join(map(str, json_layers[name]["out_channels"]))
    assert json_layers["backbone.stage_one.0.expand_convolution"]["out_channels"] == [2, 4]

    # every constant under its layer, with its role; the numbers whole even where the
    # names are shortened
    const_lines = lines[starts[2] + 2:starts[3] - 1]
    assert const_lines[0] == "backbone.stage_one.0.expand_convolution (Conv)"
    assert any("..." in line for line in const_lines)  # W1's name is longer than its column
    for change in data["const_changes"]:
        numbers = [str(change[k]) for k in ("src_size", "pruned_size", "diff")]
        [row] = [line for line in const_lines if line.split()[-3:] == numbers
                 and change["role"] in line]
        header = next(line for line in reversed(const_lines[:const_lines.index(row)])
                      if not line.startswith("  "))
        assert header.startswith(change["layer"])
    roles = {c["role"] for c in data["const_changes"]}
    assert {"weight", "bias", "ones shape", "border"} <= roles

    seconds = lines[starts[6] + 2:]
    assert [row.split()[0] for row in seconds[:-1]] == [s.split()[0] for s in STAGES]


def test_json_in_the_text_order_with_what_was_cut(capsys, model_path):
    _, data, _ = cut_files(capsys, model_path, "--seed", "3", "--verify-samples", "2")
    keys = list(data)
    assert keys[:7] == ["tool", "version", "model_path", "input_shapes", "target", "mode",
                        "objective"]
    order = ["weight_bytes_before", "flops_before", "checks", "most_blocked", "layers",
             "const_changes", "sites", "blockers", "seconds"]
    assert [keys.index(k) for k in order] == sorted(keys.index(k) for k in order)
    assert data["version"] == cli.__version__ and data["model_path"].endswith("layered.onnx")
    assert data["input_shapes"] == {"x": [1, 3, 8, 8]} and data["mode"] == "full"
    assert data["target"] == "min-flops"
    assert data["pairs"] == "[kept, original]"
    assert list(data["seconds"]) == list(STAGES)
    assert data["verify_inputs"] == "2 seeded random input sets, seed 3"


def test_html_report_is_one_self_contained_file_with_the_picture(capsys, model_path):
    _, data, page = cut_files(capsys, model_path)
    assert not re.search(r"https?:|<script|<link|<img|\bsrc=|url\(|@import", page)
    assert page.count("<svg") == 1 and "</svg>" in page
    picture = page[page.index("<svg"):page.index("</svg>")]
    for name in ("backbone.stage_one.0.expand_convolution", "side_branch.0"):
        assert name in picture  # every weighted layer, in network order, kept ones too
    assert picture.index("expand_convolution") < picture.index("project_convolution") \
        < picture.index("side_branch.0")
    assert "2/4" in picture  # the expand conv's output channels, kept/original
    weights = f"{data['weight_bytes_before'] / 1e6:.2f} MB &rarr; " \
              f"{data['weight_bytes_after'] / 1e6:.2f} MB"
    assert weights in page
    assert f"{data['flops_before'] / 1e9:.3f} G &rarr; {data['flops_after'] / 1e9:.3f} G" in page
    assert f"cosine {min(c['cosine'] for c in data['checks']):.7f}" in page
    blockers = page[page.index("<h2>blockers"):page.index("<h2>verification")]
    assert "TopK" in blockers and "/head/TopK" in blockers


@pytest.mark.skipif(report_screenshot.browser() is None, reason="no chromium on PATH")
def test_html_report_renders_in_chromium(capsys, model_path, tmp_path):
    image = pytest.importorskip("PIL.Image")
    _, _, _ = cut_files(capsys, model_path)
    png = tmp_path / "shot.png"
    report_screenshot.screenshot(tmp_path / "r.html", png, height=900)
    pixels = np.asarray(image.open(png).convert("RGB")).reshape(-1, 3)
    colors = {tuple(int(report_screenshot_color[i:i + 2], 16) for i in (1, 3, 5))
              for report_screenshot_color in ("#2f6fb5", "#f2a65a")}
    for color in colors:  # the kept (blue) and cut (orange) bars are drawn
        assert (pixels == color).all(axis=1).sum() > 500


# --- progress -----------------------------------------------------------------------------------

def run_on_a_terminal(*argv: str) -> tuple[int, str, str]:
    """The console script with stderr on a pseudo-terminal: (exit code, stdout, terminal)."""
    main, secondary = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "channelcut.cli", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    screen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode()
    os.close(main)
    return proc.wait(timeout=120), out, screen.decode(errors="replace")


def test_progress_on_a_terminal_and_none_with_quiet(model_path, tmp_path):
    code, out, screen = run_on_a_terminal("cut", str(model_path), "-o", str(tmp_path / "a.onnx"))
    assert code == 0
    for stage in STAGES:
        assert stage in screen
    assert "summary" in out and "analyse" not in out  # progress stays off stdout
    code, out, screen = run_on_a_terminal("cut", str(model_path), "-o", str(tmp_path / "b.onnx"),
                                          "-q")
    assert (code, out, screen) == (0, "", "")


def test_a_stage_that_runs_again_reuses_its_line():
    """The guards redo analyse/decide/rewrite: one line per stage, counting the runs."""
    from rich.console import Console  # noqa: PLC0415

    from channelcut.progress import TerminalProgress  # noqa: PLC0415
    from channelcut.stages import Stages  # noqa: PLC0415

    console = Console(record=True, force_terminal=False, width=100)
    with TerminalProgress(console) as progress:
        stages = Stages(progress)
        for _ in range(3):
            with stages.stage("analyse"), stages.stage("decide"):
                pass
    assert len(progress.progress.tasks) == 2
    assert [task.description for task in progress.progress.tasks] == ["analyse x3", "decide x3"]
    assert all(task.finished for task in progress.progress.tasks)


def test_no_progress_when_stderr_is_not_a_terminal_unless_verbose(capsys, model_path, tmp_path):
    assert cli.main(["cut", str(model_path), "-o", str(tmp_path / "a.onnx")]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main(["inspect", str(model_path), "-v"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" done in ")[0] for line in err] == [
        f"channelcut: {s}" for s in ("load", "fold shapes", "analyse", "decide", "rewrite")]


# --- verification on the user's data --------------------------------------------------------

@pytest.fixture
def recorded_feeds(monkeypatch) -> list[dict[str, np.ndarray]]:
    """Every feed verification runs a model on: the original's on every sample, then the
    cut's (one session at a time)."""
    seen: list[dict[str, np.ndarray]] = []
    run = verify._run

    def recording(session, feeds):
        seen.append(feeds)
        return run(session, feeds)

    monkeypatch.setattr(verify, "_run", recording)
    return seen


def test_verify_inputs_npz_is_what_verification_runs_on(capsys, model_path, tmp_path,
                                                       recorded_feeds):
    samples = np.random.default_rng(7).standard_normal((3, 1, 3, 8, 8)).astype(np.float32) * 50
    np.savez(tmp_path / "data.npz", x=samples)
    out, data, _ = cut_files(capsys, model_path, "--verify-inputs", str(tmp_path / "data.npz"))
    # each sample runs through the original and the cut model
    assert len(recorded_feeds) == 6
    for k in range(3):
        np.testing.assert_array_equal(recorded_feeds[k]["x"], samples[k])
        np.testing.assert_array_equal(recorded_feeds[3 + k]["x"], samples[k])
    assert data["verify_inputs"] == f"{tmp_path / 'data.npz'} inputs"
    assert f"on {tmp_path / 'data.npz'}" in " ".join(out.split())


def test_verify_inputs_folder_of_npy_and_samples_cap(capsys, model_path, tmp_path,
                                                    recorded_feeds):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    for name, array in zip(("a", "b", "c"), arrays):
        np.save(folder / f"{name}.npy", array)
    cut_files(capsys, model_path, "--verify-inputs", str(folder), "--verify-samples", "2")
    assert len(recorded_feeds) == 4
    np.testing.assert_array_equal(recorded_feeds[0]["x"], arrays[0])
    np.testing.assert_array_equal(recorded_feeds[1]["x"], arrays[1])


def test_verify_samples_and_seed_draw_random_inputs(model_path, recorded_feeds):
    api.cut(str(model_path), verify_samples=4, seed=4)
    # the default three sets from seed 4 (the third of large magnitude), then one more
    expected = [*verify.input_sets(layered_model(), {"x": (1, 3, 8, 8)}, 4),
                verify.random_inputs(layered_model(), {"x": (1, 3, 8, 8)}, 4 + 3)]
    assert len(recorded_feeds) == 8
    for k in range(4):
        np.testing.assert_array_equal(recorded_feeds[k]["x"], expected[k]["x"])
    assert np.abs(expected[2]["x"]).max() > 100 * np.abs(expected[3]["x"]).max()
    recorded_feeds.clear()
    api.cut(str(model_path))  # by default the three sets from seed 0
    assert len(recorded_feeds) == 6


@pytest.mark.parametrize("make, words", [
    (lambda d: np.savez(d / "v.npz", images=np.zeros((1, 3, 8, 8), np.float32)),
     ["no array for input 'x'", "images"]),
    (lambda d: np.savez(d / "v.npz", x=np.zeros((1, 3, 4, 4), np.float32)),
     ["shape [1, 3, 4, 4]", "[1, 3, 8, 8]"]),
    (lambda d: (d / "v.npz").write_bytes(b"not numpy"), ["cannot be read"]),
])
def test_bad_verify_inputs_are_one_line_errors(capsys, model_path, tmp_path, make, words):
    make(tmp_path)
    code = cli.main(["cut", str(model_path), "-o", str(tmp_path / "o.onnx"), "--verify-inputs",
                     str(tmp_path / "v.npz")])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_USER_ERROR and len(err.splitlines()) == 1, err
    assert err.startswith("channelcut: error: ") and all(w in err for w in words), err
    assert not (tmp_path / "o.onnx").exists()


def test_verify_samples_must_be_positive(capsys, model_path, tmp_path):
    code = cli.main(["cut", str(model_path), "-o", str(tmp_path / "o.onnx"),
                     "--verify-samples", "0"])
    assert code == cli.EXIT_USER_ERROR and "--verify-samples" in capsys.readouterr().err


# --- a fast start and help texts ----------------------------------------------------------------

HEAVY = ("onnx", "onnx_ir", "onnxruntime", "numpy", "rich", "sympy", "channelcut.api")


@pytest.mark.parametrize("argv", [["--help"], ["cut", "--help"], ["cut", "m.onnx"],
                                  ["inspect", "--bogus"]])
def test_help_and_usage_errors_import_nothing_heavy(argv):
    code = (f"import sys; from channelcut import cli; code = cli.main({argv!r}); "
            f"print([m for m in {HEAVY!r} if m in sys.modules]); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
    assert proc.returncode == (0 if "--help" in argv else cli.EXIT_USER_ERROR)


@pytest.mark.parametrize("command", ["cut", "inspect", "demo"])
def test_each_command_s_help_says_the_exit_codes(capsys, command):
    assert cli.main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 ok; 2 bad input or usage" in text
    if command != "demo":
        assert "IN.onnx the pruned ONNX model" in text
    if command == "cut":
        assert "where to write the cut model" in text
