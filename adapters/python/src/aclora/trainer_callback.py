"""aclora.RestartCallback: AC-LoRA's RESTART in the Hugging Face Trainer (transformers).

    trainer = Trainer(model=peft_model, args=args, train_dataset=data,
                      callbacks=[aclora.RestartCallback(restart_interval=10, seed=42)])

The RESTART runs at the end of every epoch e with e % restart_interval == 0 (0-based), from
the mean of the training losses the Trainer logged since the last RESTART (each logged value
weighted by the steps it covers). When the epoch's loss is logged only at its end
(logging_strategy="epoch") the RESTART runs right after that log, before any checkpoint of
the epoch is saved.

The callback's state (restart count, loss window, kept ranks, the current epoch's logged
losses) travels in the TrainerState, so every checkpoint's trainer_state.json holds it and
Trainer.train(resume_from_checkpoint=...) continues with the same noise keys and loss means.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Dict, List, Optional

from transformers import TrainerCallback

from aclora._error import Error
from aclora._hook import RestartHook, RestartOutcome
from aclora._modules import LoraModule, modules_from_peft
from aclora._optim import OptimizerPolicy

logger = logging.getLogger("aclora")

#: Key of the callbacks' states in TrainerState.stateful_callbacks: a list with one entry per
#: RestartCallback of the Trainer, told apart by their modules. Not the class name: under that
#: name the Trainer's restore_callback_states_from_checkpoint would replace the callback by a
#: copy, and the one the user holds (callback.hook for save_peft) would miss the rest of the run.
STATE_KEY = "aclora.RestartCallback"

#: The settings that change a run's result; a resume with other values is refused.
_SETTINGS = ("total_epochs", "restart_interval", "seed", "noise", "min_rank", "optimizer_policy", "loss_scale")


def _modules_fingerprint(modules: List[LoraModule]) -> str:
    """Identifies a module list (names, order and R) in a checkpoint without storing every name."""
    text = "\n".join(f"{module.name}\t{module.rank}" for module in modules)
    return hashlib.sha256(text.encode()).hexdigest()


class RestartCallback(TrainerCallback):
    """Runs aclora's RESTART on the model's PEFT LoRA factors at the end of every
    restart_interval-th epoch, resetting (policy "reset") or keeping the optimizer state of
    the rewritten factors.

    Resuming (Trainer.train(resume_from_checkpoint=...)) restores the state saved with the
    checkpoint; a checkpoint without it, or saved with other settings or modules, is refused.

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
        self._fingerprint = ""

    @property
    def history(self) -> List[RestartOutcome]:
        """The RESTARTs run since train begin (after a resume: since the resume; hook.restart_count
        counts all)."""
        return [] if self.hook is None else self.hook.history

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs (plain JSON values): the modules' fingerprint, the settings,
        the hook's state_dict() and the losses logged in the current epoch so far."""
        hook = self._require_hook()
        return {
            "modules": self._fingerprint,
            "module_count": len(hook.modules),
            "settings": {"total_epochs": hook.schedule.total_epochs, "restart_interval": self.restart_interval,
                         "seed": self.seed, "noise": self.noise, "min_rank": self.min_rank,
                         "optimizer_policy": self.optimizer_policy, "loss_scale": float(self.loss_scale)},
            "hook": hook.state_dict(),
            "epoch_loss_sum": self._loss_sum,
            "epoch_loss_steps": self._loss_steps,
            "pending_epoch": self._pending_epoch,
        }

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
        self._fingerprint = _modules_fingerprint(self.hook.modules)
        self._loss_sum, self._loss_steps, self._pending_epoch = 0.0, 0, None
        self._last_logged_step = state.global_step
        saved = self._saved_entry(state)
        if state.global_step > 0:  # a TrainerState loaded from a checkpoint: resume
            self._restore(saved, state.global_step)
        elif saved is not None:
            raise Error("aclora: two RestartCallbacks over the same LoRA modules in one Trainer")
        self._publish(state)

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
        self._publish(state)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = int(round(state.epoch)) - 1
        if self._loss_steps == 0:
            self._pending_epoch = epoch  # the epoch's loss is logged right after this event
        else:
            self._end_epoch(epoch)
        self._publish(state)

    def _require_hook(self) -> RestartHook:
        if self.hook is None:
            raise Error("aclora: RestartCallback: used before train begin")
        return self.hook

    def _end_epoch(self, epoch: int) -> None:
        hook = self._require_hook()
        mean = self._loss_sum / self._loss_steps
        self._loss_sum, self._loss_steps = 0.0, 0
        outcome = hook.end_epoch(epoch, mean)
        if outcome is not None:
            report = outcome.report
            logger.info("aclora: RESTART after epoch %d: p = %.4f, kept rank %d of %d (%.2f s)", epoch,
                        report.threshold, report.total_module_rank(), report.total_allocated_rank(),
                        outcome.seconds)

    def _entries(self, state: Any) -> List[Dict[str, Any]]:
        entries = state.stateful_callbacks.get(STATE_KEY, [])
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise Error(f"aclora: RestartCallback: the TrainerState's '{STATE_KEY}' entry is not a list of states")
        return entries

    def _saved_entry(self, state: Any) -> Optional[Dict[str, Any]]:
        return next((entry for entry in self._entries(state) if entry.get("modules") == self._fingerprint), None)

    def _publish(self, state: Any) -> None:
        """Puts the current state into the TrainerState, which the Trainer writes into every
        checkpoint (trainer_state.json) and loads back on resume."""
        entries = [entry for entry in self._entries(state) if entry.get("modules") != self._fingerprint]
        state.stateful_callbacks[STATE_KEY] = entries + [self.state_dict()]

    def _restore(self, saved: Optional[Dict[str, Any]], step: int) -> None:
        """Loads a checkpoint's state, all or nothing: on any error nothing changed."""
        hook = self._require_hook()
        if saved is None:
            raise Error(
                f"aclora: RestartCallback: the checkpoint of step {step} holds no state of a RestartCallback over "
                f"these {len(hook.modules)} LoRA modules (saved without one, by an older aclora, or for other "
                "modules); resuming without it would repeat the noise of past RESTARTs and lose the loss window"
            )
        now = self.state_dict()["settings"]
        try:
            settings = dict(saved["settings"])
            loss_sum = float(saved["epoch_loss_sum"])
            loss_steps = int(saved["epoch_loss_steps"])
            pending = saved["pending_epoch"]
            pending = None if pending is None else int(pending)
            hook_state = dict(saved["hook"])
        except (KeyError, TypeError, ValueError) as error:
            raise Error(f"aclora: RestartCallback: the checkpoint's state is malformed ({error!r})") from None
        for name in _SETTINGS:
            if settings.get(name) != now[name]:
                raise Error(
                    f"aclora: RestartCallback: the checkpoint was trained with {name} = {settings.get(name)!r}, "
                    f"this callback has {now[name]!r}; resume with the same settings"
                )
        if not math.isfinite(loss_sum) or loss_steps < 0 or (pending is not None and pending < 0):
            raise Error("aclora: RestartCallback: the checkpoint's current-epoch losses are invalid")
        hook.load_state_dict(hook_state)  # validates before it changes anything
        self._loss_sum, self._loss_steps, self._pending_epoch = loss_sum, loss_steps, pending
