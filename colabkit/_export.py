"""The final model: weights only, in safetensors format when it is installed.

safetensors files hold tensors and nothing else, so loading one can never run
code (a .pt state_dict is the fallback, always loaded with weights_only=True).
The file is published atomically, like a checkpoint.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _fsio
from ._state import unwrap_model
from .errors import CheckpointError, ModelMismatchError

if TYPE_CHECKING:  # pragma: no cover
    import torch

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
_REDO = ("Copy it again (a file Drive has not finished syncing is cut short), or save it again "
         "with colabkit.save_model().")


def has_safetensors() -> bool:
    """Whether the safetensors package is installed (it picks save_model's default format)."""
    return importlib.util.find_spec("safetensors") is not None


def save_model(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save the model's weights and return the file written.

    The suffix picks the format: `.safetensors`, or `.pt` / `.pth` / `.bin`
    for a torch state_dict. Without one of those, safetensors is used when it
    is installed (".safetensors" is appended), else a state_dict (".pt").
    Tied weights are stored once. The file is published atomically.

    Args:
        model: The model (DDP / DataParallel / torch.compile wrappers are unwrapped).
        path: Where to write; see above for the suffix.

    Returns:
        The file written (with the suffix chosen).

    Raises:
        CheckpointWriteError: The file cannot be written (disk full, quota,
            permission, file size); names the cause and the fix.
    """
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    use_safetensors = has_safetensors()
    if suffix == SAFETENSORS_SUFFIX and not use_safetensors:
        warnings.warn(
            "safetensors is not installed (pip install safetensors); saving a torch state_dict "
            f"to {target.with_suffix('.pt')} instead.", stacklevel=2,
        )
        target = target.with_suffix(".pt")
    elif suffix in TORCH_SUFFIXES:
        use_safetensors = False
    elif suffix != SAFETENSORS_SUFFIX:
        target = target.with_name(target.name + (SAFETENSORS_SUFFIX if use_safetensors else ".pt"))
    bare = unwrap_model(model)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() == SAFETENSORS_SUFFIX:
            _fsio.publish(lambda tmp: _write_safetensors(bare, tmp), target)
        else:
            from ._checkpoint.torch_io import write_torch

            state = {k: v.detach().cpu() for k, v in bare.state_dict().items()}
            _fsio.publish(lambda tmp: write_torch(state, tmp), target)
    except OSError as exc:
        raise _fsio.write_error(exc, "the model", target, less="") from exc
    return target


def _write_safetensors(model: Any, tmp: Path) -> None:
    """safetensors' save_model, with its I/O failure turned back into the OSError it wraps."""
    from safetensors import SafetensorError
    from safetensors.torch import save_model as st_save_model

    try:
        st_save_model(model, str(tmp))
    except SafetensorError as exc:
        # the Rust io::Error it wraps prints as "... (os error 28)" (older: "Os { code: 28, ... }")
        code = re.search(r"os error (\d+)|\bcode: (\d+)", str(exc))
        number = int(code.group(1) or code.group(2)) if code else errno.EIO
        raise OSError(number, os.strerror(number)) from exc


def load_model(model: torch.nn.Module, path: str | os.PathLike[str], map_location: Any = "cpu",
               *, strict: bool = True) -> torch.nn.Module:
    """Load weights saved by `save_model` (or any state_dict file) into `model`; returns it.

    A file that does not fit the model raises ModelMismatchError naming the
    missing, unexpected and wrongly shaped keys.

    Args:
        model: The model to load into (wrappers are unwrapped).
        path: A `.safetensors` file, or a `.pt` / `.pth` / `.bin` state_dict
            (a training_state's weights are taken too); always a safe load.
        map_location: Where the tensors go ("cpu" by default).
        strict: False loads what fits and ignores missing or unexpected keys
            (never wrong shapes).

    Returns:
        `model`, with the weights loaded.

    Raises:
        CheckpointError: The file is missing, unreadable or not a state_dict.
        ModelMismatchError: The weights do not fit the model.
        MissingDependencyError: A safetensors file without the package.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist. Check the path (save_model returns it).")
    tensors = _read(source, map_location)
    bare = unwrap_model(model)
    expected = bare.state_dict()
    _fill_tied(tensors, expected)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    reshaped = [f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k].shape)})"
                for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if reshaped or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing in the file: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected in the file: {_short(unexpected)}")
        if reshaped:
            parts.append(f"wrong shape: {_short(reshaped)}")
        raise ModelMismatchError(
            f"The weights in {source} do not fit this {type(bare).__name__}: " + "; ".join(parts)
            + ". Build the model with the same architecture and settings as when it was saved"
            + (", or pass strict=False to skip missing and unexpected keys." if not reshaped else ".")
        )
    bare.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=strict)
    return model


def _read(source: Path, map_location: Any) -> dict[str, Any]:
    if source.suffix.lower() == SAFETENSORS_SUFFIX:
        if not has_safetensors():
            from .errors import MissingDependencyError

            raise MissingDependencyError(
                f"{source} is a safetensors file; install the package to read it: pip install safetensors"
            )
        from safetensors import SafetensorError, safe_open

        device = str(map_location) if map_location is not None else "cpu"
        try:
            with safe_open(str(source), framework="pt", device=device) as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{source} is not a readable safetensors file ({exc}). {_REDO}"
            ) from exc
        # save_model stores tied tensors once and records "dropped name -> kept name"
        for dropped, kept in metadata.items():
            if dropped not in tensors and kept in tensors:
                tensors[dropped] = tensors[kept]
        return tensors
    from ._checkpoint.torch_io import load_file, unwrap_payload

    try:
        state = unwrap_payload(load_file(source, map_location))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{source} is unreadable or truncated ({type(exc).__name__}: {exc}). {_REDO}"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training_state(): take its weights
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{source} holds a {type(state).__name__}, not a state_dict. Save the weights with "
            "colabkit.save_model(model, path), or load this file with torch.load and restore it yourself."
        )
    return dict(state)


def _fill_tied(tensors: dict[str, Any], expected: dict[str, Any]) -> None:
    """Tied parameters saved once: give every name of a tied group the stored tensor."""
    by_storage: dict[tuple[Any, int], list[str]] = {}
    for key, value in expected.items():
        if value.device.type == "meta" or value.numel() == 0:
            continue
        by_storage.setdefault((value.device, value.data_ptr()), []).append(key)
    for names in by_storage.values():
        present = [n for n in names if n in tensors]
        if present and len(names) > 1:
            for name in names:
                tensors.setdefault(name, tensors[present[0]])


def _short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")
