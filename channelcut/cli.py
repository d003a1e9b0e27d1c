"""The `channelcut` console script: `cut`, `inspect` and `demo`.

Exit codes: 0 success; 2 a problem with the user's input or a usage error (one line on stderr,
nothing written); 3 verification failed: the cut model's outputs differ from the original's,
which is a bug in channelcut (one line on stderr, nothing written); 1 any other exception,
also a bug: its traceback goes to stderr, followed by one line asking to report it; 130
interrupted; 141 stdout was closed early (`| head`), the work itself was done.

Only the standard library is imported up front: `channelcut --help` and a usage error answer
at once, and the engine (onnx, onnx-ir, ONNX Runtime, rich) loads when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path

from typing import TYPE_CHECKING

from channelcut import __version__
from channelcut.costs import OBJECTIVES
from channelcut.errors import ChannelcutError, VerificationError

if TYPE_CHECKING:
    from channelcut.report import Report
    from channelcut.stages import Stages

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER_ERROR = 2
EXIT_VERIFICATION = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe

DEFAULT_THRESHOLD = 0.9999
EXIT_CODES = ("exit codes: 0 ok; 2 bad input or usage (one line on stderr, nothing written); "
              "3 verification failed, a bug (nothing written); 1 internal error, a bug; "
              "130 interrupted; 141 stdout closed early")


def main(argv: list[str] | None = None) -> int:
    """Run the console script with `argv` (default: sys.argv[1:]) and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage or help; report its code, not exit
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("channelcut: error: give a command: cut, inspect or demo", file=sys.stderr)
        return EXIT_USER_ERROR
    logging.basicConfig(level=logging.WARNING, format="channelcut: %(levelname)s: %(message)s")
    from channelcut.dynamic_dims import shape_wording  # noqa: PLC0415 - imports onnx

    wording = shape_wording.set("cli")  # messages name --input-shape, not input_shapes=
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not after main has returned
        return code
    except VerificationError as exc:
        print(f"channelcut: verification failed: {exc}", file=sys.stderr)
        return EXIT_VERIFICATION
    except ChannelcutError as exc:
        print(f"channelcut: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # Whoever read stdout went away (`channelcut inspect m.onnx | head`); the work itself is
        # done. Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("channelcut: interrupted; no file was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: show where, then ask for a report
        traceback.print_exc()
        print("channelcut: internal error (a bug in channelcut); please report it with the "
              "traceback above", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        shape_wording.reset(wording)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="channelcut",
        description="Cut provably dead channels out of structured-pruned ONNX models.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"channelcut {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    cut = commands.add_parser("cut", help="cut dead channels and write the smaller model",
                              description="Cut dead channels, verify in ONNX Runtime, write "
                                          "the smaller model and print what was cut.",
                              epilog=EXIT_CODES)
    _add_input(cut)
    cut.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx",
                     help="where to write the cut model (atomically; never the input; a "
                          "model over 2 GB also writes OUT.onnx.data next to it)")
    _add_input_shape(cut)
    _add_mode(cut)
    cut.add_argument("--no-verify", action="store_true",
                     help="skip the ONNX Runtime comparison of original and cut model")
    cut.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="COSINE",
                     help=f"minimum cosine similarity per output (default {DEFAULT_THRESHOLD})")
    cut.add_argument("--verify-inputs", type=Path, metavar="FILE.npz|DIR",
                     help="verify on these inputs instead of random ones: an .npz file with "
                          "one array per model input (named after it), or a folder of .npy "
                          "files; an array is one sample or N stacked on a new first axis")
    cut.add_argument("--verify-samples", type=_positive, metavar="N",
                     help="how many seeded random input sets to verify on (default 3, one "
                          "of large magnitude), or the first N samples of --verify-inputs")
    cut.add_argument("--seed", type=int, default=0,
                     help="seed of the random verification samples (default 0)")
    cut.add_argument("--report-json", type=Path, metavar="FILE",
                     help="also write the report as JSON (the text's order; channel pairs "
                          "[kept, original])")
    cut.add_argument("--report-html", type=Path, metavar="FILE",
                     help="also write the report as one self-contained HTML file, with a "
                          "picture of the channels and FLOPs each layer kept")
    _add_verbosity(cut, quiet="print nothing on success")
    cut.set_defaults(handler=_cut)

    inspect = commands.add_parser(
        "inspect", help="print what would be cut; write nothing",
        description="Analyse the model and print the report of the cut that `cut` would make, "
                    "without verifying it or writing anything.", epilog=EXIT_CODES)
    _add_input(inspect)
    _add_input_shape(inspect)
    _add_mode(inspect)
    _add_verbosity(inspect, quiet=None)
    inspect.set_defaults(handler=_inspect)

    demo = commands.add_parser("demo", help="run the pruning demo (needs the torch extra)",
                               description="Run the pruning example modelled on RKNN-Toolkit1's "
                                           "examples/pytorch/model_pruning through channelcut's "
                                           "RKNN facade.", epilog=EXIT_CODES)
    demo.add_argument("target", nargs="?", help="target platform name, as in the RKNN demo")
    demo.add_argument("device_id", nargs="?", help="device ID, as in the RKNN demo")
    demo.set_defaults(handler=_demo)
    return parser


def _add_mode(parser: argparse.ArgumentParser) -> None:
    from channelcut.targets import CLI_DEFAULT, TARGETS  # noqa: PLC0415

    parser.add_argument("--target", choices=list(TARGETS), default=CLI_DEFAULT,
                        help="where the model will run; decides the rewrites, the alignment "
                             "and the objective (default %(default)s: never worse on ONNX "
                             "Runtime CPU or RKNN; ort-cpu also times the result against the "
                             "original here and keeps the faster). "
                             + "; ".join(f"{t.name}: {t.summary}" for t in TARGETS.values()))
    parser.add_argument("--zero-only", action="store_true",
                        help="cut only zero or unread channels, as RKNN-Toolkit's "
                             "model_pruning does (default: also fold constant channels into "
                             "their readers and cut one side of residual Adds)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="what a fold or reinsertion must reduce to be made (default: the "
                             "target's); none ever grows the weights")
    parser.add_argument("--align", type=_alignment, default=None, metavar="N",
                        help="keep a multiple of N channels in every tensor that loses some "
                             "('target': the target's, also with --zero-only; default: the "
                             "target's, 1 with --zero-only: the seed's table)")


def _alignment(text: str) -> int | str:
    """--align: a whole number, or "target"; cut() checks the number."""
    if text == "target":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number or 'target'") from None


def _add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN.onnx",
                        help="the pruned ONNX model (read only, never modified)")


def _add_verbosity(parser: argparse.ArgumentParser, quiet: str | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="add the time per stage to the report, and show the stages on "
                            "stderr even when it is not a terminal")
    if quiet is not None:
        group.add_argument("-q", "--quiet", action="store_true",
                           help=f"{quiet}; no progress either")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give 1 or more")
    return value


def _add_input_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:1,3,224,224",
                        help="concrete shape of one input (repeatable); dynamic dims default to 1 "
                             "(a warning names them)")
    parser.add_argument("--input-range", action="append", default=[], metavar="NAME:LO,HI",
                        help="every value of this input lies in [LO, HI] (repeatable); channels "
                             "this proves constant are cut, and verification stays inside it")
    parser.add_argument("--constant-initializers", action="store_true",
                        help="take initializers that are also graph inputs (old exporters list "
                             "every weight so) as constants, and leave them out of the cut "
                             "model's inputs (default: they are inputs a caller may feed, and "
                             "what reads them keeps its channels)")


