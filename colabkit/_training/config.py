"""A run's configuration: stored, compared on resume, and changes explained in one message."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError, RunConfigError

_MISSING = object()


def plain_config(config: Any) -> dict[str, Any]:
    """The config as JSON data (tuples become lists), or ConfigError naming what is not.

    Args:
        config: a dict of plain values (numbers, strings, lists, dicts, None), or None.

    Returns:
        A deep, JSON-normalised copy.
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        if hasattr(config, "__dataclass_fields__"):
            import dataclasses

            config = dataclasses.asdict(config)
        elif hasattr(config, "_get_kwargs"):  # argparse.Namespace
            config = vars(config)
        else:
            raise ConfigError(f"config must be a dict (or a dataclass / argparse Namespace), got {type(config).__name__}.")
    try:
        return json.loads(json.dumps(config, allow_nan=True))
    except TypeError as exc:
        raise ConfigError(
            f"config holds a value that is not plain data ({exc}); use numbers, strings, lists and dicts "
            "(e.g. str(path) for a path) so that it can be stored in config.json."
        ) from None


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} for every key whose value differs (missing counts as a value)."""
    keys = list(old) + [k for k in new if k not in old]
    return {k: (old.get(k, _MISSING), new.get(k, _MISSING)) for k in keys
            if old.get(k, _MISSING) != new.get(k, _MISSING)}


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(diff: dict[str, tuple[Any, Any]]) -> str:
    """'lr 0.001 -> 0.0003, hidden [64, 32] -> [16, 8]'."""
    return ", ".join(f"{key} {_show(a)} -> {_show(b)}" for key, (a, b) in diff.items())


def ways_on(name: str) -> str:
    """The two ways on after a change a checkpoint cannot follow."""
    return (f"To go on, either start run {name!r} over with fresh=True (--fresh; the old run is moved "
            f"aside, nothing is deleted), or train under a new run name (run=\"NAME\" / --run NAME).")


def refuse(name: str, why: str, diff: dict[str, tuple[Any, Any]]) -> RunConfigError:
    """The one error for a checkpoint that cannot be resumed with the new configuration."""
    changed = f" Changed configuration: {describe(diff)}." if diff else ""
    return RunConfigError(f"Run {name!r} cannot resume its checkpoint: {why}.{changed} {ways_on(name)}")


def shape_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """How a saved state_dict differs from the model's (keys and shapes), or None when it fits."""
    problems = []
    for key, value in current.items():
        if key not in saved:
            problems.append(f"{key} is new")
        elif hasattr(value, "shape") and hasattr(saved[key], "shape") and tuple(value.shape) != tuple(saved[key].shape):
            problems.append(f"{key} is {list(saved[key].shape)} in the checkpoint but {list(value.shape)} now")
    problems += [f"{key} is gone" for key in saved if key not in current]
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "the model's shape changed: " + "; ".join(problems[:3]) + more
