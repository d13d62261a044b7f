"""The hook for mirroring a checkpoint folder to Google Drive through its API (remote="drive:…")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import manifest


def drive_mirror(remote: str, directory: Path) -> Any:
    """A CheckpointMirror keeping Drive folder `remote` a copy of `directory` (needs the drive-api extra)."""
    from .._drive_api.mirror import CheckpointMirror, parse_remote

    return CheckpointMirror(parse_remote(remote), directory, manifest_name=manifest.MANIFEST_NAME,
                            describe=manifest.describe, is_checkpoint=lambda name: bool(manifest.FILE_RE.match(name)))
