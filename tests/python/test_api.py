"""aclora's API on plain tensors: in-place semantics, the accepted module forms, noise keys,
the schedule, reports and errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import aclora
from conftest import lora_pair


def make_parameters(specs, dtype=torch.float32):
    """{name: (down, up)} of nn.Parameters with decaying spectra."""
    out = {}
    for seed, (name, rank, n_in, n_out) in enumerate(specs):
        down, up = lora_pair(rank, n_in, n_out, dtype=dtype, seed=seed)
        out[name] = (nn.Parameter(down), nn.Parameter(up))
    return out


SPECS = [("q", 8, 32, 24), ("k", 8, 32, 24), ("ff", 4, 16, 40)]


def test_rewrites_parameters_in_place_keeping_identity_grads_and_optimizer():
    # The factors keep their object, storage and data_ptr; their values change; their .grad
    # and the optimizer's references are untouched; autograd's version counter moves on.
    params = make_parameters(SPECS)
    flat = [p for pair in params.values() for p in pair]
    for p in flat:
        p.grad = torch.randn_like(p)
    grads = [p.grad.clone() for p in flat]
    before = [p.detach().clone() for p in flat]
    pointers = [p.data_ptr() for p in flat]
    versions = [p._version for p in flat]
    optimizer = torch.optim.AdamW(flat, lr=1e-3)
    report = aclora.Restart(seed=1)(params, threshold=0.5, optimizer=optimizer, optimizer_policy="keep")
    assert report.total_module_rank() < sum(spec[1] for spec in SPECS)
    for p, old, pointer, version, grad in zip(flat, before, pointers, versions, grads):
        assert p.data_ptr() == pointer
        assert p.requires_grad and p.grad_fn is None
        assert not torch.equal(p.detach(), old)
        assert torch.equal(p.grad, grad)
        assert p._version > version
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in flat]


def test_runs_without_autograd_and_outside_autocast():
    # Inside grad mode and CPU autocast the result is the same as outside, and no graph is made.
    first = make_parameters(SPECS)
    second = make_parameters(SPECS)
    aclora.Restart(seed=4)(first, threshold=0.7)
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        aclora.Restart(seed=4)(second, threshold=0.7)
    for name in first:
        for a, b in zip(first[name], second[name]):
            assert torch.equal(a, b)
            assert b.grad_fn is None


def test_module_forms_are_equivalent():
    # A mapping, (name, down, up) triples and LoraModule items give identical results.
    results = []
    for form in ("mapping", "triples", "modules"):
        params = make_parameters(SPECS, dtype=torch.float64)
        if form == "mapping":
            modules = params
        elif form == "triples":
            modules = [(name, d, u) for name, (d, u) in params.items()]
        else:
            modules = [aclora.LoraModule(name, d, u) for name, (d, u) in params.items()]
        aclora.Restart(seed=9)(modules, epoch=3, total_epochs=10, mean_loss=0.2)
        results.append(params)
    for name in results[0]:
        for other in results[1:]:
            assert torch.equal(results[0][name][0], other[name][0])
            assert torch.equal(results[0][name][1], other[name][1])


def test_noise_is_keyed_by_module_name_and_seed():
    # Reordering named modules leaves every module's result unchanged; another seed changes it.
    forward = make_parameters(SPECS, dtype=torch.float64)
    backward = make_parameters(SPECS, dtype=torch.float64)
    reseeded = make_parameters(SPECS, dtype=torch.float64)
    aclora.Restart(seed=5)(forward, threshold=0.8)
    aclora.Restart(seed=5)(dict(reversed(list(backward.items()))), threshold=0.8)
    aclora.Restart(seed=6)(reseeded, threshold=0.8)
    for name in forward:
        assert torch.equal(forward[name][0], backward[name][0])
        assert torch.equal(forward[name][1], backward[name][1])
        assert not torch.equal(forward[name][0], reseeded[name][0])


def test_restart_counter_keys_the_noise_and_can_be_restored():
    # The second RESTART has restart_index 1; a driver set to count 1 reproduces it.
    a = make_parameters(SPECS, dtype=torch.float64)
    b = {name: (d.detach().clone(), u.detach().clone()) for name, (d, u) in a.items()}
    restart = aclora.Restart(seed=2)
    restart(a, threshold=0.9)
    b_after_first = {name: (d.detach().clone(), u.detach().clone()) for name, (d, u) in a.items()}
    second = restart(a, threshold=0.9)
    assert second.restart_index == 1 and restart.restart_count == 2
    resumed = aclora.Restart(seed=2)
    resumed.restart_count = 1
    resumed(b_after_first, threshold=0.9)
    for name in a:
        assert torch.equal(a[name][0], b_after_first[name][0])
    del b


def test_schedule_threshold_and_report_values():
    # p = 1 - L^alpha with alpha = 1 + e / (N - 1); the report carries L, alpha, p, R and K.
    params = make_parameters(SPECS, dtype=torch.float64)
    report = aclora.Restart()(params, epoch=4, total_epochs=9, mean_loss=0.25)
    assert report.alpha == 1.5
    assert report.mean_loss == 0.25
    assert report.threshold == 1.0 - 0.25**1.5 == report.p
    assert [m.name for m in report.modules] == [s[0] for s in SPECS]
    assert [m.R for m in report.modules] == [s[1] for s in SPECS]
    for module in report.modules:
        assert 1 <= module.K <= module.R
        assert len(module.layers) == 2
        assert module.layers[0].axis == "rows" and module.layers[1].axis == "cols"
        assert all(0.0 <= kept <= 1.0 for kept in module.kept_energy)
        assert all(sigma >= 0.0 for sigma in module.sigma)
        assert module.K == max(module.layers[0].signal_count, module.layers[1].signal_count, 1)


def test_schedule_and_loss_window():
    # The C++ Schedule and LossWindow: alpha, due, threshold and their errors.
    schedule = aclora.Schedule(total_epochs=100, restart_interval=10)
    assert schedule.alpha(0) == 1.0 and schedule.alpha(99) == 2.0
    assert schedule.due(0) and schedule.due(10) and not schedule.due(9)
    assert schedule.threshold(0.1, 0) == pytest.approx(0.9)
    assert aclora.Schedule(1, 1).alpha(0) == 1.0
    assert aclora.threshold_from_loss(2.0, 1.0) == 0.0
    for bad in (lambda: schedule.alpha(100), lambda: schedule.due(-1), lambda: aclora.Schedule(0, 1),
                lambda: aclora.Schedule(10, 0), lambda: aclora.threshold_from_loss(0.0, 1.0)):
        with pytest.raises(aclora.Error):
            bad()
    window = aclora.LossWindow()
    with pytest.raises(aclora.Error, match="no loss recorded"):
        window.mean()
    for loss in (0.1, 0.2, 0.4):
        window.record(loss)
    assert len(window) == 3 and window.mean() == (0.1 + 0.2 + 0.4) / 3
    with pytest.raises(aclora.Error):
        window.record(math.nan)


def test_report_prints_and_converts():
    # str() is a table naming every module (up to the printed limit), to_dict() is JSON-ready,
    # to_records() is one flat record per module.
    params = make_parameters(SPECS)
    report = aclora.Restart(seed=3)(params, threshold=0.6)
    text = str(report)
    assert "p = 0.6" in text and all(name in text for name, *_ in SPECS)
    assert "RestartReport(" in repr(report)
    as_dict = report.to_dict()
    assert as_dict["mean_loss"] is None and as_dict["alpha"] is None
    json.dumps(as_dict)  # plain values only
    records = report.to_records()
    assert len(records) == len(SPECS)
    assert set(records[0]) >= {"name", "R", "K", "p", "kept_energy_down", "kept_energy_up", "sigma_down", "sigma_up"}
    assert report.module_ranks() == {m.name: m.K for m in report.modules}


def test_conv_factors_and_strided_2d_views_are_written_in_place():
    # Conv LoRA factors [R, in, kh, kw] / [out, R, 1, 1] and a transposed (strided) 2-D
    # factor are rewritten through views of the same storage.
    down = nn.Parameter(torch.randn(6, 4, 3, 3))
    up = nn.Parameter(torch.randn(10, 6, 1, 1))
    base = torch.randn(8, 20)
    transposed_up = base.t()  # an up factor [out = 20, R = 8] with strides (1, 20)
    other_down = torch.randn(8, 12)
    pointer = base.data_ptr()
    before = base.clone()
    report = aclora.Restart(seed=1)({"conv": (down, up), "strided": (other_down, transposed_up)}, threshold=0.5)
    assert report.modules[0].layers[0].shape == (6, 36)
    assert report.modules[1].layers[1].shape == (20, 8)
    assert base.data_ptr() == pointer and not torch.equal(base, before)


def test_half_precision_storage():
    # float16 and bfloat16 factors are analysed in float64 and written back in their dtype.
    for dtype in (torch.float16, torch.bfloat16):
        params = make_parameters(SPECS, dtype=dtype)
        report = aclora.Restart()(params, threshold=0.8)
        assert all(p.dtype == dtype for pair in params.values() for p in pair)
        assert report.total_module_rank() > 0


def unchanged(params, snapshot):
    return all(torch.equal(a, b) for pair, old in zip(params.values(), snapshot) for a, b in zip(pair, old))


def snapshot_of(params):
    return [tuple(t.detach().clone() for t in pair) for pair in params.values()]


@pytest.mark.parametrize(
    "corrupt, layer, reason",
    [
        (lambda d, u: (d.to(torch.int32), u), "down", "unsupported dtype"),
        (lambda d, u: (d, u.clone().index_fill_(0, torch.tensor([1]), float("nan"))), "up", "NaN or Inf"),
        (lambda d, u: (d, torch.randn(u.shape[0], u.shape[1] + 1)), "up", "rank axis has length"),
        (lambda d, u: (d[0].clone(), u), "down", r"must be \[R, in\]"),
        (lambda d, u: (d, torch.randn(u.shape[0], u.shape[1], 3)), "up", r"must be \[out, R\]"),
        (lambda d, u: (torch.randn(d.shape[0], 2, 2, 4).transpose(1, 3), u), "down", "contiguous"),
        (lambda d, u: (torch.empty(d.shape, device="meta"), u), "down", "meta"),
        (lambda d, u: (torch.zeros(1, d.shape[1]).expand(d.shape[0], -1), u), "down", "overlapping"),
    ],
)
def test_errors_name_module_and_layer_and_change_nothing(corrupt, layer, reason):
    # A bad factor in the second module raises aclora.Error naming module 'k' (#1) and the
    # layer; the first module (already valid) is left exactly as it was.
    params = make_parameters(SPECS)
    down, up = params["k"]
    params["k"] = corrupt(down.detach(), up.detach())
    snapshot = snapshot_of({n: p for n, p in params.items() if n != "k"})
    with pytest.raises(aclora.Error, match=reason) as caught:
        aclora.Restart()(params, threshold=0.5)
    error = caught.value
    assert error.module_name == "k" and error.module_index == 1 and error.layer == layer
    assert f"module 'k' (#1), layer {error.layer_index} ({layer})" in str(error)
    assert unchanged({n: p for n, p in params.items() if n != "k"}, snapshot)


def test_argument_errors():
    # Bad losses, thresholds, names, policies and argument mixes raise aclora.Error (or
    # TypeError for a wrong kind of object) before anything is written.
    params = make_parameters(SPECS)
    snapshot = snapshot_of(params)
    restart = aclora.Restart()
    calls = [
        lambda: restart(params, epoch=0, total_epochs=10, mean_loss=0.0),
        lambda: restart(params, epoch=0, total_epochs=10, mean_loss=-1.0),
        lambda: restart(params, epoch=0, total_epochs=10, mean_loss=float("nan")),
        lambda: restart(params, epoch=10, total_epochs=10, mean_loss=0.1),
        lambda: restart(params, threshold=1.5),
        lambda: restart(params, threshold=0.5, epoch=1),
        lambda: restart(params, epoch=1, total_epochs=10),
        lambda: restart([("a", *params["q"]), ("a", *params["k"])], threshold=0.5),
        lambda: restart({}, threshold=0.5),
        lambda: restart(params, threshold=0.5, optimizer_policy="forget"),
        lambda: aclora.Restart(noise="loud"),
        lambda: aclora.Restart(seed=-1),
        lambda: aclora.Restart(min_rank=-2),
    ]
    for call in calls:
        with pytest.raises(aclora.Error):
            call()
    with pytest.raises(TypeError):
        restart(torch.zeros(3), threshold=0.5)
    with pytest.raises(TypeError):
        restart([("a", params["q"][0], "not a tensor")], threshold=0.5)
    assert unchanged(params, snapshot)


def test_unsupported_optimizer_with_reset_fails_before_writing():
    # Policy "reset" needs AdamW, Adam or SGD; another optimizer is refused before the RESTART.
    params = make_parameters(SPECS)
    snapshot = snapshot_of(params)
    optimizer = torch.optim.RMSprop([p for pair in params.values() for p in pair])
    with pytest.raises(aclora.Error, match="RMSprop.*optimizer_policy='keep'"):
        aclora.Restart()(params, threshold=0.5, optimizer=optimizer)
    assert unchanged(params, snapshot)
    aclora.Restart()(params, threshold=0.5, optimizer=optimizer, optimizer_policy="keep")
