"""Persistent project folders on Drive, and the active project.

`setup("ML2022")` gives MyDrive/ML2022/{data,checkpoints,outputs,logs}. The
active project is remembered in this process and exported as
COLABKIT_PROJECT_DIR, so a `!python train.py` started from the notebook finds
the same folders.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from . import _runtime
from ._fsio import os_error_message, unsafe_name_reason
from .errors import DriveError, ProjectNameError

DEFAULT_SUBDIRS = ("data", "checkpoints", "outputs", "logs")
PROJECT_ENV = "COLABKIT_PROJECT_DIR"
# Beyond the one-component rule (_fsio.unsafe_name_reason: no control, zero-width
# or bidi characters, no '/', '\\', '.' or '..', at most 255 bytes): characters
# Drive's sync clients and Windows refuse, and those a shell line such as
# `!python train.py --data /content/drive/MyDrive/NAME` would misread.
FORBIDDEN_CHARS = '<>:"|?*\\' + "'`$;&"
NAME_RULE = (
    "Use a name like 'ML2022' or 'ML2022/HW1': letters, digits, spaces, '-', '_', '.' and "
    "other printable characters except " + " ".join(FORBIDDEN_CHARS) + ", no part "
    "starting or ending with a space or ending with a dot, with '/' only between nested folders."
)

# format characters (soft hyphen, zero-width, bidi controls), lone surrogates
# (no file system can store them), line and paragraph separators
_INVISIBLE_CATEGORIES = {"Cf", "Cs", "Zl", "Zp"}

_active: Project | None = None


@dataclass(frozen=True)
class Project:
    """A project folder on Drive and its subfolders, as `setup()` made them.

    Attributes:
        root: the project folder (e.g. /content/drive/MyDrive/ML2022).
        subdirs: the subfolders setup created; each is also an attribute
            (`project.data`, or `project.models` for subdirs=("data", "models")).

    The four standard folders (`data`, `checkpoints`, `outputs`, `logs`) are
    where colabkit's own functions put things (fetch, CheckpointManager, the
    template); they are always available as attributes, and are created by
    whichever function writes there when `subdirs` left them out.
    """

    root: Path
    subdirs: tuple[str, ...] = field(default=DEFAULT_SUBDIRS)

    @property
    def name(self) -> str:
        """The last part of the project folder's name (e.g. 'HW1' for 'ML2022/HW1')."""
        return self.root.name

    @property
    def folders(self) -> dict[str, Path]:
        """Every subfolder in `subdirs`, by name."""
        return {sub: self.root / sub for sub in self.subdirs}

    @property
    def data(self) -> Path:
        """Datasets: where fetch() puts downloads by default."""
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        """Training state: where CheckpointManager writes by default."""
        return self.root / "checkpoints"

    @property
    def outputs(self) -> Path:
        """Results: exported models, predictions, plots."""
        return self.root / "outputs"

    @property
    def logs(self) -> Path:
        """Metrics logs and TensorBoard runs."""
        return self.root / "logs"

    def __getattr__(self, name: str) -> Path:
        # called only for names that are not attributes: the custom subfolders
        if name.startswith("_") or name in ("root", "subdirs"):  # copy/pickle: not set yet
            raise AttributeError(name)
        if name in self.subdirs:
            return self.root / name
        raise AttributeError(
            f"Project has no folder {name!r}; its folders are {', '.join(self.subdirs)}. "
            "Use project.path(...) for any other path inside it."
        )

    def path(self, *parts: str) -> Path:
        """A path inside the project folder, e.g. project.path("outputs", "model.pt")."""
        return self.root.joinpath(*parts)

    def __str__(self) -> str:
        return str(self.root)


