"""Shared helpers of the aclora Python tests (run by tests/python/run.sh)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path: os.PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and metadata of a safetensors file (a reader of our own, so that the tests
    of the core API need no PyPI package)."""
    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    body = data[8 + length :]
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        if end > start:
            tensor = torch.frombuffer(bytearray(body[start:end]), dtype=dtype).reshape(entry["shape"])
        else:
            tensor = torch.empty(entry["shape"], dtype=dtype)
        tensors[name] = tensor
    return tensors, metadata


def need(module: str):
    """pytest.importorskip, except that tests/python/run.sh (ACLORA_PYTHON_REQUIRE_ALL=1)
    makes a missing package a failure: CI must run every test."""
    if os.environ.get("ACLORA_PYTHON_REQUIRE_ALL") == "1":
        return __import__(module)
    return pytest.importorskip(module)


def same_bits(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether two tensors hold the same bits (same dtype and shape): unlike torch.equal, a NaN
    equals itself, so a tensor holding NaN can be checked for being left untouched."""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    integers = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    return torch.equal(actual.detach().contiguous().view(integers), expected.detach().contiguous().view(integers))


def lora_pair(rank: int, n_in: int, n_out: int, *, dtype=torch.float32, seed: int = 0, decay: float = 0.8):
    """A LoRA (down [R, in], up [out, R]) with decaying spectra along the rank axis."""
    generator = torch.Generator().manual_seed(seed)
    scale = decay ** torch.arange(rank, dtype=torch.float64)
    down = torch.randn(rank, n_in, generator=generator, dtype=torch.float64) * scale[:, None] * 0.05
    up = torch.randn(n_out, rank, generator=generator, dtype=torch.float64) * scale[None, :] * 0.05
    return down.to(dtype), up.to(dtype)
