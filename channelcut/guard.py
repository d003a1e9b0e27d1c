"""The guard of targets that can be measured here: time the candidate models on this machine
(ONNX Runtime CPU) and keep the fastest, so that a cut is never slower than the original."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from channelcut import io

# Seconds of timed runs in all: a few hundred ms for a small model. A big one gets at least
# MIN_ROUNDS runs of each candidate (bounded by MAX_SECONDS), a tiny one at most MAX_ROUNDS.
BUDGET_SECONDS = 0.4
MAX_SECONDS = 5.0
MIN_ROUNDS, MAX_ROUNDS = 5, 50

# candidate name -> model, feeds -> candidate name -> seconds per run
Measure = Callable[[dict[str, onnx.ModelProto], dict[str, np.ndarray]], dict[str, float]]


def _session(model: onnx.ModelProto, workdir: Path) -> object:
    """A one-thread ONNX Runtime CPU session: one core is what a single inference of a small
    model gets on a loaded machine, and the least noisy to time."""
    import onnxruntime as ort  # noqa: PLC0415 - heavy, only the guard needs it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    # protobuf cannot pass >2 GB in memory, and ONNX Runtime refuses the absolute paths of a
    # lazy load's data (channelcut.io.on_disk)
    if any(io.on_disk(t) for t in model.graph.initializer) or io.needs_external_data(model):
        path = workdir / f"model{len(list(workdir.iterdir()))}.onnx"
        io.save_model(model, path)
        return ort.InferenceSession(str(path), options, providers=providers)
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


def ort_latencies(models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray],
                  budget: float = BUDGET_SECONDS) -> dict[str, float]:
    """Median seconds per run of each model, by name, in ONNX Runtime on one CPU thread.

    Runs alternate (the order rotates each round) so that drift hits every model alike; one
    untimed warm-up run each, whose time sets how many rounds fit in `budget`.
    """
    with tempfile.TemporaryDirectory(prefix="channelcut-guard-") as tmp:
        sessions = [_session(m, Path(tmp)) for m in models.values()]
        inputs = [{i.name: feeds[i.name] for i in s.get_inputs()} for s in sessions]
        warm = []
        for session, feed in zip(sessions, inputs):
            start = time.perf_counter()
            session.run(None, feed)
            warm.append(time.perf_counter() - start)
        per_round = max(sum(warm), 1e-6)
        rounds = int(min(max(budget / per_round, MIN_ROUNDS), MAX_ROUNDS,
                         max(MAX_SECONDS / per_round, 1)))
        times: list[list[float]] = [[] for _ in sessions]
        for round_ in range(rounds):
            shift = round_ % len(sessions)
            for k in [*range(shift, len(sessions)), *range(shift)]:
                start = time.perf_counter()
                sessions[k].run(None, inputs[k])
                times[k].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in zip(models, times)}


def fastest(latencies: dict[str, float]) -> str:
    """The candidate with the lowest latency; on a tie the one named first (the caller lists
    the cut first and the original last)."""
    return min(latencies, key=latencies.__getitem__)