def name_problem(project: object) -> str | None:
    """Why `project` cannot name a project folder under MyDrive, or None when it can."""
    if not isinstance(project, str) or not project.strip():
        return "it is empty"
    if project.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", project):
        return "it is a path; it must be relative to MyDrive"
    bad = sorted({ch for ch in project if ch in FORBIDDEN_CHARS})
    if bad:
        return f"it contains {' '.join(repr(ch) for ch in bad)}, which Drive or the shell rejects"
    for part in project.split("/"):
        shown = part if len(part) <= 40 else part[:20] + "…"
        reason = unsafe_name_reason(part)
        if reason:
            return f"its folder part {shown!r} cannot be used: {reason}"
        invisible = [ch for ch in part if unicodedata.category(ch) in _INVISIBLE_CATEGORIES]
        if invisible:
            return (f"its folder part {shown!r} contains the invisible or unencodable character "
                    f"{invisible[0]!r}")
        if part != part.strip() or part.endswith("."):
            return f"its folder part {shown!r} starts or ends with a space or ends with a dot"
    return None


def validate_name(project: str) -> tuple[str, ...]:
    """Split a project name like "ML2022" or "ML2022/HW1" into its folder parts.

    Args:
        project: the name under MyDrive; '/' separates nested folders.

    Returns:
        The folder parts, e.g. ("ML2022", "HW1").

    Raises:
        ProjectNameError: the name is empty, a path, or has a character Drive
            or a shell rejects (the message states the rule).
    """
    reason = name_problem(project)
    if reason:
        shown = project if not isinstance(project, str) or len(project) <= 60 else project[:30] + "…"
        raise ProjectNameError(f"The project name {shown!r} cannot be used: {reason}. {NAME_RULE}")
    return tuple(project.split("/"))


def setup(
    project: str = "ML2022",
    *,
    mount: bool = True,
    chdir: bool = True,
    subdirs: tuple[str, ...] | list[str] = DEFAULT_SUBDIRS,
    quiet: bool = False,
) -> Project:
    """Mount Drive, create the project folders (never deleting anything), cd into them.

    The project survives a disconnect because it lives on Drive (on Kaggle in
    /kaggle/working, which is kept when the notebook is saved; locally in the
    folder standing in for Drive). It becomes the active project: fetch,
    CheckpointManager and the template use its folders, and a `!python`
    started afterwards finds it through COLABKIT_PROJECT_DIR.

    Args:
        project: folder name under MyDrive, e.g. "ML2022" or "ML2022/HW1".
        mount: mount Drive if needed; False uses an existing mount as is (a
            `!python` subprocess cannot mount).
        chdir: make the project folder the working directory.
        subdirs: the subfolders to create.
        quiet: print nothing.

    Returns:
        The Project, with its folders.

    Raises:
        ProjectNameError: the name (or a subdir) breaks the naming rule, or a
            file stands where a folder must go.
        DriveNotMountedError: mount=False in Colab and Drive is not mounted.
        DriveError: a folder cannot be created (read-only, full, not a folder).
    """
    from . import _drive as drive

    parts = validate_name(project)
    for sub in subdirs:
        validate_name(sub)
    mydrive = drive.mount_drive() if mount else drive.require_drive()
    root = mydrive.joinpath(*parts)
    for folder in (root, *(root / sub for sub in subdirs)):
        _make_folder(folder)
    result = Project(root=root, subdirs=tuple(subdirs))
    activate(result)
    if chdir:
        os.chdir(root)
    if not quiet:
        where = {"colab": "Google Drive", "kaggle": "Kaggle's working folder, saved with the notebook"}
        print(f"Project {project!r} ready in {root} "
              f"({where.get(_runtime.runtime(), 'local folder standing in for Drive')}).")
        print("  folders: " + ", ".join(f"{sub}/" for sub in subdirs))
        if chdir:
            print(f"  working directory: {root}")
    return result


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ProjectNameError(
            f"{folder} exists and is a file, so the project folder cannot be created "
            "there. Rename that file or choose another project name."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriveError(os_error_message(exc, "create the project folder", folder)) from exc


def activate(project: Project) -> None:
    """Make `project` the default for fetch, checkpoints and outputs."""
    global _active
    _active = project
    os.environ[PROJECT_ENV] = str(project.root)


def active_project() -> Project | None:
    """The project in use: set up in this process, else the one a parent notebook exported.

    A `!python train.py` started from a notebook after `%colab_setup ML2022`
    finds that project through COLABKIT_PROJECT_DIR.

    Returns:
        The active Project, or None before any setup().
    """
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
