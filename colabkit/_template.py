"""Copy the training templates, their notebook and bundled data into a project.

The files ship inside the package (`colabkit.templates`), so this works after
a plain `pip install`, not only from a git checkout. A file the user already
has is never overwritten: an identical copy is left alone, an edited one is
kept and reported, so rerunning `%colab_setup ML2022 --template` is safe.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ._fsio import write_bytes_atomic
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from importlib.abc import Traversable

PACKAGE = "colabkit.templates"
_SKIP = {"__init__.py", "__pycache__"}


@dataclass
class TemplateCopy:
    """What `copy_template` did: files written, already up to date, and kept as edited."""

    destination: Path
    copied: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Template in {self.destination}:"]
        lines += [f"  copied     {p.relative_to(self.destination)}" for p in self.copied]
        lines += [f"  up to date {p.relative_to(self.destination)}" for p in self.unchanged]
        lines += [
            f"  kept       {p.relative_to(self.destination)} (yours differs from the template; "
            "rename it to get a fresh copy)"
            for p in self.kept
        ]
        scripts = [name for name in ("train.py", "train_images.py") if (self.destination / name).is_file()]
        if scripts:
            prefix = "!" if _in_ipython() else ""  # a notebook cell runs a shell command with `!`
            lines.append("Train with: " + "   or   ".join(
                f"{prefix}python {shlex.quote(str(self.destination / name))}" for name in scripts))
        return "\n".join(lines)


def _in_ipython() -> bool:
    """True inside an IPython shell or notebook kernel (where a shell command needs `!`)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return get_ipython() is not None


def template_files() -> dict[str, Traversable]:
    """The shipped template files by relative path ('train.py', 'data/...')."""
    found: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.name in _SKIP or entry.name.endswith((".pyc", ".tmp")):
                continue
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                found[prefix + entry.name] = entry

    walk(templates_root(), "")
    return dict(sorted(found.items()))


def templates_root() -> Traversable | Path:
    """The templates of the colabkit being run.

    Installed (a wheel, or an editable install), they are the package
    `colabkit.templates`. In a source checkout put first on PYTHONPATH they
    are its templates/ folder beside colabkit/: an editable install of another
    checkout must not hand out that checkout's older templates instead.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "setup.cfg").is_file() and (checkout / "templates" / "__init__.py").is_file():
        return checkout / "templates"
    return resources.files(PACKAGE)


def copy_template(destination: str | os.PathLike | None = None) -> TemplateCopy:
    """Copy train.py, train_images.py, colab_quickstart.ipynb and data/ into `destination`.

    The templates are meant to be edited, so a file already there is never
    overwritten: an identical copy is left alone, an edited one is kept and
    reported, a missing one is copied again.

    Args:
        destination: the folder to copy into; by default the active project's
            folder (after `setup` or `%colab_setup`), else the working directory.

    Returns:
        A TemplateCopy listing what was copied, already up to date, and kept;
        its text ends with the command that trains (with `!` inside a notebook).

    Raises:
        ConfigError: destination is an existing file, not a folder.
    """
    if destination is None:
        from ._project import active_project

        project = active_project()
        destination = project.root if project is not None else Path.cwd()
    target = Path(destination).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"{target} is a file, so the template cannot be copied into it; give a folder."
        )
    result = TemplateCopy(destination=target)
    for relative, source in template_files().items():
        data = source.read_bytes()
        path = target / relative
        if path.exists():
            if path.is_file() and path.read_bytes() == data:
                result.unchanged.append(path)
            else:
                result.kept.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)  # never a half-written file under the final name
        result.copied.append(path)
    return result
