"""aclora.RestartCallback: AC-LoRA's RESTART in the Hugging Face Trainer (transformers).

    trainer = Trainer(model=peft_model, args=args, train_dataset=data,
                      callbacks=[aclora.RestartCallback(restart_interval=10, seed=42)])

The RESTART runs at the end of every epoch e with e % restart_interval == 0 (0-based), from
the mean of the training losses the Trainer logged since the last RESTART (each logged value
weighted by the steps it covers). When the epoch's loss is logged only at its end
(logging_strategy="epoch") the RESTART runs right after that log, before any checkpoint of
the epoch is saved.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Optional

from transformers import TrainerCallback

from aclora._error import Error
from aclora._hook import RestartHook, RestartOutcome
from aclora._modules import LoraModule, modules_from_peft
from aclora._optim import OptimizerPolicy

logger = logging.getLogger("aclora")


class RestartCallback(TrainerCallback):
    """Runs aclora's RESTART on the model's PEFT LoRA factors at the end of every
    restart_interval-th epoch, resetting (policy "reset") or keeping the optimizer state of
    the rewritten factors.

    Args:
        restart_interval: E; total_epochs: N (default: the Trainer's number of epochs).
        seed, noise, min_rank, optimizer_policy, loss_scale: as for aclora.RestartHook.
        modules: the modules (default: modules_from_peft(model, adapter_name) at train begin).
        adapter_name: the PEFT adapter (default: the only or active one).

    Attributes:
        hook: the RestartHook (after train begin): history, module_ranks(), state_dict().
    """

    def __init__(
        self,
        restart_interval: int = 10,
        *,
        total_epochs: Optional[int] = None,
        seed: int = 0,
        noise: str = "whole",
        min_rank: int = 1,
        optimizer_policy: OptimizerPolicy = "reset",
        loss_scale: float = 1.0,
        modules: Optional[List[LoraModule]] = None,
        adapter_name: Optional[str] = None,
    ) -> None:
        self.restart_interval = restart_interval
        self.total_epochs = total_epochs
        self.seed = seed
        self.noise = noise
        self.min_rank = min_rank
        self.optimizer_policy: OptimizerPolicy = optimizer_policy
        self.loss_scale = loss_scale
        self.modules = modules
        self.adapter_name = adapter_name
        self.hook: Optional[RestartHook] = None
        self._loss_sum = 0.0
        self._loss_steps = 0
        self._last_logged_step = 0
        self._pending_epoch: Optional[int] = None

    @property
    def history(self) -> List[RestartOutcome]:
        """The RESTARTs run so far."""
        return [] if self.hook is None else self.hook.history

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        if model is None:
            raise Error("aclora: RestartCallback: the Trainer passed no model")
        total = self.total_epochs
        if total is None:
            total = int(math.ceil(getattr(state, "num_train_epochs", 0) or args.num_train_epochs))
        modules = self.modules if self.modules is not None else modules_from_peft(model, self.adapter_name)
        self.hook = RestartHook(modules, optimizer, total_epochs=total, restart_interval=self.restart_interval,
                                seed=self.seed, noise=self.noise, min_rank=self.min_rank,
                                optimizer_policy=self.optimizer_policy, loss_scale=self.loss_scale)
        self._last_logged_step = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        steps = max(1, state.global_step - self._last_logged_step)
        self._last_logged_step = state.global_step
        self._loss_sum += float(logs["loss"]) * steps
        self._loss_steps += steps
        if self._pending_epoch is not None:
            epoch, self._pending_epoch = self._pending_epoch, None
            self._end_epoch(epoch)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = int(round(state.epoch)) - 1
        if self._loss_steps == 0:
            self._pending_epoch = epoch  # the epoch's loss is logged right after this event
            return
        self._end_epoch(epoch)

    def _end_epoch(self, epoch: int) -> None:
        if self.hook is None:
            raise Error("aclora: RestartCallback: epoch ended before train begin")
        mean = self._loss_sum / self._loss_steps
        self._loss_sum, self._loss_steps = 0.0, 0
        outcome = self.hook.end_epoch(epoch, mean)
        if outcome is not None:
            report = outcome.report
            logger.info("aclora: RESTART after epoch %d: p = %.4f, kept rank %d of %d (%.2f s)", epoch,
                        report.threshold, report.total_module_rank(), report.total_allocated_rank(),
                        outcome.seconds)
