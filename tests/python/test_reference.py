"""aclora.Restart against the C++ Torch backend: the results record_restart (reference/) wrote.

Two comparisons:
- with reference/recorded.safetensors, committed (made on one machine): K exactly; the factors
  within the rounding the storage type and the machine's kernels allow;
- with a fresh run of record_restart built against the same LibTorch on this machine
  (ACLORA_RECORD_RESTART, set by run.sh): bit for bit, every dtype.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

import aclora
from conftest import ROOT, read_safetensors

RECORDED = ROOT / "tests" / "python" / "reference" / "recorded.safetensors"

EPS = {torch.float64: 2.0**-52, torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7}


def replay(tensors, metadata):
    """Runs every recorded case through aclora.Restart: {case: [(report, {name: (down, up)})]}."""
    names = json.loads(metadata["modules"])
    cases = json.loads(metadata["cases"])
    results = {}
    for case, spec in cases.items():
        factors = {name: (tensors[f"{case}/{name}/down.in"].clone(), tensors[f"{case}/{name}/up.in"].clone())
                   for name in names}
        if spec["named"]:
            modules = {name: factors[name] for name in names}
        else:
            modules = [factors[name] for name in names]
        restart = aclora.Restart(seed=spec["seed"], noise=spec["noise"], min_rank=spec["min_rank"])
        steps = []
        for step in spec["restarts"]:
            if step["scheduled"]:
                report = restart(modules, epoch=step["epoch"], total_epochs=step["total_epochs"],
                                 mean_loss=step["given_loss"])
            else:
                report = restart(modules, threshold=step["given_threshold"])
            steps.append((report, {name: (d.clone(), u.clone()) for name, (d, u) in factors.items()}))
        results[case] = steps
    return results, cases, names


def test_matches_recorded_cpp_results():
    # K per module is exact; factors agree within the storage rounding: fp64 to 1e4 eps of
    # the largest entry (the Gram route's basis error eps ||G|| / gap, gaps >= 0.3 here, sizes
    # <= 54 x 12); fp32 to 8 eps (the noise is drawn in float with vectorised log / cos,
    # accurate to a few ulp, then one rounding); bf16 to one bf16 ulp of each entry (a fp64
    # result next to a rounding boundary may round the other way on another machine).
    tensors, metadata = read_safetensors(RECORDED)
    results, cases, names = replay(tensors, metadata)
    for case, steps in results.items():
        for index, (report, factors) in enumerate(steps):
            expected = cases[case]["restarts"][index]
            assert report.restart_index == expected["restart_index"]
            assert report.threshold == pytest.approx(expected["threshold"], rel=1e-12)
            for module, recorded in zip(report.modules, expected["modules"]):
                assert module.module_rank == recorded["module_rank"], (case, module.name)
                assert module.allocated_rank == recorded["allocated_rank"]
                for layer, recorded_layer in zip(module.layers, recorded["layers"]):
                    assert layer.signal_count == recorded_layer["signal_count"]
                    tolerance = 1e-6 if case.startswith("fp32") else 1e-12
                    assert layer.sigma == pytest.approx(recorded_layer["sigma"], rel=tolerance, abs=1e-300)
                    assert layer.kept_energy_fraction == pytest.approx(recorded_layer["kept_energy_fraction"],
                                                                       rel=tolerance)
                    assert torch.allclose(layer.singular_values,
                                          torch.tensor(recorded_layer["singular_values"], dtype=torch.float64),
                                          rtol=tolerance, atol=0.0)
            for name in names:
                for role, value in zip(("down", "up"), factors[name]):
                    want = tensors[f"{case}/{name}/{role}.out{index}"]
                    assert value.dtype == want.dtype
                    difference = (value.double() - want.double()).abs()
                    if want.dtype == torch.bfloat16:
                        bound = EPS[want.dtype] * want.double().abs() + 1e-30
                        assert bool((difference <= bound).all()), (case, name, role)
                    else:
                        factor = 1e4 if want.dtype == torch.float64 else 8.0
                        bound = factor * EPS[want.dtype] * want.double().abs().max().item()
                        assert difference.max().item() <= bound, (case, name, role, difference.max().item())


def test_bit_identical_to_cpp_on_this_machine(tmp_path):
    # The same tensors and seeds through the Python package and through a C++ program linked
    # to the same LibTorch give the same bits (all dtypes), reports included.
    binary = os.environ.get("ACLORA_RECORD_RESTART")
    if not binary:
        if os.environ.get("ACLORA_PYTHON_REQUIRE_ALL") == "1":
            pytest.fail("ACLORA_RECORD_RESTART is not set (run.sh builds record_restart)")
        pytest.skip("ACLORA_RECORD_RESTART (the record_restart program) not given")
    output = tmp_path / "fresh.safetensors"
    subprocess.run([binary, str(output)], check=True)
    tensors, metadata = read_safetensors(output)
    assert metadata["torch_version"].split("+")[0] in torch.__version__
    results, cases, names = replay(tensors, metadata)
    for case, steps in results.items():
        for index, (report, factors) in enumerate(steps):
            expected = cases[case]["restarts"][index]
            assert report.threshold == expected["threshold"]
            for module, recorded in zip(report.modules, expected["modules"]):
                assert module.module_rank == recorded["module_rank"]
                for layer, recorded_layer in zip(module.layers, recorded["layers"]):
                    assert layer.sigma == recorded_layer["sigma"]
                    assert layer.kept_energy_fraction == recorded_layer["kept_energy_fraction"]
                    assert layer.singular_values.tolist() == recorded_layer["singular_values"]
            for name in names:
                assert torch.equal(factors[name][0], tensors[f"{case}/{name}/down.out{index}"]), (case, name)
                assert torch.equal(factors[name][1], tensors[f"{case}/{name}/up.out{index}"]), (case, name)
