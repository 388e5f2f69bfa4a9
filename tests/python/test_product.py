"""The product analysis from Python: the singular values of dW = up @ down from the factors,
the factors at rank K, and the errors of the savers (no file left behind)."""

from __future__ import annotations

import pytest
import torch

import aclora
from conftest import lora_pair


def module(rank=8, n_in=40, n_out=24, seed=0, name="m"):
    down, up = lora_pair(rank, n_in, n_out, seed=seed)
    return aclora.LoraModule(name, down, up, path=f"down_blocks.0.attentions.0.proj_{name}", alpha=4.0)


def test_update_singular_values_are_those_of_the_product():
    # Equal to the singular values of the formed product within fp64 rounding (the Gram route
    # loses relative accuracy below sqrt(eps) of the largest value only).
    m = module()
    values = aclora.update_singular_values(m)
    reference = torch.linalg.svdvals(m.up.double() @ m.down.double())[:8]  # rank <= R
    assert values.dtype == torch.float64 and values.shape == (8,)
    assert torch.allclose(values, reference, rtol=0, atol=1e-10 * reference[0].item())


def test_factors_at_rank_give_the_best_rank_k_product():
    # up' @ down' is the rank-K truncation of up @ down (float32 result: within 1e-6 of the
    # largest entry), shapes [K, in] / [out, K]; K = R returns the factors unchanged; conv
    # factors keep their trailing dimensions; the module is not modified.
    m = module()
    before = (m.down.clone(), m.up.clone())
    down, up = aclora.factors_at_rank(m, 3)
    assert down.shape == (3, 40) and up.shape == (24, 3) and down.dtype == torch.float32
    product = m.up.double() @ m.down.double()
    u, s, vh = torch.linalg.svd(product)
    truncated = (u[:, :3] * s[:3]) @ vh[:3]
    assert (up.double() @ down.double() - truncated).abs().max().item() <= 1e-6 * truncated.abs().max().item()
    same_down, same_up = aclora.factors_at_rank(m, 8)
    assert torch.equal(same_down, m.down) and torch.equal(same_up, m.up)
    assert torch.equal(m.down, before[0]) and torch.equal(m.up, before[1])

    conv = aclora.LoraModule("c", torch.randn(6, 4, 3, 3), torch.randn(10, 6, 1, 1))
    conv_down, conv_up = aclora.factors_at_rank(conv, 2)
    assert conv_down.shape == (2, 4, 3, 3) and conv_up.shape == (10, 2, 1, 1)


def test_factors_at_rank_errors():
    # K outside [1, R] and non-finite factors raise aclora.Error naming the module.
    m = module()
    for kept in (0, 9):
        with pytest.raises(aclora.Error, match="'m'.*outside"):
            aclora.factors_at_rank(m, kept)
    m.up[0, 0] = float("inf")
    with pytest.raises(aclora.Error, match="NaN or Inf"):
        aclora.factors_at_rank(m, 2)


def test_save_lora_errors_leave_no_file(tmp_path):
    # Bad format, dtype, component, alpha or rank: aclora.Error, and nothing at the path.
    good = [module(seed=1, name="a"), module(seed=2, name="b")]
    path = tmp_path / "out.safetensors"
    attempts = [
        dict(format="lycoris"),
        dict(dtype="F64"),
        dict(ranks={"a": 2}),
        dict(ranks={"a": 2, "b": 0}),
    ]
    for options in attempts:
        with pytest.raises(aclora.Error):
            aclora.save_lora(good, path, **options)
        assert not path.exists()
    bad_component = [aclora.LoraModule("a", good[0].down, good[0].up, component="vae")]
    with pytest.raises(aclora.Error, match="component"):
        aclora.save_lora(bad_component, path)
    nan = module(name="n")
    nan.down[1, 1] = float("nan")
    with pytest.raises(aclora.Error, match="'n'.*NaN"):
        aclora.save_lora([good[0], nan], path, {"a": 2, "n": 2})
    assert not path.exists()
    assert aclora.save_lora(good, path, [2, 3]) == {"a": 2, "b": 3} and path.exists()
