"""aclora.RestartHook: AC-LoRA's RESTART at the end of a training epoch, with the optimizer
policy; the Python twin of aclora::train::RestartHook (aclora/adapters/train/hook.hpp)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from aclora import _core
from aclora._error import Error
from aclora._modules import LoraModule, ModulesLike, as_modules, module_parameters
from aclora._optim import OptimizerPolicy, check_policy, check_resettable, reset_optimizer_state
from aclora._report import RestartReport
from aclora._restart import Restart


@dataclass(frozen=True, eq=False)
class RestartOutcome:
    """One RESTART the hook ran."""

    epoch: int
    """0-based epoch after whose training it ran."""
    report: RestartReport
    seconds: float
    """wall time of the RESTART and the optimizer policy."""


class RestartHook:
    """Holds the schedule, the loss window, the Restart driver and the optimizer policy of one
    training run. Call end_epoch(epoch, mean_loss) after each epoch's training (or
    record_step(loss) at each step and end_epoch(epoch)); a RESTART runs after epochs with
    epoch % restart_interval == 0, from the mean of the epoch losses since the last one.

    >>> hook = aclora.RestartHook(aclora.modules_from_peft(model), optimizer,
    ...                           total_epochs=100, restart_interval=10, seed=42)
    >>> for epoch in range(100):
    ...     outcome = hook.end_epoch(epoch, train_one_epoch())

    Args:
        modules: the LoRA modules (modules_from_peft / modules_from_diffusers / a mapping).
        optimizer: the optimizer over the factors, or None.
        total_epochs: N; restart_interval: E.
        seed, noise, min_rank, chunk_elements: as for aclora.Restart.
        optimizer_policy: "reset" (default) or "keep" (see aclora.reset_optimizer_state).
        restarts: False runs plain fixed-rank LoRA through the same code (losses recorded only).
        loss_scale: the RESTART sees mean_loss / loss_scale (for losses not in (0, 1), e.g. a
            cross-entropy divided by log(vocabulary size)).

    Raises:
        aclora.Error: invalid schedule or policy, or policy "reset" with an optimizer other
            than AdamW, Adam or SGD.
    """

    def __init__(
        self,
        modules: ModulesLike,
        optimizer: Optional[torch.optim.Optimizer] = None,
        *,
        total_epochs: int,
        restart_interval: int = 10,
        seed: int = 0,
        noise: str = "whole",
        min_rank: int = 1,
        optimizer_policy: OptimizerPolicy = "reset",
        restarts: bool = True,
        loss_scale: float = 1.0,
        chunk_elements: int = 0,
    ) -> None:
        self.schedule = _core.Schedule(total_epochs, restart_interval)
        self.modules: List[LoraModule] = as_modules(modules)
        check_policy(optimizer_policy)
        if optimizer is not None and optimizer_policy == "reset":
            check_resettable(optimizer)
        if not (math.isfinite(loss_scale) and loss_scale > 0):
            raise Error(f"aclora: loss_scale must be finite and > 0, got {loss_scale}")
        self.optimizer = optimizer
        self.optimizer_policy = optimizer_policy
        self.restarts = restarts
        self.loss_scale = float(loss_scale)
        self.history: List[RestartOutcome] = []
        self._restart = Restart(seed, noise, min_rank, chunk_elements=chunk_elements)
        self._window: List[float] = []
        self._step_sum = 0.0
        self._step_count = 0
        self._last_ranks: Optional[List[int]] = None

    def record_step(self, loss: Any) -> None:
        """Adds one step's training loss (a float or a 0-d tensor) to the epoch's mean."""
        value = float(loss)
        if not math.isfinite(value):
            raise Error(f"aclora: step loss is not finite ({value})")
        self._step_sum += value
        self._step_count += 1

    def end_epoch(self, epoch: int, mean_loss: Optional[float] = None) -> Optional[RestartOutcome]:
        """Records epoch `epoch`'s mean training loss (`mean_loss`, or the mean of the steps
        recorded since the last end_epoch) and runs the RESTART when one is due after this
        epoch. The factors are rewritten in place, then the optimizer policy applies.

        Returns:
            the RESTART's outcome, or None when none was due.

        Raises:
            aclora.Error: non-finite loss, epoch outside [0, N), or a RESTART failure (naming
                module and layer; no factor and no optimizer state changed then, and the loss
                stays in the window).
        """
        if mean_loss is None:
            if self._step_count == 0:
                raise Error(
                    f"aclora: epoch {epoch}: no loss (pass mean_loss, or call record_step(loss) during the epoch)"
                )
            mean_loss = self._step_sum / self._step_count
        self._step_sum, self._step_count = 0.0, 0
        loss = float(mean_loss)
        if not math.isfinite(loss):
            raise Error(f"aclora: epoch {epoch}: training loss is not finite")
        if not self.restarts or not self.schedule.due(epoch):
            self._window.append(loss)
            return None
        start = time.perf_counter()
        window = _core.LossWindow()
        for value in self._window + [loss]:
            window.record(value)
        try:
            report = self._restart(
                self.modules,
                epoch=epoch,
                total_epochs=self.schedule.total_epochs,
                mean_loss=window.mean() / self.loss_scale,
            )
        except BaseException:
            self._window.append(loss)  # nothing else changed; a run that goes on keeps the loss
            raise
        if self.optimizer is not None and self.optimizer_policy == "reset":
            reset_optimizer_state(self.optimizer, module_parameters(self.modules))
        self._window = []
        self._last_ranks = [module.module_rank for module in report.modules]
        outcome = RestartOutcome(epoch, report, time.perf_counter() - start)
        self.history.append(outcome)
        return outcome

    def module_ranks(self) -> Dict[str, int]:
        """K per module name from the last RESTART, or R before the first (list order)."""
        if self._last_ranks is None:
            return {module.name: module.rank for module in self.modules}
        return {module.name: rank for module, rank in zip(self.modules, self._last_ranks)}

    @property
    def loss_window(self) -> List[float]:
        """The epoch losses recorded since the last RESTART, in order."""
        return list(self._window)

    @property
    def restart_count(self) -> int:
        """RESTARTs run so far (part of every noise key)."""
        return self._restart.restart_count

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs to go on with the same noise and loss mean: the loss window,
        the restart counter, the last K per module (empty before the first RESTART)."""
        return {
            "loss_window": list(self._window),
            "restart_count": self.restart_count,
            "module_ranks": list(self._last_ranks or []),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores state_dict()'s values. Raises aclora.Error (changing nothing) for a window
        with a non-finite loss, or ranks that are not one K in [0, R] per module."""
        window = [float(value) for value in state.get("loss_window", [])]
        ranks = [int(value) for value in state.get("module_ranks", [])]
        count = int(state.get("restart_count", 0))
        if any(not math.isfinite(value) for value in window):
            raise Error("aclora: saved loss window holds a non-finite loss")
        if ranks and len(ranks) != len(self.modules):
            raise Error(f"aclora: saved ranks: {len(ranks)} values for {len(self.modules)} modules")
        for module, rank in zip(self.modules, ranks):
            if not 0 <= rank <= module.rank:
                raise Error(f"aclora: saved rank of module '{module.name}' outside [0, R]")
        if count < 0:
            raise Error("aclora: saved restart count is negative")
        self._window = window
        self._restart.restart_count = count
        self._last_ranks = ranks or None
