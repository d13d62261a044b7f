"""Training state as plain data: model, optimizer, scheduler, scaler, extras and RNGs.

A resumed run continues exactly like an uninterrupted one only when every
source of randomness continues too: Python's `random`, NumPy's global RNG,
torch's CPU and CUDA generators, and a DataLoader's own generator (its shuffle
order and worker seeds). Everything here is stored as tensors and plain Python
data, so `torch.load(weights_only=True)` accepts it and nothing is unpickled
that could run code.
"""

from __future__ import annotations

import os
import random
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

STATE_FORMAT = "colabkit.training_state/1"


def seed_everything(seed: int, *, deterministic: bool = True) -> int:
    """Seed random, NumPy, torch and every CUDA device; optionally make kernels deterministic.

    deterministic=True also selects deterministic cuDNN kernels (no autotuning),
    asks torch for deterministic algorithms (a warning, not an error, where an
    op has none) and sets CUBLAS_WORKSPACE_CONFIG, which deterministic cuBLAS
    needs.

    Args:
        seed: An integer in [0, 2**32).
        deterministic: Also ask for deterministic kernels (slower on GPU, the
            same result on every run).

    Returns:
        The seed, so it can be logged or stored in the training state.

    Raises:
        ConfigError: `seed` is not an integer in range.
    """
    import numpy as np
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses (e.g. DataLoader workers)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed `random` and NumPy in each worker from torch's seed.

    torch gives every worker its own seed (base seed + worker id) but leaves
    `random` and NumPy alone, so augmentations drawn from them would repeat
    across workers and runs.

    Args:
        worker_id: The worker's index (given by the DataLoader; unused, as
            torch's per-worker seed already includes it).
    """
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def dataloader_seeding(seed: int) -> dict[str, Any]:
    """Keyword arguments for a reproducible DataLoader: `DataLoader(ds, **dataloader_seeding(0))`.

    Pass the same generator to `training_state(..., generator=g)` and
    `restore_training_state(..., generator=g)` (or `CheckpointManager.resume(...,
    generator=g)`) so a resumed run shuffles the remaining epochs the same way.

    Args:
        seed: The seed of the loader's own generator (shuffle order, worker seeds).

    Returns:
        {"generator": a seeded torch.Generator, "worker_init_fn": seed_worker}.
    """
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return {"generator": generator, "worker_init_fn": seed_worker}


# --------------------------------------------------------------------- RNG states


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every RNG a training loop draws from, as tensors and plain data."""
    import numpy as np
    import torch

    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put every RNG back where `capture_rng_state` found it.

    CUDA states are restored for the devices this runtime has; a GPU run
    resumed on a CPU-only runtime simply has none to restore.
    """
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((
        npy["bit_generator"],
        npy["keys"].numpy().astype(np.uint32),
        npy["pos"],
        npy["has_gauss"],
        npy["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    if generator is not None:
        if "generator" not in state:
            raise ConfigError(
                "restore_training_state(..., generator=g) was given a generator, but the saved "
                "state has none. Save with training_state(..., generator=g) as well."
            )
        generator.set_state(state["generator"].cpu())


# --------------------------------------------------------------------- plain data


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise ConfigError unless `obj` is data that `torch.load(weights_only=True)` reads back.

    Checked before writing, so a checkpoint is never published that could
    not be loaded safely afterwards.
    """
    import torch

    atoms = (str, bytes, bytearray, int, float, complex, bool, type(None),
             torch.Size, torch.dtype, torch.device)
    stack = [(obj, where)]
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind in atoms or kind is torch.Tensor or kind is torch.nn.Parameter:
            continue
        if kind in (dict, OrderedDict, Counter):
            for key, value in item.items():
                if type(key) not in atoms:
                    raise _not_plain(key, f"{path} key {key!r}")
                stack.append((value, f"{path}[{key!r}]"))
        elif kind in (list, tuple, set):
            stack.extend((value, f"{path}[{index}]") for index, value in enumerate(item))
        else:
            raise _not_plain(item, path)


def _not_plain(item: Any, path: str) -> ConfigError:
    return ConfigError(
        f"{path} is a {type(item).__module__}.{type(item).__qualname__}, which a safe "
        "(weights_only) load cannot read back, so the checkpoint would be unusable. Store plain "
        "data instead: numbers, strings, lists, dicts and tensors (e.g. dataclasses.asdict(config), "
        "vars(args), float(value), torch.from_numpy(array))."
    )


def _plain_extra(value: Any) -> Any:
    """NumPy scalars (np.float64 losses, np.int64 counters) become Python numbers."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return value
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _plain_extra(v)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_plain_extra(v) for v in value)
    return value


# --------------------------------------------------------------------- training state


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None or not hasattr(inner, "state_dict"):
            return model
        model = inner


def training_state(
    model: torch.nn.Module,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    generator: torch.Generator | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Everything needed to continue training exactly: weights, optimizer, scheduler,
    AMP scaler, RNG states (and a DataLoader generator's), plus your extras.

    Args:
        model: The model (DDP / DataParallel / torch.compile wrappers are unwrapped).
        optimizer: Its optimizer, or None.
        scheduler: Its learning-rate scheduler, or None.
        scaler: Its AMP GradScaler, or None.
        generator: A DataLoader's torch.Generator whose state to keep, or None.
        **extra: Plain data to keep: epoch, best metric, early-stop counter,
            config (e.g. `config=dataclasses.asdict(cfg)`), the batch size a
            search chose. NumPy scalars are turned into Python numbers.

    Returns:
        A dict of tensors and plain data, for `CheckpointManager.save()`.

    Raises:
        ConfigError: An extra is not plain data (a safe load could not read it back).
    """
    extras = {key: _plain_extra(value) for key, value in extra.items()}
    check_plain(extras, "extra")
    state = {
        "format": STATE_FORMAT,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng_state(generator),
        "extra": extras,
    }
    return state


def is_training_state(state: Any) -> bool:
    """True for a dict made by `training_state`."""
    return isinstance(state, dict) and state.get("format") == STATE_FORMAT


def restore_training_state(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    generator: torch.Generator | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a `training_state` dict back into the objects and the RNGs; returns the extras.

    Call it after building model, optimizer, scheduler and scaler the same way
    as in the run that saved it (the model already on its device).

    Args:
        state: A dict made by `training_state` (e.g. from `CheckpointManager.load()`).
        model: The model to load the weights into.
        optimizer: The optimizer to restore, or None.
        scheduler: The scheduler to restore, or None.
        scaler: The AMP GradScaler to restore, or None.
        generator: A DataLoader's torch.Generator to restore, or None.
        strict: As for `load_state_dict`: every key must match.

    Returns:
        The extras given to `training_state`.

    Raises:
        ConfigError: `state` is not a training state, or holds no state for
            an object passed.
    """
    if not is_training_state(state):
        raise ConfigError(
            "restore_training_state() needs a dict made by colabkit.training_state(); this one "
            f"has keys {sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__}. "
            "For a bare state_dict use model.load_state_dict(state)."
        )
    unwrap_model(model).load_state_dict(state["model"], strict=strict)
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is None:
            continue
        saved = state.get(name)
        if saved is None:
            raise ConfigError(
                f"restore_training_state() was given a {name}, but the checkpoint holds no {name} "
                f"state. Save with training_state(model, ..., {name}={name}), or do not pass it."
            )
        target.load_state_dict(saved)
    restore_rng_state(state["rng"], generator)
    return dict(state.get("extra") or {})
