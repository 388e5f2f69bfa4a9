"""What happens to the optimizer state of the factors a RESTART rewrote.

Policy "reset" (default) gives every rewritten factor the state a fresh optimizer would have:
Adam / AdamW moments zero and their per-parameter step back at 0 (zeroed in place, so the
state tensors keep their identity, dtype and device), SGD's momentum buffer dropped (a fresh
SGD starts the buffer from the first gradient). The global step, the epoch and the learning
rate schedule go on. Keeping the step while zeroing the moments would make the first update
after a RESTART (1 - beta1) / sqrt(1 - beta2) = 3.2 times a fresh Adam step (betas 0.9,
0.999). Policy "keep" leaves the state alone (the paper's practice). The same decision as the
C++ training layer (aclora/adapters/train/optimizer.hpp; docs/trainer-guide.md).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch

from aclora._error import Error

#: "reset" (fresh state for the rewritten factors) or "keep" (state untouched).
OptimizerPolicy = Literal["reset", "keep"]

_ADAM_KINDS = (torch.optim.Adam, torch.optim.AdamW)


def check_policy(policy: str) -> None:
    """Raises aclora.Error unless policy is "reset" or "keep"."""
    if policy not in ("reset", "keep"):
        raise Error(f"aclora: optimizer_policy must be 'reset' or 'keep', got {policy!r}")


def _unwrapped(optimizer: Any) -> Any:
    # accelerate's AcceleratedOptimizer (and similar wrappers) hold the real one in .optimizer.
    seen = 0
    while not isinstance(optimizer, _ADAM_KINDS + (torch.optim.SGD,)) and seen < 4:
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
        seen += 1
    return optimizer


def check_resettable(optimizer: object) -> None:
    """Raises aclora.Error unless reset_optimizer_state knows the optimizer: torch.optim.AdamW,
    Adam or SGD (also inside accelerate's AcceleratedOptimizer)."""
    inner = _unwrapped(optimizer)
    if not isinstance(inner, _ADAM_KINDS + (torch.optim.SGD,)):
        kind = type(inner)
        raise Error(
            "aclora: optimizer policy 'reset' supports torch.optim.AdamW, Adam and SGD; this "
            f"optimizer is {kind.__module__}.{kind.__qualname__} (use optimizer_policy='keep', "
            "or reset its state yourself)"
        )


def reset_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Iterable[torch.Tensor]) -> int:
    """Gives `tensors` the state a fresh optimizer would have (see the module comment); tensors
    without state are left alone. Returns how many states were reset.

    Raises:
        aclora.Error: for an optimizer other than AdamW, Adam or SGD (nothing changed then).
    """
    check_resettable(optimizer)
    inner = _unwrapped(optimizer)
    adam = isinstance(inner, _ADAM_KINDS)
    states = inner.state
    count = 0
    with torch.no_grad():
        for tensor in tensors:
            state = states.get(tensor) if tensor in states else None
            if not state:
                continue
            count += 1
            if not adam:
                del states[tensor]
                continue
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                step.zero_()
            elif step is not None:
                state["step"] = 0
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                value = state.get(key)
                if isinstance(value, torch.Tensor):
                    value.zero_()
    return count
