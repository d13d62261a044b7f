"""The `colabkit` console script: the same functions as the Python API.

Its sub-commands and their options come from `_commands.COMMANDS`, the table
the magics are built from too. stdout carries only the result (a path, or the
report for `status`), so `$(colabkit fetch ...)` works in a shell; progress and
reports go to stderr. Every error a user can cause, including any OSError, is
one line `colabkit: error: ...` ending with the fix, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Callable

from . import _commands
from ._fsio import os_error_message
from ._version import __version__
from .errors import ColabkitError

USAGE_HINT = "run `colabkit --help` for the commands, `colabkit COMMAND --help` for one"


def _cmd_status(args: argparse.Namespace) -> int:
    from ._status import status

    report = status()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    if args.check and report.problems:
        print(f"colabkit: status lists {len(report.problems)} problem(s); fix them, then run "
              "`colabkit status --check` again", file=sys.stderr)
        return 1
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from ._project import setup

    # A console script runs outside any notebook: it can use, never make, a mount.
    project = setup(**_commands.api_kwargs(_commands.SETUP, args), mount=False, chdir=False, quiet=True)
    if args.template:
        from ._template import copy_template

        print(copy_template(project.root), file=sys.stderr)
    print(project.root)
    return 0


def _cmd_template(args: argparse.Namespace) -> int:
    from ._template import copy_template

    report = copy_template(**_commands.api_kwargs(_commands.TEMPLATE, args))
    print(report, file=sys.stderr)
    print(report.destination)
    return 0


def _print_path(produce: Callable[[], object]) -> int:
    """Run `produce` with its progress and notes sent to stderr, then print the path it returns."""
    with contextlib.redirect_stdout(sys.stderr):
        path = produce()
    print(path)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ._fetch.api import fetch

    return _print_path(lambda: fetch(**_commands.api_kwargs(_commands.FETCH, args)))


def _cmd_stage(args: argparse.Namespace) -> int:
    from ._stage import stage

    return _print_path(lambda: stage(**_commands.api_kwargs(_commands.STAGE, args)))


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": _cmd_status,
    "setup": _cmd_setup,
    "template": _cmd_template,
    "fetch": _cmd_fetch,
    "stage": _cmd_stage,
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `colabkit`, one sub-command per entry of the command table."""
    parser = argparse.ArgumentParser(
        prog="colabkit",
        description="Drive folders, datasets, status and checkpoints for PyTorch in Colab and Kaggle.",
        epilog=USAGE_HINT[0].upper() + USAGE_HINT[1:] + ".",
    )
    parser.add_argument("--version", action="version", version=f"colabkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _commands.COMMANDS:
        sub = commands.add_parser(command.name, help=command.summary, description=command.description)
        for option in command.cli_options():
            option.add_to(sub)
        sub.set_defaults(handler=HANDLERS[command.name], table_entry=command)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run `colabkit ARGS`; returns the exit status (2 for a usage error, 1 for a failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        names = [command.name for command in _commands.COMMANDS]
        print(f"colabkit: error: a command is required ({', '.join(names[:-1])} or {names[-1]}); "
              f"{USAGE_HINT}", file=sys.stderr)
        return 2
    try:
        return handler(args)
    except ColabkitError as exc:
        print(f"colabkit: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        command: _commands.Command = args.table_entry
        target = exc.filename or "the path"
        print(f"colabkit: error: {_one_line(os_error_message(exc, command.action, target))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("colabkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
