"""`l2bt`'s argument parser (one sub-command per verb module) and its entry point."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence

from l2bt.errors import InputError
from l2bt.utils.allocator import bound_large_buffers
from l2bt.utils.progress import progress_from_environment, set_progress

VERBS = (
    "fit",
    "calibrate",
    "predict",
    "evaluate",
    "benchmark",
    "check_data",
    "make_synthetic",
    "demo",
    "export",
    "serve",
    "view",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from l2bt import __version__
    from l2bt.cli.common import show_defaults

    parser = argparse.ArgumentParser(
        prog="l2bt",
        description="High-resolution anomaly detection (L2BT) and a defect-size-aware benchmark.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"l2bt {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"l2bt.cli.{verb}")
        except ModuleNotFoundError as e:
            if e.name != f"l2bt.cli.{verb}":
                raise
            continue
        module.add_parser(subparsers)
    show_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bound_large_buffers()  # memory bounded by what is in use, not by the heap's history
    set_progress(progress_from_environment())  # a process setting, set once
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a log shows each line as it is printed
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except InputError as e:
        if args.debug:
            raise
        print(f"l2bt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # no space, read-only, permission, not a folder, exists…
        if args.debug:
            raise
        print(f"l2bt {args.command}: error: {os_problem(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"l2bt {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def os_problem(error: OSError) -> str:
    """One line for an operating-system error: the path(s) and the system's words."""
    problem = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return problem
    if error.filename2 is not None:
        return f"{error.filename} -> {error.filename2}: {problem}"
    return f"{error.filename}: {problem}"
