"""Test-wide setup: a crashing op rule fails the test instead of quietly becoming a barrier, and
the shared `builders` helpers get pytest's detailed assertion messages."""

import os

import pytest

os.environ["CHANNELCUT_STRICT"] = "1"
pytest.register_assert_rewrite("builders")


def _share_the_cpus() -> None:
    """Under pytest-xdist, give each worker its own share of the CPUs: ONNX Runtime sizes its
    thread pool from the CPUs a process may use (channelcut.verify), and two workers each
    spinning two threads on two cores wait on each other."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[int(worker[2:]) % count::count]
    if share:
        os.sched_setaffinity(0, share)


_share_the_cpus()
