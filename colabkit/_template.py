"""Copy the training template, its notebook and bundled data into a project.

The files ship inside the package (`colabkit.templates`), so this works after
a plain `pip install`, not only from a git checkout. A file the user already
has is never overwritten: an identical copy is left alone, an edited one is
kept and reported, so rerunning `%colab_setup ML2022 --template` is safe.
"""

from __future__ import annotations

import os
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
        if self.destination.joinpath("train.py").exists():
            lines.append(f"Train with: python {self.destination / 'train.py'}")
        return "\n".join(lines)


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

    walk(resources.files(PACKAGE), "")
    return dict(sorted(found.items()))


def copy_template(destination: str | os.PathLike | None = None) -> TemplateCopy:
    """Copy train.py, colab_quickstart.ipynb and data/ into `destination`.

    The default destination is the active project's folder (after `setup`),
    else the working directory. Existing files are never overwritten.
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
