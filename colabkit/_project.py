"""Persistent project folders on Drive, and the active project.

`setup("ML2022")` gives MyDrive/ML2022/{data,checkpoints,outputs,logs}. The
active project is remembered in this process and exported as
COLABKIT_PROJECT_DIR, so a `!python train.py` started from the notebook finds
the same folders.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import _runtime
from .errors import ProjectNameError

DEFAULT_SUBDIRS = ("data", "checkpoints", "outputs", "logs")
PROJECT_ENV = "COLABKIT_PROJECT_DIR"
# Characters Windows/Drive sync clients and the shell trip over.
_FORBIDDEN = re.compile(r'[<>:"|?*\\\x00-\x1f]')

_active: Project | None = None


@dataclass(frozen=True)
class Project:
    """A project folder and its standard subfolders."""

    root: Path
    subdirs: tuple[str, ...] = field(default=DEFAULT_SUBDIRS)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def path(self, *parts: str) -> Path:
        """A path inside the project folder."""
        return self.root.joinpath(*parts)

    def __str__(self) -> str:
        return str(self.root)


def validate_name(project: str) -> tuple[str, ...]:
    """Split a project name like "ML2022" or "ML2022/HW1" into safe parts, or raise."""
    allowed = (
        "Use a name like 'ML2022' or 'ML2022/HW1': letters, digits, spaces, '-', '_' "
        "and '.', with '/' only between nested folders."
    )
    if not isinstance(project, str) or not project.strip():
        raise ProjectNameError(f"The project name is empty. {allowed}")
    if project.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", project):
        raise ProjectNameError(
            f"The project name {project!r} is a path; it must be relative to MyDrive. {allowed}"
        )
    match = _FORBIDDEN.search(project)
    if match:
        raise ProjectNameError(
            f"The project name {project!r} contains {match.group()!r}, which Drive or the "
            f"shell rejects. {allowed}"
        )
    parts = tuple(project.split("/"))
    for part in parts:
        if part in ("", ".", "..") or part != part.strip():
            raise ProjectNameError(
                f"The project name {project!r} has an empty, '.', '..' or space-padded "
                f"folder part. {allowed}"
            )
    return parts


def setup(
    project: str = "ML2022",
    *,
    mount: bool = True,
    chdir: bool = True,
    subdirs: tuple[str, ...] | list[str] = DEFAULT_SUBDIRS,
    quiet: bool = False,
) -> Project:
    """Mount Drive, create the project folders (never deleting anything), cd into them.

    With mount=False the existing mount (or the local stand-in) is used as is;
    a `!python` subprocess in Colab cannot mount and gets a clear error when
    there is no mount to find.
    """
    from . import _drive as drive

    parts = validate_name(project)
    for sub in subdirs:
        validate_name(sub)
    mydrive = drive.mount_drive() if mount else drive.require_drive()
    root = mydrive.joinpath(*parts)
    for folder in (root, *(root / sub for sub in subdirs)):
        if folder.exists() and not folder.is_dir():
            raise ProjectNameError(
                f"{folder} exists and is a file, so the project folder cannot be created "
                "there. Rename that file or choose another project name."
            )
        folder.mkdir(parents=True, exist_ok=True)
    result = Project(root=root, subdirs=tuple(subdirs))
    activate(result)
    if chdir:
        os.chdir(root)
    if not quiet:
        where = "Google Drive" if _runtime.in_colab() else "local stand-in for Drive"
        print(f"Project {project!r} ready in {root} ({where}).")
        print("  folders: " + ", ".join(f"{sub}/" for sub in subdirs))
        if chdir:
            print(f"  working directory: {root}")
    return result


def activate(project: Project) -> None:
    """Make `project` the default for fetch, checkpoints and outputs."""
    global _active
    _active = project
    os.environ[PROJECT_ENV] = str(project.root)


def active_project() -> Project | None:
    """The project set up in this process, else the one a parent notebook exported."""
    if _active is not None:
        return _active
    inherited = os.environ.get(PROJECT_ENV)
    if inherited and Path(inherited).is_dir():
        return Project(root=Path(inherited))
    return None


def deactivate() -> None:
    """Forget the active project (mostly for tests)."""
    global _active
    _active = None
    os.environ.pop(PROJECT_ENV, None)
