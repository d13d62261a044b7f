"""colabkit: mount Drive, fetch data, checkpoint and resume PyTorch training in Colab.

The public API is re-exported lazily so that `import colabkit` stays cheap:
torch, gdown, pydrive2 and matplotlib load only when a function needs them.
Inside an IPython shell, importing colabkit also registers its magics.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # runtime
    "in_colab": "_runtime",
    # drive
    "mount_drive": "_drive",
    "flush_drive": "_drive",
    # project
    "setup": "_project",
    "Project": "_project",
    "active_project": "_project",
    # diagnostics
    "status": "_status",
    "Status": "_status",
    "GPUInfo": "_status",
    "device": "_status",
    # drive_api (extra: drive-api)
    "connect_drive": "_drive_api.session",
    "DriveClient": "_drive_api.client",
    "DriveFile": "_drive_api.client",
    "SyncResult": "_drive_api.client",
    # template
    "copy_template": "_template",
    "TemplateCopy": "_template",
    # error_hints
    "Hint": "_hints.rules",
    "explain": "_hints.rules",
    "hints": "_hints.switch",
    "install_excepthook": "_hints.excepthook",
    # fetching, archives, staging (no module is named like the function it exports:
    # importing colabkit.fetch the module would shadow colabkit.fetch the function)
    "fetch": "_fetch.api",
    "extract": "_archive.api",
    "stage": "_stage",
    # checkpoint
    "CheckpointManager": "_checkpoint.manager",
    "CheckpointWarning": "_checkpoint.manager",
    "ResumeInfo": "_checkpoint.manager",
    # state
    "training_state": "_state",
    "restore_training_state": "_state",
    "seed_everything": "_state",
    "seed_worker": "_state",
    "dataloader_seeding": "_state",
    # training: a resumable run around the user's own loop, and its helpers
    "Run": "_training.run",
    "RunState": "_training.run",
    "ResumableSampler": "_training.data",
    "sample_generator": "_training.data",
    "sample_seed": "_training.data",
    "MicroBatcher": "_training.microbatch",
    "init_distributed": "_training.distributed",
    "Processes": "_training.distributed",
    "EarlyStopping": "_training.early_stop",
    "plot_metrics": "_training.metrics",
    # export
    "save_model": "_export",
    "load_model": "_export",
    # IPython
    "load_ipython_extension": "_extension",
}

__all__ = sorted([*_EXPORTS, "__version__", "errors"])

if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from ._extension import load_ipython_extension
    from ._archive.api import extract
    from ._checkpoint.manager import CheckpointManager, CheckpointWarning, ResumeInfo
    from ._status import GPUInfo, Status, device, status
    from ._drive import flush_drive, mount_drive
    from ._drive_api.client import DriveClient, DriveFile, SyncResult
    from ._drive_api.session import connect_drive
    from ._hints.excepthook import install_excepthook
    from ._hints.rules import Hint, explain
    from ._hints.switch import hints
    from ._export import load_model, save_model
    from ._fetch.api import fetch
    from ._project import Project, active_project, setup
    from ._runtime import in_colab
    from ._stage import stage
    from ._state import dataloader_seeding, restore_training_state, seed_everything, seed_worker, training_state
    from ._template import TemplateCopy, copy_template
    from ._training.data import ResumableSampler, sample_generator, sample_seed
    from ._training.distributed import Processes, init_distributed
    from ._training.early_stop import EarlyStopping
    from ._training.metrics import plot_metrics
    from ._training.microbatch import MicroBatcher
    from ._training.run import Run, RunState


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        if name == "errors":
            return importlib.import_module(f"{__name__}.errors")
        raise AttributeError(f"module 'colabkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_with_running_shell() -> None:
    """Register the magics when imported inside IPython (once per shell)."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        from ._extension import load_ipython_extension

        load_ipython_extension(shell)


_register_with_running_shell()
