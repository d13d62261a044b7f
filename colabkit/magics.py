"""IPython magics: thin front-ends over the functions a user calls from Python.

Arguments are parsed by IPython's magic_arguments, so `%colab_setup?` shows the
usage and a wrong argument is a UsageError, not a traceback. Only APIs that
IPython 7.34 (Colab's pinned version) already has are used.
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .errors import ColabkitError


@magics_class
class ColabkitMagics(Magics):
    """%colab_setup, %colab_status, %colab_hints, %fetch."""

    @magic_arguments()
    @argument("project", nargs="?", default="ML2022", help="project folder under MyDrive (default ML2022)")
    @argument("--no-mount", action="store_true", help="do not mount Drive; use an existing mount")
    @argument("--no-chdir", action="store_true", help="stay in the current working directory")
    @argument("--template", action="store_true",
              help="copy train.py, the notebook and the bundled data into the project (never overwrites)")
    @line_magic
    def colab_setup(self, line: str = ""):
        """Mount Drive, create MyDrive/PROJECT/{data,checkpoints,outputs,logs}, cd there, show status."""
        from ._project import setup
        from ._status import status

        args = parse_argstring(self.colab_setup, line)
        try:
            project = setup(args.project, mount=not args.no_mount, chdir=not args.no_chdir)
            if args.template:
                from ._template import copy_template

                print(copy_template(project.root))
        except ColabkitError as exc:
            raise UsageError(str(exc)) from None
        if not args.no_chdir:
            # keep IPython's own notion of the directory (%pwd, %dhist) in step
            self.shell.user_ns["_dh"] = self.shell.user_ns.get("_dh", []) + [str(project.root)]
        display(status())
        return None

    @magic_arguments()
    @argument("--json", action="store_true", help="print the report as JSON")
    @line_magic
    def colab_status(self, line: str = ""):
        """Report GPU (nvidia-smi), torch, Drive, disk and RAM, with the fix when something is off."""
        from ._status import status

        args = parse_argstring(self.colab_status, line)
        report = status()
        if args.json:
            import json

            print(json.dumps(report.to_dict(), indent=2))
        else:
            display(report)

    @magic_arguments()
    @argument("state", nargs="?", choices=["on", "off"], help="on or off; without it, say which")
    @line_magic
    def colab_hints(self, line: str = ""):
        """Plain-language hints after PyTorch errors and warnings: %colab_hints on|off."""
        from ._hints.switch import hints, hints_enabled

        args = parse_argstring(self.colab_hints, line)
        if args.state is not None:
            hints(args.state == "on")
        print(f"colabkit error hints are {'on' if hints_enabled() else 'off'}")

    @magic_arguments()
    @argument("source", help="Drive file id, Drive share or folder link, or http(s) URL")
    @argument("-o", "--output", default=None,
              help="file name (placed in the project's data/ folder, else the working directory) or path")
    @argument("--hash", default=None, help="sha256:... (or sha1:..., md5:...) the file must match")
    @argument("--extract", action="store_true", help="extract the archive; returns the extracted folder")
    @argument("--verify", action="store_true", help="re-hash a cached file instead of trusting its stamp")
    @argument("-q", "--quiet", action="store_true", help="no progress output, only errors")
    @argument("--private", action="store_true",
              help="read a Drive file not shared publicly through the Drive API (drive-api extra)")
    @line_magic
    def fetch(self, line: str = ""):
        """Download a dataset once, verified, into the project's data/ folder; returns its path."""
        from ._fetch import fetch

        args = parse_argstring(self.fetch, line)
        try:
            return fetch(args.source, args.output, hash=args.hash, extract=args.extract,
                         verify=args.verify, quiet=args.quiet, private=args.private)
        except ColabkitError as exc:
            raise UsageError(str(exc)) from None
