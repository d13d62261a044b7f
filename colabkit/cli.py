"""The `colabkit` console script: the same functions as the Python API.

Errors a user can cause exit non-zero with one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from ._version import __version__
from .errors import ColabkitError


def _cmd_status(args: argparse.Namespace) -> int:
    from ._status import status

    report = status()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from ._project import setup

    # A console script runs outside any notebook: it can use, never make, a mount.
    project = setup(args.project, mount=False, chdir=False, quiet=True)
    print(project.root)
    return 0


def _cmd_template(args: argparse.Namespace) -> int:
    from ._template import copy_template

    print(copy_template(args.dest))
    return 0


def _print_path(produce: Callable[[], object]) -> int:
    """Run `produce` with its progress and notes sent to stderr, then print the path it returns.

    stdout is then just the path, so `$(colabkit fetch ...)` works in a shell.
    """
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        path = produce()
    print(path)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ._fetch import fetch

    return _print_path(lambda: fetch(
        args.source, args.output, hash=args.hash, extract=args.extract, verify=args.verify,
        quiet=args.quiet, retries=args.retries, timeout=args.timeout, private=args.private,
    ))


def _cmd_stage(args: argparse.Namespace) -> int:
    from ._stage import stage

    return _print_path(lambda: stage(args.src, args.dest, workers=args.workers, extract=args.extract,
                                     quiet=args.quiet))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colabkit",
        description="Drive folders, datasets, status and checkpoints for PyTorch in Colab.",
    )
    parser.add_argument("--version", action="version", version=f"colabkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    status = commands.add_parser("status", help="GPU, torch, Drive, disk and RAM report")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)

    setup = commands.add_parser(
        "setup",
        help="create MyDrive/PROJECT and its folders; prints the path",
        description="Create the project folders. A script cannot mount Drive: in Colab, "
        "mount it from a notebook cell first (%%colab_setup or colabkit.mount_drive()).",
    )
    setup.add_argument("project", help="project folder under MyDrive, e.g. ML2022")
    setup.set_defaults(handler=_cmd_setup)

    template = commands.add_parser(
        "template",
        help="copy train.py, the Colab notebook and the bundled data into DEST",
        description="Copy the training template (train.py), colab_quickstart.ipynb and data/ "
        "into DEST (default: the active project, else the current folder). Files you already "
        "have are never overwritten.",
    )
    template.add_argument("dest", nargs="?", help="destination folder")
    template.set_defaults(handler=_cmd_template)

    fetch = commands.add_parser(
        "fetch",
        help="download a Drive file/folder or URL once, verified; prints the path",
        description="Download into the active project's data/ folder (else the working directory), "
        "check the hash, and reuse the file next time without a request.",
    )
    fetch.add_argument("source", help="Drive file id, Drive share or folder link, or http(s) URL")
    fetch.add_argument("-o", "--output", default=None, help="file name or path")
    fetch.add_argument("--hash", default=None, help="sha256:... (or sha1:..., md5:...) the file must match")
    fetch.add_argument("--extract", action="store_true", help="extract the archive; prints the folder")
    fetch.add_argument("--verify", action="store_true", help="re-hash a cached file instead of trusting its stamp")
    fetch.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    fetch.add_argument("--retries", type=int, default=3, help="retries after a network failure (default 3)")
    fetch.add_argument("--timeout", type=float, default=60, help="seconds to wait for the server (default 60)")
    fetch.add_argument("--private", action="store_true",
                       help="a Drive file not shared publicly, through the Drive API (drive-api extra)")
    fetch.set_defaults(handler=_cmd_fetch)

    stage = commands.add_parser(
        "stage",
        help="copy a file or folder from Drive to the local disk; prints the local path",
        description="Copy to COLABKIT_CACHE_DIR/staged/<name> (or DEST), skipping files already "
        "there with the same size and mtime.",
    )
    stage.add_argument("src", help="file or folder to copy (typically under /content/drive/MyDrive)")
    stage.add_argument("dest", nargs="?", default=None, help="where the copy goes")
    stage.add_argument("--workers", type=int, default=None,
                       help="copying threads (default: 8 for a source on the Drive mount, 1 on a local disk)")
    stage.add_argument("--extract", action="store_true", help="extract the staged archive; prints the folder")
    stage.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    stage.set_defaults(handler=_cmd_stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except ColabkitError as exc:
        print(f"colabkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("colabkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
