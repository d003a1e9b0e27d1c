"""How fast `channelcut --help` and an argument error answer (issue 15: under 0.3 s).

Each command runs in a fresh interpreter (`python -m channelcut.cli ...`, as the console script
does), best and median of --runs; the time includes starting Python itself, shown on its own
line for comparison. The command line imports only the standard library until a command runs.

    python bench/cli_start.py
    python bench/cli_start.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.3
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "channelcut --help": ["-m", "channelcut.cli", "--help"],
    "channelcut cut --help": ["-m", "channelcut.cli", "cut", "--help"],
    "channelcut cut IN.onnx (no -o)": ["-m", "channelcut.cli", "cut", "IN.onnx"],
    "channelcut inspect --bogus": ["-m", "channelcut.cli", "inspect", "--bogus"],
}


def seconds(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default: 10)")
    args = parser.parse_args(argv)
    print(f"fresh interpreter per run, {args.runs} runs; {sys.executable}")
    print(f"{'command':<32} {'best s':>8} {'median s':>9}")
    held = True
    for label, command in COMMANDS.items():
        times = [seconds(command) for _ in range(args.runs)]
        print(f"{label:<32} {min(times):>8.3f} {statistics.median(times):>9.3f}")
        if label != "python -c pass":
            held &= statistics.median(times) < TARGET_S
    print(f"target median under {TARGET_S} s: {'held' if held else 'NOT held'}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
