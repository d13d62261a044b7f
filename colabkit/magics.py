"""IPython magics: thin front-ends over the functions a user calls from Python.

The magics and their arguments are built from `_commands.COMMANDS`, the table
the `colabkit` console script reads too, through IPython's magic_arguments:
`%fetch?` shows the usage, `%fetch -h` prints it, and a wrong argument is a
UsageError, not a traceback. Errors a user can cause (a ColabkitError, or any
OSError, turned into one line with the fix) are UsageErrors too. Only APIs that
IPython 7.34 (Colab's pinned version) already has are used.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from IPython.utils.text import dedent

from . import _commands
from ._fsio import os_error_message
from .errors import ColabkitError

_HELP = _commands.Option(("-h", "--help"), "show this help and return", {"action": "store_true"})


def _magic(command: _commands.Command, run: Callable[[Any, argparse.Namespace], Any]):
    """A line magic for `command`: parse with magic_arguments, print help, translate errors."""

    def magic(self, line: str = ""):
        from IPython.utils.process import arg_split

        if _commands.help_requested(arg_split(line, posix=True)):
            print(magic.parser.format_help())
            return None
        args = parse_argstring(magic, line)
        try:
            return run(self, args)
        except ColabkitError as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        except OSError as exc:
            message = os_error_message(exc, command.action, exc.filename or "the path")
            raise UsageError(message) from None

    magic.__name__ = magic.__qualname__ = command.magic
    magic.__doc__ = dedent(f"{command.summary[0].upper()}{command.summary[1:]}.\n\n{command.description}")
    for option in reversed((_HELP, *command.magic_options())):
        magic = argument(*option.flags, **option.argparse_kwargs(magic=True))(magic)
    return line_magic(magic_arguments()(magic))


def _show_setup(self, args: argparse.Namespace) -> None:
    from ._project import setup
    from ._status import status

    project = setup(**_commands.api_kwargs(_commands.SETUP, args),
                    mount=not args.no_mount, chdir=not args.no_chdir)
    if args.template:
        from ._template import copy_template

        print(_cell_commands(str(copy_template(project.root))))
    if not args.no_chdir:
        # keep IPython's own notion of the directory (%pwd, %dhist) in step
        self.shell.user_ns["_dh"] = self.shell.user_ns.get("_dh", []) + [str(project.root)]
    # one line here; the full table is %colab_status (the quickstart's next cell)
    report = status()
    print(report.summary() + "  (%colab_status for the full report)")
    for problem in report.problems:
        print(f"Problem: {problem}")
    return None


def _cell_commands(report: str) -> str:
    """A shell command in a report, as a notebook cell needs it: with its `!`."""
    return report.replace("Train with: python ", "Train with: !python ")


def _show_status(self, args: argparse.Namespace) -> None:
    from ._status import status

    report = status()
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
    else:
        display(report)
    if args.check and report.problems:
        raise UsageError(f"status lists {len(report.problems)} problem(s) (above); fix them, "
                         "then run %colab_status --check again")
    return None


def _copy_template(self, args: argparse.Namespace) -> None:
    from ._template import copy_template

    print(_cell_commands(str(copy_template(**_commands.api_kwargs(_commands.TEMPLATE, args)))))
    return None


def _fetch(self, args: argparse.Namespace):
    from ._fetch.api import fetch

    return fetch(**_commands.api_kwargs(_commands.FETCH, args))


def _stage(self, args: argparse.Namespace):
    from ._stage import stage

    return stage(**_commands.api_kwargs(_commands.STAGE, args))


@magics_class
class ColabkitMagics(Magics):
    """%colab_setup, %colab_status, %colab_template, %fetch, %stage and %colab_hints."""

    colab_setup = _magic(_commands.SETUP, _show_setup)
    colab_status = _magic(_commands.STATUS, _show_status)
    colab_template = _magic(_commands.TEMPLATE, _copy_template)
    fetch = _magic(_commands.FETCH, _fetch)
    stage = _magic(_commands.STAGE, _stage)

    @magic_arguments()
    @argument("-h", "--help", action="store_true", help="show this help and return")
    @argument("state", nargs="?", choices=["on", "off"], help="on or off; without it, say which")
    @line_magic
    def colab_hints(self, line: str = ""):
        """Plain-language hints after PyTorch errors and warnings: %colab_hints on|off."""
        from ._hints.switch import hints, hints_enabled

        args = parse_argstring(self.colab_hints, line)
        if args.help:
            print(self.colab_hints.parser.format_help())
            return
        if args.state is not None:
            hints(args.state == "on")
        print(f"colabkit error hints are {'on' if hints_enabled() else 'off'}")
