"""Render the HTML report of a real model in headless Chromium and save a screenshot (issue 15).

The model is a torchvision architecture (tests/zoo.py: random weights and BatchNorm statistics)
with half the filters of every Conv2d zeroed by ln_structured(dim=0), the way users prune,
exported to ONNX and cut by the console script with --report-html. The screenshot is what a
reader sees first: the summary cards, the per-layer picture and the blockers.

    python bench/report_screenshot.py                       # resnet18 -> /tmp/report/shot.png
    python bench/report_screenshot.py --model mobilenet_v2 --out /tmp/mnv2
    python bench/report_screenshot.py --html report.html    # only render an existing report

Needs Debian's `chromium` (apt-get install chromium) or any chromium/google-chrome on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    """The first Chromium-family browser on PATH."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2000,
               timeout: float = 120) -> None:
    """Render `html` headless (no network, no profile left behind) and write `png`."""
    exe = browser()
    if exe is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="channelcut-chromium-") as profile:
        command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--screenshot={png}",
                   f"--window-size={width},{height}", html.resolve().as_uri()]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if not png.exists():
        raise SystemExit(f"chromium wrote no screenshot to {png}")


def report_of(model: str, size: int, out: Path) -> Path:
    """Prune, export and cut `model`; the HTML report's path."""
    sys.path.insert(0, str(REPO / "bench"))
    import common  # noqa: PLC0415 - torch and torchvision, only when a model is built

    from channelcut import cli  # noqa: PLC0415

    module = common.build(model, common.input_shape(model, size), seed=0)
    common.zoo.prune_ln_structured(module)
    onnx_path = out / f"{model}.onnx"
    common.zoo.export_onnx(module, common.input_shape(model, size), path=onnx_path)
    html = out / f"{model}.report.html"
    code = cli.main(["cut", str(onnx_path), "-o", str(out / f"{model}.cut.onnx"),
                     "--report-html", str(html), "-q"])
    if code != 0:
        raise SystemExit(f"channelcut cut exited with {code}")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18",
                        help="tests/zoo.py architecture to prune and cut (default: resnet18)")
    parser.add_argument("--size", type=int, default=224, help="input side (default: 224)")
    parser.add_argument("--html", type=Path, help="render this report instead of making one")
    parser.add_argument("--out", type=Path, default=Path("/tmp/report"),
                        help="folder for the model, the report and shot.png (default: %(default)s)")
    parser.add_argument("--height", type=int, default=2000, help="window height in px")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    html = args.html or report_of(args.model, args.size, args.out)
    png = args.out / "shot.png"
    screenshot(html, png, height=args.height)
    print(f"{html} -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
