"""Fuzz channelcut at scale: random graphs (tests/randomgraphs.py) cut in every mode and judged
independently (tests/cutcheck.py), the checks the property tests run on a few.

Each case is one random graph cut in one mode; a graph is cut in every mode of --modes, so
--cases 20000 with 4 modes is 5000 graphs. Graph i of a run is drawn from a generator seeded by
(--seed, i): a run is reproducible whatever --processes. Prints the failures per category and
mode, and writes the smallest failing case of each category, shrunk (steps of its recipe
dropped while it still fails the same way), to --out/<category>/: original.onnx, cut.onnx
(when the cut returned a model) and case.txt (the recipe, the mode, what went wrong).

    python bench/fuzz.py --cases 20000 --processes 2 --out /tmp/fuzz/failures
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO))  # an installed or PYTHONPATH channelcut comes first
# An op rule that raises is a crash here, as in the tests (it would otherwise become a barrier).
os.environ["CHANNELCUT_STRICT"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import cutcheck  # noqa: E402
import randomgraphs  # noqa: E402

SHRINK_ATTEMPTS = 300
KINDS_SHOWN = 4


def case_recipe(seed: int, index: int, ops: tuple[str, ...] = randomgraphs.OPS
                ) -> randomgraphs.Recipe:
    return randomgraphs.random_recipe(np.random.default_rng([seed, index]), ops)


def judge_graph(seed: int, index: int, modes: list[str],
                ops: tuple[str, ...] = randomgraphs.OPS) -> list[tuple]:
    """(index, mode, nodes, findings) for graph `index` in every mode; a graph the generator
    cannot build (a bug of the generator, not of channelcut) is mode "invalid"."""
    recipe = case_recipe(seed, index, ops)
    try:
        model = randomgraphs.build(recipe)
        ref = cutcheck.reference(model)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the run goes on
        return [(index, "invalid", 0, [cutcheck.Finding("invalid", repr(exc)[:300])])]
    nodes = len(model.graph.node)
    return [(index, mode, nodes, cutcheck.judge(model, mode, ref)) for mode in modes]


def _worker(job: tuple[int, list[int], list[str], tuple[str, ...]]) -> list[tuple]:
    seed, indices, modes, ops = job
    with quiet_stderr():
        return [row for i in indices for row in judge_graph(seed, i, modes, ops)]


def _init_worker() -> None:
    logging.disable(logging.CRITICAL)  # channelcut's warnings about barriers, per case


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """ONNX Runtime logs to the process's stderr when a cut model fails in channelcut's own
    check (the finding says it already): hide it, at the file descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def kind(finding: cutcheck.Finding) -> str:
    """What a finding says with its numbers (sizes, node name suffixes) blanked: one failure
    mode, whatever graph shows it."""
    return re.sub(r"\d+", "#", finding.detail)[:150]


def still_fails(recipe: randomgraphs.Recipe, mode: str, category: str, detail: str) -> bool:
    try:
        model = randomgraphs.build(recipe)
    except Exception:  # noqa: BLE001 - a recipe the generator cannot build is no reproducer
        return False
    with quiet_stderr():
        return any(f.category == category and kind(f) == detail
                   for f in cutcheck.judge(model, mode))


def shrink(recipe: randomgraphs.Recipe, mode: str, category: str, detail: str
           ) -> randomgraphs.Recipe:
    """A smaller recipe that still fails the same way: steps dropped one at a time, the
    interface and the special values simplified, fewer input channels, while it fails."""
    def candidates(r: randomgraphs.Recipe) -> Iterator[randomgraphs.Recipe]:
        for i in range(len(r.steps)):
            if len(r.steps) > 1:
                yield replace(r, steps=r.steps[:i] + r.steps[i + 1:])
        for name, simple in (("extra_output", False), ("input_is_output", ""),
                             ("dynamic_batch", False), ("special", 0.0), ("head", "raw"),
                             ("head", "conv"), ("p_col", 0.0), ("p_row", 0.0)):
            if getattr(r, name) != simple:
                yield replace(r, **{name: simple})
        for c in range(1, r.in_channels):
            yield replace(r, in_channels=c)

    attempts, progress = 0, True
    while progress and attempts < SHRINK_ATTEMPTS:
        progress = False
        for candidate in candidates(recipe):
            attempts += 1
            if still_fails(candidate, mode, category, detail):
                recipe, progress = candidate, True
                break
            if attempts >= SHRINK_ATTEMPTS:
                break
    return recipe


