"""The `l2bt` command: a thin layer over the library, one module per verb.

Each verb module defines `add_parser(subparsers)` (which sets `func`) and a `run(args)`
that calls library functions. A verb module imports only argparse-level helpers at its
top; its heavy dependencies (torch, the data layouts, optional extras) are imported
inside `run`, so `l2bt --help` answers at once and `evaluate` never loads torch. Bad
input (`InputError`) becomes one plain line on stderr and exit status 2; `--debug`
shows the traceback instead.
"""

from l2bt.cli.main import VERBS, build_parser, main

__all__ = ["VERBS", "build_parser", "main"]
