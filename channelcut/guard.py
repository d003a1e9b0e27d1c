"""The guard of targets that can be measured here: time the candidate models on this machine
(ONNX Runtime CPU) and keep the fastest, so that a cut is never slower than the original.

The decision must not flip because another process took the CPU (the machines that cut are
often loaded: on 2 cores at a load of 4, one run of resnet18 took 80-94 ms of wall-clock for
34-38 ms of CPU time). So each run is timed by the CPU time of this process, which excludes the
time it was descheduled (one intra-op thread: ONNX Runtime computes on the calling thread); the
figure per candidate is the lower quartile of its runs, which ignores the runs a co-runner
slowed down by evicting the caches; rounds alternate, and continue while the decision is not
the same on the odd and on the even rounds; and a candidate with more rewrites is preferred only
when it is faster by MARGIN than every candidate with fewer.
"""

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
# MIN_ROUNDS runs of each candidate (bounded by MAX_SECONDS), a tiny one at most MAX_ROUNDS;
# a close decision up to EXTEND times as many rounds (bounded by MAX_SECONDS).
BUDGET_SECONDS = 0.4
MAX_SECONDS = 5.0
MIN_ROUNDS, MAX_ROUNDS = 6, 50
EXTEND = 4
# A candidate with more rewrites must be this much faster (relative) to be preferred: below
# it, a difference is within what the load leaves in the figures, and the simpler model wins.
MARGIN = 0.02

# The guard's "fewer added ops" candidate charges each element a reinsertion or border map
# moves this many times the latency objective's MOVED_ELEMENT: what a copy costs depends on the
# fusions it breaks around it. Measured (CPU time, alternated): naive resnet50, where each
# reinsertion splits a conv+Add+Relu fusion, 35.9 ms against 41.0 ms with the default charge
# (0.78 ns per element of the full tensor, ~80 FLOPs of conv work, not 41); naive
# efficientnet_b0, whose reinsertions spare wide 1x1 convs, 8.0 ms against 8.4-8.6 ms the
# other way. One constant cannot fit both, the guard can: it times both.
FEWER_MOVES = 5.0

# candidate name -> model, feeds -> candidate name -> seconds per run
Measure = Callable[[dict[str, onnx.ModelProto], dict[str, np.ndarray]], dict[str, float]]
Clock = Callable[[], float]


def cpu_clock() -> Clock:
    """This process's CPU time where the OS keeps it finely (Linux, macOS: nanoseconds), else
    wall-clock (Windows counts process time in 15.6 ms ticks, longer than a small model's run)."""
    fine = time.get_clock_info("process_time").resolution <= 1e-5
    return time.process_time if fine else time.perf_counter


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
                  budget: float = BUDGET_SECONDS, clock: Clock | None = None) -> dict[str, float]:
    """CPU seconds per run of each model, by name, in ONNX Runtime on one CPU thread (see
    `alternated`)."""
    with tempfile.TemporaryDirectory(prefix="channelcut-guard-") as tmp:
        sessions = [_session(m, Path(tmp)) for m in models.values()]
        runs = {}
        for name, session in zip(models, sessions):
            feed = {i.name: feeds[i.name] for i in session.get_inputs()}
            runs[name] = lambda session=session, feed=feed: session.run(None, feed)
        return alternated(runs, budget, clock or cpu_clock())


def lower_quartile(times: list[float]) -> float:
    """A run time the load did not inflate: three quarters of the runs took longer."""
    return statistics.quantiles(times, n=4, method="inclusive")[0] if len(times) > 1 \
        else times[0]


def alternated(runs: dict[str, Callable[[], object]], budget: float = BUDGET_SECONDS,
               clock: Clock | None = None) -> dict[str, float]:
    """Seconds per call of each function, by name: the lower quartile of its timed calls.

    Calls alternate (the order rotates each round) so that drift hits every candidate alike;
    one untimed warm-up call each, whose time sets how many rounds fit in `budget`. After those
    rounds, more (up to EXTEND times as many) while `fastest` picks differently on the odd
    rounds, the even rounds and all of them: a decision that two halves of the runs do not
    reproduce is not one the load left alone.
    """
    clock = clock or cpu_clock()
    names, calls = list(runs), list(runs.values())
    warm = []
    for call in calls:
        start = clock()
        call()
        warm.append(clock() - start)
    per_round = max(sum(warm), 1e-9)
    cap = max(int(MAX_SECONDS / per_round), 1)
    rounds = min(max(int(budget / per_round), MIN_ROUNDS), MAX_ROUNDS, cap)
    limit = max(min(rounds * EXTEND, cap), rounds)
    times: list[list[float]] = [[] for _ in calls]
    round_ = 0
    while round_ < limit:
        shift = round_ % len(calls)
        for k in [*range(shift, len(calls)), *range(shift)]:
            start = clock()
            calls[k]()
            times[k].append(clock() - start)
        round_ += 1
        if round_ >= rounds and (round_ < 4 or _reproduced(names, times)):
            break
    return {name: lower_quartile(t) for name, t in zip(names, times)}


def _reproduced(names: list[str], times: list[list[float]]) -> bool:
    """Do the odd rounds, the even rounds and all rounds pick the same candidate?"""
    picks = {fastest({n: lower_quartile(t[half::step]) for n, t in zip(names, times)})
             for half, step in ((0, 1), (0, 2), (1, 2))}
    return len(picks) == 1


def fastest(latencies: dict[str, float], margin: float = MARGIN) -> str:
    """The candidate to keep: of those within `margin` of the lowest latency, the one named last
    (the caller lists them from the most rewritten, the cut, to the original), so a rewrite is
    kept only where it is measurably faster than every simpler candidate."""
    best = min(latencies.values())
    return [n for n, t in latencies.items() if t <= best * (1 + margin)][-1]
