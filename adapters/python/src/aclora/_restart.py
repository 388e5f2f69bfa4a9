"""aclora.Restart: the C++ RESTART (aclora::Restart<aclora::backends::TorchBackend>) on torch tensors."""

from __future__ import annotations

import math
from typing import Optional

import torch

from aclora import _core
from aclora._error import Error
from aclora._modules import ModulesLike, as_modules, module_parameters
from aclora._optim import OptimizerPolicy, check_policy, check_resettable, reset_optimizer_state
from aclora._report import RestartReport


class Restart:
    """Runs AC-LoRA RESTARTs over LoRA modules, in place: for every factor the singular values,
    K per module (the largest count of leading components below the energy share p over its
    factors, at least `min_rank`), truncation to K components and Gaussian noise with the
    residual's standard deviation. All or nothing: on any error no tensor was modified.

    >>> restart = aclora.Restart(seed=42)
    >>> report = restart(modules, epoch=10, total_epochs=100, mean_loss=0.12)
    >>> report = restart(modules, threshold=0.9)         # an explicit p

    Args:
        seed: key of all noise (the same seed, tensors and restart number give bit-identical
            results, as aclora::Restart<aclora::backends::TorchBackend> in C++).
        noise: "whole" (the paper's practice), "discarded" (noise only in the discarded
            directions, the literal eq. 2) or "none" (plain truncation).
        min_rank: floor of K (0: the paper's rule exactly).
        chunk_elements: the Torch backend's largest batch in matrix entries (0: automatic).
    """

    def __init__(self, seed: int = 0, noise: str = "whole", min_rank: int = 1, *, chunk_elements: int = 0) -> None:
        if not isinstance(seed, int) or seed < 0 or seed >= 2**64:
            raise Error(f"aclora: seed must be an int in [0, 2^64), got {seed!r}")
        if not isinstance(min_rank, int) or min_rank < 0:
            raise Error(f"aclora: min_rank must be an int >= 0, got {min_rank!r}")
        self._core = _core.Restart(seed, noise, min_rank, chunk_elements)

    @property
    def seed(self) -> int:
        """The noise seed."""
        return self._core.seed

    @property
    def noise(self) -> str:
        """The noise policy."""
        return self._core.noise

    @property
    def min_rank(self) -> int:
        """The floor of K."""
        return self._core.min_rank

    @property
    def restart_count(self) -> int:
        """RESTARTs run so far (part of every noise key). Settable, to resume a run."""
        return self._core.restart_count

    @restart_count.setter
    def restart_count(self, count: int) -> None:
        self._core.restart_count = count

    @property
    def last_core_seconds(self) -> float:
        """Seconds the last call spent in the C++ RESTART itself (no Python conversions)."""
        return self._core.last_core_seconds

    def __call__(
        self,
        modules: ModulesLike,
        epoch: Optional[int] = None,
        total_epochs: Optional[int] = None,
        mean_loss: Optional[float] = None,
        *,
        threshold: Optional[float] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        optimizer_policy: OptimizerPolicy = "reset",
    ) -> RestartReport:
        """One RESTART, in place, under torch.no_grad and outside autocast.

        Either the schedule: p = 1 - L^alpha with alpha = 1 + epoch / (total_epochs - 1), L =
        `mean_loss` (the mean training loss since the last RESTART, finite and > 0); or
        `threshold` = p in [0, 1]. Does not check whether a RESTART is due at `epoch`.

        Args:
            modules: LoraModule list (modules_from_peft, modules_from_diffusers), a mapping
                name -> (down, up), or a list of (name, down, up) / (down, up).
            optimizer: when given with policy "reset", the state of every factor is reset
                afterwards as a fresh optimizer's would be (see aclora.reset_optimizer_state).

        Raises:
            aclora.Error: bad loss, epoch, threshold, shapes, dtype, device or non-finite
                entries, naming the module and layer; no tensor was modified then.
        """
        items = as_modules(modules)
        check_policy(optimizer_policy)
        if optimizer is not None and optimizer_policy == "reset":
            check_resettable(optimizer)
        inputs = [(module.name, module.down, module.up) for module in items]
        if threshold is not None:
            if epoch is not None or total_epochs is not None or mean_loss is not None:
                raise Error("aclora: give either threshold=p or epoch, total_epochs and mean_loss, not both")
            raw = self._core.at_threshold(inputs, float(threshold))
        else:
            if epoch is None or total_epochs is None or mean_loss is None:
                raise Error("aclora: a RESTART needs epoch, total_epochs and mean_loss (or threshold=p)")
            loss = float(mean_loss)
            if not math.isfinite(loss):
                raise Error(f"aclora: mean loss must be finite and > 0, got {loss}")
            raw = self._core.scheduled(inputs, int(total_epochs), int(epoch), loss)
        if optimizer is not None and optimizer_policy == "reset":
            reset_optimizer_state(optimizer, module_parameters(items))
        return RestartReport._from_core(raw)

    def __repr__(self) -> str:
        return (
            f"aclora.Restart(seed={self.seed}, noise={self.noise!r}, min_rank={self.min_rank}, "
            f"restart_count={self.restart_count})"
        )
