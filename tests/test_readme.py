"""The README's Python example runs as written (issue 15: it had an input name its export did
not have)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    [example] = [block for block in python_blocks() if "channelcut.cut(" in block]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert out.startswith("summary\n") and "inputs:       images 1x3x64x64" in out
    assert (tmp_path / "small.cut.onnx").stat().st_size < (tmp_path / "small.onnx").stat().st_size
    assert "<svg" in (tmp_path / "small.report.html").read_text()
