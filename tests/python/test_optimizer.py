"""The optimizer-state policies: "reset" gives the rewritten factors a fresh optimizer's state
(the next step equals a fresh optimizer's step), "keep" leaves the state alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import aclora
from conftest import lora_pair

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "adamw_amsgrad": lambda params: torch.optim.AdamW(params, lr=1e-2, amsgrad=True),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9, dampening=0.1),
}


def trained(make_optimizer):
    down, up = (nn.Parameter(t) for t in lora_pair(6, 20, 12, seed=3))
    bias = nn.Parameter(torch.randn(12))  # trained too, never rewritten
    optimizer = make_optimizer([down, up, bias])
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p in (down, up, bias):
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return down, up, bias, optimizer


def step_with(params, grads, optimizer):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_reset_equals_a_fresh_optimizer_for_the_rewritten_factors(kind):
    # After a RESTART with policy "reset", one optimizer step moves the factors exactly as a
    # fresh optimizer of the same kind would; the other parameter's state is untouched.
    down, up, bias, optimizer = trained(OPTIMIZERS[kind])
    bias_state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in optimizer.state[bias].items()}
    kept_tensors = {k: id(v) for k, v in optimizer.state[down].items() if isinstance(v, torch.Tensor)}
    aclora.Restart(seed=1)({"m": (down, up)}, threshold=0.6, optimizer=optimizer)
    if kind.startswith("adam"):  # zeroed in place: the same state tensors
        assert {k: id(v) for k, v in optimizer.state[down].items() if isinstance(v, torch.Tensor)} == kept_tensors
        assert float(optimizer.state[down]["step"]) == 0.0
    else:
        assert down not in optimizer.state or not optimizer.state[down]
    for key, value in bias_state.items():
        current = optimizer.state[bias][key]
        assert torch.equal(current, value) if isinstance(value, torch.Tensor) else current == value

    fresh_down, fresh_up = nn.Parameter(down.detach().clone()), nn.Parameter(up.detach().clone())
    fresh = OPTIMIZERS[kind]([fresh_down, fresh_up])
    grads = [torch.randn(down.shape), torch.randn(up.shape)]
    step_with([down, up], grads, optimizer)
    step_with([fresh_down, fresh_up], grads, fresh)
    assert torch.equal(down.detach(), fresh_down.detach())
    assert torch.equal(up.detach(), fresh_up.detach())


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_keep_leaves_the_state_alone(kind):
    # Policy "keep": every state entry of every parameter is unchanged by the RESTART.
    down, up, bias, optimizer = trained(OPTIMIZERS[kind])
    before = {id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in optimizer.state[p].items()}
              for p in (down, up, bias)}
    aclora.Restart(seed=1)({"m": (down, up)}, threshold=0.6, optimizer=optimizer, optimizer_policy="keep")
    for p in (down, up, bias):
        for key, value in before[id(p)].items():
            current = optimizer.state[p][key]
            assert torch.equal(current, value) if isinstance(value, torch.Tensor) else current == value


def test_reset_reaches_a_wrapped_optimizer():
    # An optimizer wrapped as accelerate does it (the real one in .optimizer) is reset too.
    class Wrapper(torch.optim.Optimizer):
        def __init__(self, inner):
            self.optimizer = inner
            self.param_groups = inner.param_groups
            self.defaults = inner.defaults

        @property
        def state(self):
            return self.optimizer.state

        def step(self, closure=None):
            return self.optimizer.step(closure)

    down, up, _, optimizer = trained(OPTIMIZERS["adamw"])
    wrapped = Wrapper(optimizer)
    assert aclora.reset_optimizer_state(wrapped, [down, up]) == 2
    assert float(optimizer.state[up]["step"]) == 0.0 and not optimizer.state[up]["exp_avg"].any()


def test_other_optimizers_are_refused_by_reset():
    # reset_optimizer_state and check_resettable name the optimizer they do not know.
    down, up = (nn.Parameter(t) for t in lora_pair(4, 8, 8))
    optimizer = torch.optim.Adagrad([down, up])
    with pytest.raises(aclora.Error, match="Adagrad"):
        aclora.check_resettable(optimizer)
    with pytest.raises(aclora.Error, match="Adagrad"):
        aclora.reset_optimizer_state(optimizer, [down, up])
    with pytest.raises(aclora.Error, match="Adagrad"):
        aclora.RestartHook({"m": (down, up)}, optimizer, total_epochs=10)
