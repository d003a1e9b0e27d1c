"""channelcut on LLaMA-style decoders from a few MB to several GB (issue 14): wall time and peak
RSS of `channelcut cut` (the CLI, a child process) with and without verification, against
onnxslim on the same file, and whether both grow linearly with the model.

Each model is a stack of decoder layers (tests/llama.py: RMSNorm, q/k/v/o attention with
Reshape to heads, SwiGLU MLP) written with onnx.helper and numpy, its weights in one external
data file. In every layer a quarter of the heads are zeroed (q, k, v columns and o rows) and
30-50% of the MLP's hidden channels (gate and up columns, down rows), so the exact cut is
known: the script checks that the cut model's projections lost exactly those heads and
channels, and that the outputs match (the cut's own verification; on models up to --ort-mb
also its own ONNX Runtime run of the unverified cut).

Peak RSS is the child's maximum resident set (os.wait4's rusage, per child), including its
own children; "x size" divides it by the model's size on disk.

    python bench/llm_scale.py [--sizes 8,64,256] [--dtypes fp32,fp16] [--out DIR]
                              [--no-onnxslim] [--keep]

Run sizes that may take more than 3 GB of memory one at a time on a shared machine
(`flock /tmp/bigmem.lock python bench/llm_scale.py --sizes 3584`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tests_llama", REPO / "tests" / "llama.py")
llama = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(llama)

DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}
HEAD_DIM = 64
BATCH, SEQ = 1, 8
ALIGN = 4096  # external data offsets, so that a reader may map each tensor
EXACT_REL_ERROR = 1e-3  # max |cut - original| / max |original|; fp16 rounds at 1e-3
# the targets, for models of 1 GB and more
RSS_NO_VERIFY, RSS_VERIFY = 1.3, 2.2


@dataclass
class Shape:
    """A decoder's size: layers, width, heads (of HEAD_DIM), MLP hidden channels."""

    layers: int
    width: int
    heads: int
    hidden: int

    @property
    def layer_params(self) -> int:
        return 4 * self.width * self.width + 3 * self.width * self.hidden + 2 * self.width


def shape_for(megabytes: float, itemsize: int, width: int = 1024) -> Shape:
    """Layers of `width` (LLaMA's MLP ratio), or of the widest smaller width that still
    gives two layers: one width across sizes, so that growth is measured in layers alone."""
    for width in [w for w in (4096, 2048, 1024, 512, 256, 128) if w <= width]:
        hidden = int(round(width * 2.6875 / 64)) * 64  # LLaMA's 11008 / 4096
        shape = Shape(0, width, width // HEAD_DIM, hidden)
        layers = round(megabytes * 1e6 / (shape.layer_params * itemsize))
        if layers >= 2 or width == 128:
            shape.layers = max(layers, 1)
            return shape
    raise AssertionError("unreachable")


@dataclass
class Built:
    path: Path
    bytes: int  # .onnx and its external data on disk
    shape: Shape
    dead_heads: int  # zeroed heads, over all layers
    dead_channels: int  # zeroed MLP hidden channels, over all layers


class _External:
    """Writes tensors into one external data file as they are made (never all in memory)."""

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.offset = path, open(path, "wb"), 0

    def tensor(self, name: str, array: np.ndarray, data_type: int) -> TensorProto:
        pad = -self.offset % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        data = np.ascontiguousarray(array).tobytes()
        self.file.write(data)
        t = TensorProto(name=name, data_type=data_type, dims=list(array.shape),
                        data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.path.name), ("offset", str(self.offset)),
                           ("length", str(len(data)))):
            t.external_data.add(key=key, value=value)
        self.offset += len(data)
        return t

    def close(self) -> None:
        self.file.close()


