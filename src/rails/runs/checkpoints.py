"""Checkpoint files: atomic writes, and reads that never execute code stored in the file.

A run killed while writing ``last.ckpt`` leaves the previous file intact (:func:`rails.io.atomic_write`: temp
file + fsync + atomic rename). Every read goes through :func:`load_checkpoint_file`, which unpickles with
``torch.load(weights_only=True)`` only: tensors and plain containers, never arbitrary objects. A file that
needs anything else is refused (there is no "full unpickle" fallback: a checkpoint is data, and a pickle can
run any code while it is read). Empty, truncated, random and foreign files get a one-line error naming the
file and what was found.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from rails.io import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely or does not fit the model; the message names the file."""


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a torch checkpoint (zip archive or legacy pickle)."""
    with path.open("rb") as handle:
        head = handle.read(2)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def _unpickler_reason(err: Exception) -> str:
    """The informative line of torch's weights-only unpickler error (e.g. the blocked global it met)."""
    boilerplate = (
        "Weights only load failed",
        "Please file an issue",
        "Check the documentation",
        "Re-running",
    )
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = [line for line in lines if not line.startswith(boilerplate)]
    return detail[0] if detail else type(err).__name__


def _describe_unreadable(path: Path) -> str:
    """What a file that ``torch.load`` could not parse looks like (for the error message)."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK"):
        if zipfile.is_zipfile(path):
            return "a zip archive that is not a complete torch checkpoint"
        return "a truncated torch checkpoint (incomplete zip archive)"
    if head[:1] == b"\x80":
        return "a truncated or corrupt pickle"
    return f"not a torch checkpoint (starts with bytes {head.hex(' ')})"


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; refuse anything else.

    Args:
        path: local checkpoint file.
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint dictionary.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated or random file; a file holding objects other than tensors and plain
            containers (refused without running anything); a file whose top level is not a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if not _looks_like_torch_file(path) or "global" not in reason.lower():
            raise CheckpointError(
                f"checkpoint {path} ({size} bytes) cannot be read: {_describe_unreadable(path)} ({reason})"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} refused: it holds objects other than tensors and plain containers, and rails "
            f"loads checkpoints only with torch.load(weights_only=True), which never runs code stored in a "
            f"file ({reason})"
        ) from None
    except (EOFError, RuntimeError, IndexError, ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) cannot be read: {_describe_unreadable(path)} "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path}: expected a dictionary at the top level, found {type(checkpoint).__name__}"
        )
    return checkpoint


# What only resuming a training needs (Lightning's loop, optimizer, scheduler and callback states, rails' RNG
# states): an inference checkpoint leaves these out, with Adam most of the file (two moments per weight).
# (current_model_state / averaging_state: the raw weights and step count of callbacks/weight_averaging=ema,
# whose averaged weights are the checkpoint's state_dict)
TRAINING_STATE_KEYS = (
    "optimizer_states",
    "lr_schedulers",
    "loops",
    "callbacks",
    "rails_rng_states",
    "current_model_state",
    "averaging_state",
)
INFERENCE_ONLY_KEY = "rails_inference_only"


def require_rails_entries(checkpoint: Mapping[str, Any], source: str, keys: tuple[str, ...]) -> None:
    """Raise :class:`CheckpointError` (``<source>: not written by rails-train (no [...] entries)``) unless the
    checkpoint holds every one of ``keys`` (entries rails-train writes: ``rails_config``, ``state_dict``, ...)."""
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{source}: not written by rails-train (no {missing} entries)")


def write_inference_checkpoint(
    source: str | os.PathLike[str], destination: str | os.PathLike[str]
) -> dict[str, Any]:
    """Copy a rails-train checkpoint without its training state (:data:`TRAINING_STATE_KEYS`), atomically.

    The copy keeps the weights, the run's config and Lightning's bookkeeping, so ``rails-eval`` and the top-k
    benchmark read it as they read the original; resuming a training from it is refused
    (:func:`require_training_state`). It is marked with ``rails_inference_only: True``.

    Returns:
        The written dictionary.

    Raises:
        CheckpointError: ``source`` is unreadable or not a rails-train checkpoint (no ``rails_config`` /
            ``state_dict``); the message names the file.
    """
    checkpoint = load_checkpoint_file(source)
    require_rails_entries(checkpoint, f"checkpoint {source}", ("rails_config", "state_dict"))
    slim = {key: value for key, value in checkpoint.items() if key not in TRAINING_STATE_KEYS}
    slim[INFERENCE_ONLY_KEY] = True
    atomic_write(destination, lambda handle: torch.save(slim, handle))
    return slim


def require_training_state(checkpoint: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when the checkpoint cannot resume a training.

    An inference checkpoint (:func:`write_inference_checkpoint`) has no optimizer or loop state to resume from.
    """
    if checkpoint.get(INFERENCE_ONLY_KEY) or "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"ckpt_path={path}: an inference-only checkpoint (no optimizer or loop state: written by "
            f"scripts/strip_checkpoint.py) cannot resume a training; evaluate it with `rails-eval ckpt_path={path}`"
        )


def check_state_dict_matches(
    model: nn.Module, state_dict: Mapping[str, Any], path: str | os.PathLike[str]
) -> None:
    """Raise :class:`CheckpointError` naming the file and the first mismatches when weights do not fit ``model``.

    Args:
        model: the module built from the config.
        state_dict: the checkpoint's ``state_dict``.
        path: the checkpoint file (for the message).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    ]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:3])}")
    if missing:
        problems.append(f"{len(missing)} missing weight(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weight(s), e.g. {', '.join(unexpected[:3])}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model built from the config: {'; '.join(problems)}"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin: atomic local saves; loads only through :func:`load_checkpoint_file`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO.save_checkpoint got storage_options={storage_options!r}")
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` with ``weights_only=True`` whatever ``weights_only`` asks (a full unpickle is refused)."""
        return load_checkpoint_file(path, map_location=map_location)