def _cut(args: argparse.Namespace) -> int:
    from channelcut.io import check_paths, write_atomic  # noqa: PLC0415

    check_paths(args.input, args.output)
    reports = [(f, p) for f, p in (("--report-json", args.report_json),
                                   ("--report-html", args.report_html)) if p is not None]
    for flag, path in reports:
        check_paths(args.input, path)
        if path.resolve() == args.output.resolve():
            raise ChannelcutError(f"{path}: is also the output model; give {flag} another name")
    if len(reports) == 2 and args.report_json.resolve() == args.report_html.resolve():
        raise ChannelcutError(f"{args.report_json}: given to both --report-json and "
                              "--report-html; give each its own file")
    if not 0.0 < args.threshold <= 1.0:
        raise ChannelcutError(f"--threshold {args.threshold}: give a cosine in (0, 1]")
    if args.verify_inputs is not None and not args.verify_inputs.exists():
        raise ChannelcutError(f"{args.verify_inputs}: no such file or folder; give an .npz "
                              "file or a folder of .npy files to --verify-inputs")
    stages = _stages(args)
    from channelcut import api  # noqa: PLC0415 - keeps `channelcut --help` fast

    with _progress(stages):
        result = api.cut(args.input, input_shapes=_input_shapes(args.input_shape),
                         verify=not args.no_verify, threshold=args.threshold,
                         fold=not args.zero_only, objective=args.objective, align=args.align,
                         target=args.target, verify_inputs=args.verify_inputs,
                         verify_samples=args.verify_samples, seed=args.seed, stages=stages,
                         input_ranges=_input_ranges(args.input_range),
                         constant_initializers=args.constant_initializers)
        with stages.stage("save"):
            result.save(args.output)
    report = result.report
    report.seconds = dict(stages.seconds)
    threshold = None if args.no_verify else args.threshold
    if args.report_json is not None:
        text = json.dumps(_json_safe(report.to_dict()), indent=2) + "\n"
        write_atomic(args.report_json, text.encode())
    if args.report_html is not None:
        from channelcut.htmlreport import html_report  # noqa: PLC0415

        write_atomic(args.report_html, html_report(report, threshold=threshold).encode())
    if not args.quiet:
        _show(report, threshold, args.verbose)
        print(f"\nwrote {args.output}")
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    stages = _stages(args)
    from channelcut import api  # noqa: PLC0415

    with _progress(stages):
        result = api.cut(args.input, input_shapes=_input_shapes(args.input_shape),
                         verify=False, fold=not args.zero_only, objective=args.objective,
                         align=args.align, target=args.target, stages=stages,
                         input_ranges=_input_ranges(args.input_range),
                         constant_initializers=args.constant_initializers)
    _show(result.report, None, args.verbose)
    print(f"\nwould cut {result.report.removed_channels} channel positions; nothing written")
    return EXIT_OK