def save_case(folder: Path, category: str, detail: str, recipe: randomgraphs.Recipe,
              mode: str, count: int) -> str:
    """Write the case's models and description to `folder`; returns its one-line summary."""
    import channelcut  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    model = randomgraphs.build(recipe)
    with quiet_stderr():
        findings = [f for f in cutcheck.judge(model, mode)
                    if f.category == category and kind(f) == detail]
    onnx.save(model, folder / "original.onnx")
    try:
        onnx.save(channelcut.cut(model, verify=False, **cutcheck.MODES[mode]).model,
                  folder / "cut.onnx")
    except Exception:  # noqa: BLE001 - a crash has no cut model
        pass
    ops = " -> ".join(n.op_type for n in model.graph.node)
    finding = str(findings[0]) if findings else f"{category}: {detail} (no longer reproduces)"
    text = (f"category: {category} ({count} cases failed this way)\n"
            f"mode: {mode} {cutcheck.MODES[mode]}\nfinding: {finding}\n"
            f"recipe: {randomgraphs.describe(recipe)}\nnodes ({len(model.graph.node)}): {ops}\n")
    (folder / "case.txt").write_text(text)
    return f"{folder.parent.name}/{folder.name}: {mode}, {len(model.graph.node)} nodes: {finding}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000,
                        help="graph x mode cases (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--modes", nargs="+", default=list(cutcheck.MODES),
                        choices=list(cutcheck.MODES), help="(default: all)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="folder for the smallest failing case of each way each category "
                             "failed; its category folders are replaced (default: %(default)s)")
    parser.add_argument("--no-shrink", action="store_true",
                        help="save the smallest failing cases as found")
    parser.add_argument("--extra-ops", nargs="+", default=[],
                        choices=[randomgraphs.SHUFFLE, randomgraphs.GATHER, "rules",
                                 *randomgraphs.RULE_OPS],
                        help="ops drawn besides the default ones (which keep a seed's graphs "
                             "as they were without); rules: every one of "
                             f"{', '.join(randomgraphs.RULE_OPS)} (ops of the rule table "
                             "the default draws never make)")
    args = parser.parse_args(argv)
    extra = [op for name in args.extra_ops
             for op in (randomgraphs.RULE_OPS if name == "rules" else (name,))]
    ops = randomgraphs.OPS + tuple(extra)
    _init_worker()

    graphs = -(-args.cases // len(args.modes))
    chunk = 10
    jobs = [(args.seed, list(range(start, min(start + chunk, graphs))), args.modes, ops)
            for start in range(0, graphs, chunk)]
    start = time.perf_counter()
    rows = []
    if args.processes > 1:
        with multiprocessing.get_context("spawn").Pool(args.processes, _init_worker) as pool:
            for done in pool.imap_unordered(_worker, jobs):
                rows += done
    else:
        for job in jobs:
            rows += _worker(job)
    elapsed = time.perf_counter() - start
    for category in (*cutcheck.CATEGORIES, "declined"):  # no stale cases of an earlier run
        shutil.rmtree(args.out / category, ignore_errors=True)

    categories = [*cutcheck.CATEGORIES, "declined", "invalid"]
    counts = collections.Counter()
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    smallest: dict[tuple[str, str], tuple[int, int, str]] = {}  # -> (nodes, graph, mode)
    for index, mode, nodes, findings in rows:
        counts["cases", mode] += mode != "invalid"
        found = {f.category for f in findings}
        if "mismatch" in found and "refused" not in found:
            found.add("silent")  # channelcut's own check let it through: it would be written
        for category in found:
            counts[category, mode] += 1
            counts[category, "all"] += 1
        for finding in findings:
            key = (finding.category, kind(finding))
            kinds[finding.category][key[1]] += 1
            if key not in smallest or nodes < smallest[key][0]:
                smallest[key] = (nodes, index, mode)
    modes = [*args.modes, *(["invalid"] if counts["cases", "invalid"] or any(
        counts[c, "invalid"] for c in categories) else [])]
    cases = sum(counts["cases", m] for m in args.modes)
    print(f"channelcut fuzz: {cases} cases ({graphs} graphs x {len(args.modes)} modes), seed "
          f"{args.seed}, {args.processes} processes, {elapsed:.0f} s "
          f"({1000 * elapsed * args.processes / max(cases, 1):.0f} ms per case per process)")
    print(f"{'category':10}" + "".join(f"{m:>9}" for m in modes) + f"{'all':>9}")
    print(f"{'cases':10}" + "".join(f"{counts['cases', m]:>9}" for m in modes) + f"{cases:>9}")
    for category in [*categories, "silent"]:
        print(f"{category:10}" + "".join(f"{counts[category, m]:>9}" for m in modes)
              + f"{counts[category, 'all']:>9}")
    print("(silent: a mismatch that channelcut's own verification did not refuse)")
    if kinds:
        print(f"\nthe most frequent ways each category failed (numbers as #; up to {KINDS_SHOWN}), "
              f"the smallest case of each{'' if args.no_shrink else ' shrunk'}, in {args.out}/:")
    for category in categories:
        for n, (detail, count) in enumerate(kinds[category].most_common(KINDS_SHOWN), 1):
            _, index, mode = smallest[category, detail]
            recipe = case_recipe(args.seed, index, ops)
            print(f"  {category:9} {count:6}  {detail}")
            if category == "invalid":
                print(f"      graph {index}: {randomgraphs.describe(recipe)}")
                continue
            if not args.no_shrink:
                recipe = shrink(recipe, mode, category, detail)
            print("      " + save_case(args.out / category / str(n), category, detail, recipe,
                                       mode, count))
    failing = sum(1 for row in rows if cutcheck.failures(row[3]))
    print(f"\n{'FAIL' if failing else 'PASS'}: {failing} of {cases} cases fail (wanted: 0 "
          "crashes, refused cuts, mismatches, checker errors, interface changes, weight growth "
          "and fixpoint misses)")
    print(f"total time {time.perf_counter() - start:.0f} s (shrinking and saving included)")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
