"""One table of commands and their options, read by both front-ends.

`cli.py` builds its argparse sub-commands from it and `magics.py` its IPython
magics (through IPython's magic_arguments, which is argparse too), so a flag
added here appears as `colabkit fetch --flag` and as `%fetch --flag` at once,
with the same help text and default. An option's `param` names the keyword of
the Python function it feeds (`api_kwargs`), so both front-ends also pass it on
the same way.

Texts are literal: `%` in a help string is escaped for argparse here, and no
text writes `%%`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping


@dataclass(frozen=True)
class Option:
    """One argument: argparse's flags and keywords, and the API keyword it feeds."""

    flags: tuple[str, ...]
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    param: str | None = None  # keyword of the Python function; None: used by the front-end itself

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value under."""
        if "dest" in self.kwargs:
            return self.kwargs["dest"]
        longest = max(self.flags, key=len)
        return longest.lstrip("-").replace("-", "_")

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    def add_to(self, parser: Any, *, magic: bool = False) -> None:
        """Add this option to an argparse parser (or give its arguments to magic_arguments)."""
        parser.add_argument(*self.flags, **self.argparse_kwargs(magic=magic))

    def argparse_kwargs(self, *, magic: bool = False) -> dict[str, Any]:
        kwargs = dict(self.kwargs)
        if magic and "magic_default" in kwargs:
            kwargs["default"] = kwargs["magic_default"]
        kwargs.pop("magic_default", None)
        kwargs["help"] = self.help.replace("%", "%%")  # argparse %-formats help strings
        return kwargs


@dataclass(frozen=True)
class Command:
    """A command: `colabkit NAME ...` in a shell and `%MAGIC ...` in a notebook."""

    name: str
    magic: str
    summary: str
    description: str
    action: str  # for an OSError: "Could not <action> <path>: ..."
    options: tuple[Option, ...] = ()
    # Notebook-only options: a shell script cannot mount Drive or move the notebook's folder.
    magic_only: tuple[Option, ...] = ()

    def cli_options(self) -> tuple[Option, ...]:
        return self.options

    def magic_options(self) -> tuple[Option, ...]:
        return self.options + self.magic_only


_QUIET = Option(("-q", "--quiet"), "no progress output, only errors",
                {"action": "store_true"}, param="quiet")

SETUP = Command(
    name="setup",
    magic="colab_setup",
    summary="create MyDrive/PROJECT and its folders",
    description=(
        "Create the project folder PROJECT under MyDrive (on Kaggle under /kaggle/working, "
        "locally under COLABKIT_DRIVE_DIR) with data/, checkpoints/, outputs/ and logs/, "
        "and make it the active project; nothing is ever deleted. In a notebook, "
        "%colab_setup also mounts Drive and changes into the folder. A shell command "
        "cannot mount Drive: in Colab mount it from a notebook cell first (%colab_setup "
        "PROJECT or colabkit.mount_drive()); `colabkit setup` prints the folder's path."
    ),
    action="create the project folder",
    options=(
        Option(("project",), "project folder under MyDrive, e.g. ML2022 or ML2022/HW1 (default ML2022)",
               {"nargs": "?", "default": "ML2022"}, param="project"),
        Option(("--template",), "also copy train.py, the Colab notebook and the bundled data into "
               "the project (never overwrites your files)", {"action": "store_true"}),
    ),
    magic_only=(
        Option(("--no-mount",), "do not mount Drive; use an existing mount", {"action": "store_true"}),
        Option(("--no-chdir",), "stay in the current working directory", {"action": "store_true"}),
    ),
)

STATUS = Command(
    name="status",
    magic="colab_status",
    summary="report GPU, torch, Drive, disk and RAM, with the fix for each problem",
    description=(
        "Report the host (Colab, Kaggle or local), the GPU (through nvidia-smi), torch and "
        "CUDA, Drive, the local disk and RAM; each problem found comes with its fix. With "
        "--check it fails (exit status 1 in a shell, an error in a notebook cell) when it "
        "lists a problem, so a script or a Run-all stops before training on the wrong machine."
    ),
    action="read",
    options=(
        Option(("--json",), "print the report as JSON", {"action": "store_true"}),
        Option(("--check",), "fail when the report lists a problem", {"action": "store_true"}),
    ),
)

TEMPLATE = Command(
    name="template",
    magic="colab_template",
    summary="copy train.py, the Colab notebook and the bundled data into DEST",
    description=(
        "Copy the training template (train.py), colab_quickstart.ipynb and data/ into DEST "
        "(default: the active project, else the current folder). Files you already have are "
        "never overwritten: an edited train.py is kept and reported. `colabkit template` prints "
        "the destination on stdout and its report on stderr."
    ),
    action="copy the template into",
    options=(Option(("dest",), "destination folder", {"nargs": "?", "default": None}, param="destination"),),
)

FETCH = Command(
    name="fetch",
    magic="fetch",
    summary="download a Drive file or folder, or a URL, once and verified; gives its path",
    description=(
        "Download into the active project's data/ folder (else the working directory), check "
        "the hash, and reuse the file next time without a request. SOURCE is a Drive file id, "
        "a Drive share or folder link, or an http(s) URL."
    ),
    action="download to",
    options=(
        Option(("source",), "Drive file id, Drive share or folder link, or http(s) URL", param="source"),
        Option(("-o", "--output"), "file name (placed in the project's data/ folder, else the "
               "working directory) or path", {"default": None}, param="output"),
        Option(("--hash",), "sha256:... (or sha1:..., md5:...) the file must match",
               {"default": None}, param="hash"),
        Option(("--extract",), "extract the archive; gives the extracted folder",
               {"action": "store_true"}, param="extract"),
        Option(("--verify",), "re-hash a cached file instead of trusting its stamp",
               {"action": "store_true"}, param="verify"),
        _QUIET,
        Option(("--retries",), "retries after a network failure (default 3)",
               {"type": int, "default": 3}, param="retries"),
        Option(("--timeout",), "seconds to wait for the server on each read (default 60)",
               {"type": float, "default": 60}, param="timeout"),
        Option(("--private",), "a Drive file not shared publicly, through the Drive API "
               "(drive-api extra)", {"action": "store_true"}, param="private"),
        # left out, fetch()'s own defaults apply (SUPPRESS: the keyword is not passed at all)
        Option(("--deadline",), "seconds the whole download may take, retries included "
               "(default 6 hours)", {"type": float, "default": argparse.SUPPRESS, "metavar": "SECONDS"},
               param="deadline"),
        Option(("--max-size",), "the most bytes accepted, e.g. 500M or 2G (default 50G)",
               {"type": lambda text: parse_size(text), "default": argparse.SUPPRESS, "metavar": "SIZE"},
               param="max_size"),
    ),
)

STAGE = Command(
    name="stage",
    magic="stage",
    summary="copy a file or folder from Drive to the local disk; gives the local path",
    description=(
        "Copy SRC (typically under /content/drive/MyDrive, or a Kaggle dataset under "
        "/kaggle/input) to COLABKIT_CACHE_DIR/staged/<name> (or DEST) on the fast local disk, "
        "skipping files already there with the same size and mtime."
    ),
    action="stage",
    options=(
        Option(("src",), "file or folder to copy", param="src"),
        Option(("dest",), "where the copy goes", {"nargs": "?", "default": None}, param="dest"),
        Option(("--workers",), "copying threads (default: 8 for a source on the Drive mount, "
               "1 on a local disk)", {"type": int, "default": None}, param="workers"),
        Option(("--extract",), "extract the staged archive; gives the folder",
               {"action": "store_true"}, param="extract"),
        _QUIET,
    ),
)

COMMANDS: tuple[Command, ...] = (STATUS, SETUP, TEMPLATE, FETCH, STAGE)


def api_kwargs(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for the Python function behind `command`, from parsed `args`.

    An option left out whose default is argparse.SUPPRESS is not passed, so the
    function's own default applies.
    """
    return {opt.param: getattr(args, opt.dest) for opt in command.options
            if opt.param and hasattr(args, opt.dest)}


_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
               "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(text: str) -> int:
    """A size a user types: bytes ("1048576") or with a binary unit ("500M", "2G", "1.5GiB")."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _SIZE_UNITS or float(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; give bytes or a number with K, M, G or T, e.g. 500M or 2G")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def option_strings(options: tuple[Option, ...]) -> Iterator[str]:
    """Every flag and positional name of `options` (for the table's own tests and help)."""
    for opt in options:
        yield from opt.flags


def help_requested(tokens: list[str]) -> bool:
    """True when a magic's arguments ask for help (`-h` or `--help` before any `--`)."""
    for token in tokens:
        if token == "--":
            return False
        if token in ("-h", "--help"):
            return True
    return False