def _stages(args: argparse.Namespace) -> Stages:
    """The stages of this run, shown on stderr when it is a terminal (unless -q), or with -v."""
    from channelcut.stages import Stages  # noqa: PLC0415

    if getattr(args, "quiet", False):
        return Stages()
    if sys.stderr.isatty():
        from channelcut.progress import TerminalProgress  # noqa: PLC0415

        return Stages(TerminalProgress())
    if args.verbose:
        from channelcut.progress import LineProgress  # noqa: PLC0415

        return Stages(LineProgress(sys.stderr))
    return Stages()


def _progress(stages: Stages) -> object:
    """The listener's display for the duration of the work (nothing when there is none)."""
    from contextlib import nullcontext  # noqa: PLC0415

    listener = stages.listener
    return listener if hasattr(listener, "__enter__") else nullcontext()


def _demo(args: argparse.Namespace) -> int:
    argv = [a for a in (args.target, args.device_id) if a is not None]
    try:
        from channelcut.rknn import demo  # noqa: PLC0415 - needs torch, which is optional

        code = demo.main(argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("torch", "onnxscript"):
            raise
        raise ChannelcutError(
            f"the demo needs {exc.name}: pip install -e \".[torch]\"  (torch==2.13.0)"
        ) from None
    return EXIT_OK if code is None else int(code)


def _input_shapes(texts: list[str]) -> dict[str, list[int]] | None:
    from channelcut.verify import parse_input_shape  # noqa: PLC0415

    shapes: dict[str, list[int]] = {}
    for text in texts:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise ChannelcutError(f"--input-shape {name}: given twice; give each input once")
        shapes[name] = list(dims)
    return shapes or None


def _input_ranges(texts: list[str]) -> dict[str, tuple[float, float]] | None:
    from channelcut.ranges import parse_input_range  # noqa: PLC0415

    ranges: dict[str, tuple[float, float]] = {}
    for text in texts:
        name, bounds = parse_input_range(text)
        if name in ranges:
            raise ChannelcutError(f"--input-range {name}: given twice; give each input once")
        ranges[name] = bounds
    return ranges or None


def _show(report: Report, threshold: float | None, timings: bool = False) -> None:
    from channelcut.render import plain_lines, print_report  # noqa: PLC0415

    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415

        print_report(report, Console(), threshold=threshold, timings=timings)
    else:
        print("\n".join(plain_lines(report, threshold=threshold, timings=timings)))


def _json_safe(value: object) -> object:
    """Report data with inf/nan as null: JSON has no such numbers and strict readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
