"""aclora.RestartHook: RESTARTs at the scheduled epochs from the mean loss since the last one,
the optimizer policy, failures that keep the loss, and resuming with the same results."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import aclora
from conftest import lora_pair, same_bits


def network(seed=0):
    out = {}
    for index, (rank, n_in, n_out) in enumerate([(8, 24, 16), (4, 12, 30)]):
        down, up = lora_pair(rank, n_in, n_out, seed=seed + index)
        out[f"m{index}"] = (nn.Parameter(down), nn.Parameter(up))
    return out


def losses(count):
    return [0.5 * 0.9**epoch + 0.01 * (epoch % 3) for epoch in range(count)]


def test_restarts_at_scheduled_epochs_from_the_window_mean():
    # With N = 25 and E = 10 the RESTARTs follow epochs 0, 10 and 20; each uses the mean of the
    # epoch losses since the previous one (that epoch included) and alpha(e).
    modules = network()
    hook = aclora.RestartHook(modules, total_epochs=25, restart_interval=10, seed=3)
    assert hook.module_ranks() == {"m0": 8, "m1": 4}
    values = losses(25)
    ran = []
    for epoch, loss in enumerate(values):
        outcome = hook.end_epoch(epoch, loss)
        if outcome is not None:
            ran.append(epoch)
            assert outcome.epoch == epoch and outcome.seconds >= 0.0
            window = values[max(0, epoch - 9) : epoch + 1] if epoch else values[:1]
            assert outcome.report.mean_loss == sum(window) / len(window)
            assert outcome.report.alpha == 1.0 + epoch / 24
            assert hook.loss_window == []
    assert ran == [0, 10, 20]
    assert hook.restart_count == 3 and len(hook.history) == 3
    assert hook.loss_window == values[21:]
    assert hook.module_ranks() == hook.history[-1].report.module_ranks()


def test_step_losses_and_loss_scale():
    # end_epoch(epoch) without a loss takes the mean of the recorded steps; loss_scale divides
    # the loss the RESTART sees.
    hook = aclora.RestartHook(network(), total_epochs=5, restart_interval=1, loss_scale=4.0)
    for loss in (1.0, 2.0, torch.tensor(3.0)):
        hook.record_step(loss)
    outcome = hook.end_epoch(0)
    assert outcome.report.mean_loss == 0.5
    with pytest.raises(aclora.Error, match="no loss"):
        hook.end_epoch(1)
    with pytest.raises(aclora.Error):
        hook.record_step(float("inf"))


def test_fixed_rank_run_records_losses_only():
    # restarts=False: no RESTART ever, the factors stay as they are.
    modules = network()
    before = [p.detach().clone() for pair in modules.values() for p in pair]
    hook = aclora.RestartHook(modules, total_epochs=3, restart_interval=1, restarts=False)
    assert all(hook.end_epoch(epoch, 0.1) is None for epoch in range(3))
    assert all(torch.equal(p, b) for p, b in zip((p for pair in modules.values() for p in pair), before))


def test_failed_restart_keeps_the_loss_and_changes_nothing():
    # A NaN factor makes the due RESTART fail: the error names the module, no factor and no
    # optimizer state changed, and the epoch's loss stays in the window.
    modules = network()
    params = [p for pair in modules.values() for p in pair]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    with torch.no_grad():
        modules["m1"][1][0, 0] = math.nan
    before = [p.detach().clone() for p in params]
    states = [{key: value.clone() for key, value in optimizer.state[p].items()} for p in params]
    hook = aclora.RestartHook(modules, optimizer, total_epochs=10, restart_interval=2)
    with pytest.raises(aclora.Error, match="'m1'.*NaN"):
        hook.end_epoch(0, 0.3)
    assert hook.loss_window == [0.3] and hook.restart_count == 0
    # Bit for bit, the NaN factor included (torch.equal never holds for a tensor with NaN).
    for p, b, state in zip(params, before, states):
        assert same_bits(p, b)
        assert optimizer.state[p].keys() == state.keys()
        assert all(same_bits(optimizer.state[p][key], value) for key, value in state.items())


def test_resume_from_state_dict_gives_the_same_factors():
    # Stopping after epoch 14 and resuming from the hook's state_dict (with the factors saved)
    # gives the same factors at epoch 25 as an uninterrupted run.
    values = losses(25)
    straight = network()
    hook = aclora.RestartHook(straight, total_epochs=25, restart_interval=5, seed=8)
    for epoch, loss in enumerate(values):
        hook.end_epoch(epoch, loss)

    first = network()
    hook = aclora.RestartHook(first, total_epochs=25, restart_interval=5, seed=8)
    for epoch in range(15):
        hook.end_epoch(epoch, values[epoch])
    state = hook.state_dict()
    saved = {name: (d.detach().clone(), u.detach().clone()) for name, (d, u) in first.items()}

    resumed = {name: (nn.Parameter(d), nn.Parameter(u)) for name, (d, u) in saved.items()}
    hook = aclora.RestartHook(resumed, total_epochs=25, restart_interval=5, seed=8)
    hook.load_state_dict(state)
    for epoch in range(15, 25):
        hook.end_epoch(epoch, values[epoch])
    for name in straight:
        assert torch.equal(straight[name][0], resumed[name][0])
        assert torch.equal(straight[name][1], resumed[name][1])


def test_load_state_dict_validates_first():
    # Bad saved states are refused and leave the hook as it was.
    hook = aclora.RestartHook(network(), total_epochs=10, restart_interval=2)
    hook.end_epoch(1, 0.2)
    for bad in ({"loss_window": [math.nan]}, {"module_ranks": [1]}, {"module_ranks": [9, 1]},
                {"restart_count": -1}):
        with pytest.raises(aclora.Error):
            hook.load_state_dict(bad)
    assert hook.loss_window == [0.2]