def build(path: Path, shape: Shape, dtype: str, seed: int = 0) -> Built:
    """The decoder of `shape` in `dtype` at `path` (+ `path`.data), dead heads and channels
    zeroed as the module docstring says."""
    np_type, onnx_type = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    e, h, f = shape.width, shape.heads, shape.hidden
    external = _External(path.with_name(path.name + ".data"))
    inits = [numpy_helper.from_array(np.array(2, np_type), "two"),
             numpy_helper.from_array(np.array(1e-5, np_type), "eps"),
             numpy_helper.from_array(np.array(HEAD_DIM ** -0.5, np_type), "scale"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([BATCH, SEQ, h, HEAD_DIM], np.int64), "heads"),
             numpy_helper.from_array(np.array([BATCH, SEQ, e], np.int64), "flat")]
    nodes, x = [], "x"
    dead_heads = dead_channels = 0

    def weight(name: str, rows: int, cols: int) -> np.ndarray:
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        w *= rows ** -0.5
        return w

    for i in range(shape.layers):
        p = f"l{i}"
        heads = rng.choice(h, max(h // 4, 1), replace=False)
        cols = (heads[:, None] * HEAD_DIM + np.arange(HEAD_DIM)).ravel()
        dead = rng.choice(f, int(f * rng.uniform(0.3, 0.5)), replace=False)
        dead_heads, dead_channels = dead_heads + heads.size, dead_channels + dead.size
        for name, rows, n in (("wq", e, e), ("wk", e, e), ("wv", e, e), ("wo", e, e),
                              ("wg", e, f), ("wu", e, f), ("wd", f, e)):
            w = weight(name, rows, n)
            if name in ("wq", "wk", "wv"):
                w[:, cols] = 0
            elif name == "wo":
                w[cols] = 0
            elif name in ("wg", "wu"):
                w[:, dead] = 0
            else:
                w[dead] = 0
            inits.append(external.tensor(f"{p}.{name}", w.astype(np_type), onnx_type))
            del w
        for name in ("ln1", "ln2"):
            inits.append(numpy_helper.from_array(
                rng.uniform(0.5, 1.5, e).astype(np_type), f"{p}.{name}"))
        nodes += llama.rms_norm(x, f"{p}_xn", f"{p}.ln1")
        nodes += llama.attention(f"{p}_xn", f"{p}_attn", f"{p}.wq", f"{p}.wk", f"{p}.wv",
                                 f"{p}.wo", "heads", "flat", "scale")
        nodes.append(helper.make_node("Add", [x, f"{p}_attn"], [f"{p}_h"], name=f"add_{p}_h"))
        nodes += llama.rms_norm(f"{p}_h", f"{p}_yn", f"{p}.ln2")
        nodes += llama.swiglu(f"{p}_yn", f"{p}_mlp", f"{p}.wg", f"{p}.wu", f"{p}.wd")
        y = "y" if i == shape.layers - 1 else f"{p}_out"
        nodes.append(helper.make_node("Add", [f"{p}_h", f"{p}_mlp"], [y], name=f"add_{y}"))
        x = y
    external.close()
    graph = helper.make_graph(
        nodes, "llama", [helper.make_tensor_value_info("x", onnx_type, [BATCH, SEQ, e])],
        [helper.make_tensor_value_info("y", onnx_type, [BATCH, SEQ, e])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path.write_bytes(model.SerializeToString())
    return Built(path, _disk_bytes(path), shape, dead_heads, dead_channels)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


# ------------------------------------------------------------------------------ measuring

@dataclass
class Run:
    """One child process: wall seconds, peak RSS in bytes, exit status, its stderr's tail."""

    seconds: float
    peak_rss: int
    status: int
    tail: str = ""


# a child past this RSS is killed (exit -9 in the table): the machine is shared
RSS_LIMIT = 18e9


# Runs the command as its own child and writes that child's exit status and peak RSS (KB) to
# argv[1]. The peak must come from a fork of a small process: a process's ru_maxrss counts the
# memory of the process it was forked from (Linux keeps the high-water mark across exec), and
# this bench grows as it builds and checks models.
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def measure(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> Run:
    """Run `command` as a child of a small launcher: its wall time, and its own peak RSS
    (os.wait4's rusage for it: the child's alone, with its waited-for children, unlike
    RUSAGE_CHILDREN's maximum so far). A child whose RSS passes RSS_LIMIT is killed."""
    with open(os.devnull, "wb") as null, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as result:
        start = time.perf_counter()
        launcher = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, result.name,
                                     *command], stdout=null, stderr=err, env=env, cwd=cwd)
        done = threading.Event()
        threading.Thread(target=_guard, args=(launcher.pid, done), daemon=True).start()
        launcher.wait()
        seconds = time.perf_counter() - start
        done.set()
        err.seek(0)
        tail = err.read().decode(errors="replace")[-600:]
        status, peak_kb = (int(x) for x in (result.read().split() or [launcher.returncode, 0]))
    return Run(seconds, peak_kb * 1024, status, tail)


def _guard(launcher: int, done: threading.Event) -> None:
    """Kill the launcher's child once its RSS passes RSS_LIMIT (/proc, every 0.2 s)."""
    page = os.sysconf("SC_PAGE_SIZE")
    while not done.wait(0.2):
        try:
            with open(f"/proc/{launcher}/task/{launcher}/children") as children:
                pids = [int(p) for p in children.read().split()]
            for pid in pids:
                with open(f"/proc/{pid}/statm") as statm:
                    if int(statm.read().split()[1]) * page > RSS_LIMIT:
                        os.kill(pid, signal.SIGKILL)
                        return
        except (OSError, ValueError, IndexError):
            continue


def channelcut_command(source: Path, target: Path, verify: bool, report: Path) -> list[str]:
    return [sys.executable, "-m", "channelcut.cli", "cut", str(source), "-o", str(target),
            # min-flops: every dead channel goes (the CLI's default target, portable, keeps
            # multiples of 16 channels), so the cut must match the zeroed heads and channels
            "--target", "min-flops", "--report-json", str(report), "-q",
            *([] if verify else ["--no-verify"])]


def onnxslim_command(source: Path, target: Path) -> list[str]:
    # onnxslim's console script, with the interpreter that runs this bench
    code = "import sys; from onnxslim.cli import main; sys.argv[0] = 'onnxslim'; sys.exit(main())"
    return [sys.executable, "-c", code, str(source), str(target), "--save-as-external-data"]


def cut_counts(built: Built, cut_path: Path) -> tuple[int, int]:
    """(heads, MLP channels) the cut model's projections lost, from its initializers' dims."""
    m = onnx.load(str(cut_path), load_external_data=False)
    dims = {t.name: list(t.dims) for t in m.graph.initializer}
    s = built.shape
    heads = sum(s.heads - dims[f"l{i}.wq"][1] // HEAD_DIM for i in range(s.layers))
    channels = sum(s.hidden - dims[f"l{i}.wg"][1] for i in range(s.layers))
    return heads, channels


def ort_error(original: Path, cut_path: Path, dtype: str) -> float:
    """max |cut - original| / max |original| on one seeded random input, ONNX Runtime CPU,
    one session after the other."""
    import onnxruntime as ort
    np_type = DTYPES[dtype][0]
    width = onnx.load(str(original), load_external_data=False).graph.input[0]
    e = width.type.tensor_type.shape.dim[2].dim_value
    x = np.random.default_rng(1).standard_normal((BATCH, SEQ, e)).astype(np_type)
    outs = []
    for path in (original, cut_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {"x": x})[0].astype(np.float64))
        del session
    return float(np.abs(outs[1] - outs[0]).max() / np.abs(outs[0]).max())


@dataclass
class Row:
    dtype: str
    megabytes: float
    shape: dict
    dead_heads: int
    dead_channels: int
    cut: dict = field(default_factory=dict)  # "no-verify" / "verify" -> Run
    heads_cut: int = -1
    channels_cut: int = -1
    verdict: str = ""
    ort_error: float | None = None
    onnxslim: dict | None = None


def bench_one(megabytes: float, dtype: str, out: Path, onnxslim: bool, ort_mb: float,
              keep: bool, width: int) -> Row:
    itemsize = np.dtype(DTYPES[dtype][0]).itemsize
    shape = shape_for(megabytes, itemsize, width)
    folder = out / f"{dtype}_{megabytes:g}MB"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    built = build(folder / "model.onnx", shape, dtype)
    row = Row(dtype, built.bytes / 1e6, asdict(shape), built.dead_heads, built.dead_channels)
    env = _child_env()
    for verify in (False, True):
        key = "verify" if verify else "no-verify"
        target = folder / f"cut_{key}.onnx"
        report = folder / f"cut_{key}.json"
        # in the model's folder: `python -m` puts the working directory first on sys.path,
        # and a checkout there would shadow the channelcut PYTHONPATH names
        run = measure(channelcut_command(built.path, target, verify, report), env, folder)
        row.cut[key] = asdict(run)
        print(f"  {dtype} {row.megabytes:.0f} MB cut {key}: {run.seconds:.1f} s, "
              f"{run.peak_rss / 1e9:.2f} GB, exit {run.status}", file=sys.stderr, flush=True)
        if run.status not in (0, 3):
            continue
        if verify:  # exit 3: verification failed (nothing written)
            row.verdict = _verdict(report) if run.status == 0 else "FAILED"
        else:
            row.heads_cut, row.channels_cut = cut_counts(built, target)
            if row.megabytes <= ort_mb:
                row.ort_error = ort_error(built.path, target, dtype)
        if not keep:
            for p in folder.glob(target.name + "*"):
                p.unlink()
    if onnxslim:
        target = folder / "slim.onnx"
        run = measure(onnxslim_command(built.path, target), env, folder)
        row.onnxslim = asdict(run)
        print(f"  {dtype} {row.megabytes:.0f} MB onnxslim: {run.seconds:.1f} s, "
              f"{run.peak_rss / 1e9:.2f} GB, exit {run.status}", file=sys.stderr, flush=True)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def _verdict(report: Path) -> str:
    """The verification's worst cosine and relative error, from the report JSON."""
    data = json.loads(report.read_text())
    checks = data.get("checks") or []
    if not checks:
        return "not verified"
    cosine = min(c.get("cosine", 1.0) for c in checks)
    return f"ok (cos {cosine:.6f})"


# ------------------------------------------------------------------------------ the table

def table(rows: list[Row]) -> list[str]:
    head = ["dtype", "MB", "layers x width", "cut s", "RSS GB", "x size", "cut+verify s",
            "RSS GB", "x size", "heads cut", "MLP ch cut", "exact", "onnxslim s", "RSS GB",
            "x size"]
    body = []
    for r in rows:
        size = r.megabytes * 1e6
        nv, v, slim = r.cut.get("no-verify"), r.cut.get("verify"), r.onnxslim

        def cells(run: dict | None) -> list[str]:
            if run is None:
                return ["-", "-", "-"]
            if run["status"] == -signal.SIGKILL:  # past --rss-limit (or the OOM killer)
                return ["killed", f">{run['peak_rss'] / 1e9:.2f}",
                        f">{run['peak_rss'] / size:.2f}"]
            if run["status"] not in (0, 3):
                return [f"exit {run['status']}", "-", "-"]
            return [f"{run['seconds']:.1f}", f"{run['peak_rss'] / 1e9:.2f}",
                    f"{run['peak_rss'] / size:.2f}"]

        exact = r.verdict or ("verify exit " + str(v["status"]) if v else "-")
        if r.ort_error is not None:
            exact += f"; ORT rel err {r.ort_error:.1e}"
        body.append([r.dtype, f"{r.megabytes:.0f}",
                     f"{r.shape['layers']} x {r.shape['width']}", *cells(nv), *cells(v),
                     f"{r.heads_cut}/{r.dead_heads}", f"{r.channels_cut}/{r.dead_channels}",
                     exact, *cells(slim)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *[line(b) for b in body]]


def growth(rows: list[Row]) -> list[str]:
    """Per dtype and width: seconds and RSS per GB at each size, and the marginal figures
    between consecutive sizes (what one more GB costs): flat marginal figures mean linear
    growth."""
    lines = []
    for dtype, width in sorted({(r.dtype, r.shape["width"]) for r in rows}):
        mine = sorted((r for r in rows if r.dtype == dtype and r.shape["width"] == width),
                      key=lambda r: r.megabytes)
        for key, label in (("no-verify", "cut"), ("verify", "cut+verify"), (None, "onnxslim")):
            points = []
            for r in mine:
                run = r.onnxslim if key is None else r.cut.get(key)
                if run and run["status"] == 0:
                    points.append((r.megabytes / 1e3, run["seconds"], run["peak_rss"] / 1e9))
            if len(points) < 2:
                continue
            per_gb = ", ".join(f"{gb:.2f} GB: {s / gb:.1f} s/GB {m / gb:.2f} GB/GB"
                               for gb, s, m in points)
            marginal = [((s2 - s1) / (g2 - g1), (m2 - m1) / (g2 - g1))
                        for (g1, s1, m1), (g2, s2, m2) in zip(points, points[1:])]
            steps = ", ".join(f"{s:.1f} s/GB {m:.2f} GB/GB" for s, m in marginal)
            lines.append(f"{dtype} width {width} {label}: {per_gb}; marginal: {steps}; "
                         f"{_linear(marginal)}")
    return lines


def _linear(marginal: list[tuple[float, float]]) -> str:
    """Linear when the last step's marginal time and memory per GB are within 1.5x of the
    largest earlier step that spans real weight (the first steps carry the fixed start)."""
    if len(marginal) < 2:
        return "one step: linearity not judged"
    last, before = marginal[-1], marginal[:-1]
    slower = last[0] > 1.5 * max(s for s, _ in before)
    bigger = last[1] > 1.5 * max(m for _, m in before)
    if not (slower or bigger):
        return "linear"
    return "GROWS FASTER THAN LINEAR in " + " and ".join(
        w for w, flag in (("time", slower), ("memory", bigger)) if flag)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets on the models of 1 GB and more."""
    lines = []
    for r in rows:
        if r.megabytes < 1000:
            continue
        size = r.megabytes * 1e6
        nv, v, slim = r.cut.get("no-verify"), r.cut.get("verify"), r.onnxslim
        checks = []
        if nv and nv["status"] == 0:
            ratio = nv["peak_rss"] / size
            checks.append(f"RSS without verify {ratio:.2f}x <= {RSS_NO_VERIFY}: "
                          f"{'holds' if ratio <= RSS_NO_VERIFY else 'MISSED'}")
        if v and v["status"] == 0:
            ratio = v["peak_rss"] / size
            checks.append(f"RSS with verify {ratio:.2f}x <= {RSS_VERIFY}: "
                          f"{'holds' if ratio <= RSS_VERIFY else 'MISSED'}")
        if nv and slim and nv["status"] == 0 and slim["status"] == 0:
            checks.append(f"cut {nv['seconds']:.1f} s vs onnxslim {slim['seconds']:.1f} s: "
                          f"{'holds' if nv['seconds'] <= slim['seconds'] else 'MISSED'}")
        counts = r.heads_cut == r.dead_heads and r.channels_cut == r.dead_channels
        checks.append(f"cut exactly the zeroed heads and channels: {'yes' if counts else 'NO'}")
        checks.append(f"verification: {r.verdict or 'did not finish'}")
        lines.append(f"{r.dtype} {r.megabytes:.0f} MB: " + "; ".join(checks))
    return lines or ["targets: no model of 1 GB or more in this run"]


def _child_env() -> dict[str, str]:
    """The children's environment: this checkout after the PYTHONPATH given."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.environ.get("PYTHONPATH", str(REPO)), str(REPO)])}


def _child_channelcut(folder: Path) -> str:
    """Where the children import channelcut from (as they are run: env and folder)."""
    return subprocess.run([sys.executable, "-c", "import channelcut, os; "
                           "print(os.path.dirname(channelcut.__file__))"], env=_child_env(),
                          cwd=folder, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    global RSS_LIMIT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,64,256",
                        help="model sizes in MB, comma-separated (default: %(default)s)")
    parser.add_argument("--dtypes", default="fp32,fp16",
                        help="weight types, comma-separated: fp32, fp16 (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/llm_scale"),
                        help="where models and results.json go (default: %(default)s)")
    parser.add_argument("--no-onnxslim", action="store_true", help="skip onnxslim")
    parser.add_argument("--ort-mb", type=float, default=512,
                        help="also compare outputs in ONNX Runtime on models up to this size "
                             "(default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the models written")
    parser.add_argument("--append", action="store_true",
                        help="add to the rows of DIR/results.json (those of other sizes and "
                             "dtypes), so that a large size run alone joins the table")
    parser.add_argument("--rss-limit", type=float, default=RSS_LIMIT / 1e9,
                        help="kill a child whose RSS passes this many GB (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1024,
                        help="hidden width of the layers (heads of 64), smaller only where a "
                             "size holds fewer than two layers (default: %(default)s)")
    args = parser.parse_args(argv)
    RSS_LIMIT = args.rss_limit * 1e9
    sizes = [float(s) for s in args.sizes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        parser.error(f"unknown dtype {bad[0]}; one of {', '.join(DTYPES)}")
    if not args.no_onnxslim and importlib.util.find_spec("onnxslim") is None:
        parser.error("onnxslim is not installed (pip install onnxslim, or --no-onnxslim)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    saved = args.out / "results.json"
    if args.append and saved.exists():
        rows = [Row(**r) for r in json.loads(saved.read_text())]
    for dtype in dtypes:
        for mb in sizes:
            row = bench_one(mb, dtype, args.out, not args.no_onnxslim, args.ort_mb,
                            args.keep, args.width)
            rows = [r for r in rows if (r.dtype, round(r.megabytes)) !=
                    (row.dtype, round(row.megabytes))] + [row]
            rows.sort(key=lambda r: (r.dtype, r.megabytes))
            saved.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"channelcut from {_child_channelcut(args.out)}; {os.cpu_count()} CPUs, load "
          f"average {load} at the end; B={BATCH}, S={SEQ}; cut --target min-flops")
    print("\n".join([*table(rows), "", *growth(rows), "", *targets(rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
