"""Fused GPU kernels (Triton). Importing this package never requires Triton; kernels import it lazily."""

from __future__ import annotations

import importlib.util
import os

import torch


def triton_usable(device: torch.device | str) -> bool:
    """True when a Triton kernel can run on tensors of ``device``.

    CUDA devices need an importable ``triton``; CPU tensors work only under the Triton interpreter
    (``TRITON_INTERPRET=1``, slow, for tests).
    """
    if importlib.util.find_spec("triton") is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"


__all__ = ["triton_usable"]
