"""diffusers: a small UNet2DConditionModel (SDXL's block layout, built from a config, no
weights) with a PEFT-backed LoRA added as diffusers' SDXL training scripts add it; kohya names
as the C++ layer gives them; the documented epoch-loop hook; files at the kept ranks that
diffusers loads back with the truncated model's outputs."""

from __future__ import annotations

import json

import pytest
import torch

import aclora
from aclora import _core
from conftest import need, read_safetensors

diffusers = need("diffusers")
peft = need("peft")

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1"]


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    ).eval()


def lora_unet(seed: int = 0, rank: int = 4):
    unet = tiny_unet(seed)
    unet.requires_grad_(False)
    unet.add_adapter(peft.LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a trained-looking update (PEFT starts B at zero)
        for module in aclora.modules_from_diffusers(unet):
            module.up.copy_(0.2 * torch.randn(module.up.shape, generator=generator))
    return unet


def inputs(seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 8, 8, generator=generator), torch.tensor([10, 500]),
            torch.randn(2, 5, 16, generator=generator))


def test_kohya_names_of_the_unet_modules():
    # Every LoRA pair is found and named as the kohya files and aclora's C++ training layer
    # name it (LDM-tree paths), linear and conv modules alike.
    unet = lora_unet()
    modules = aclora.modules_from_diffusers(unet)
    paths = [name[: -len(".lora_A.default.weight")] for name, _ in unet.named_parameters()
             if name.endswith("lora_A.default.weight")]
    assert [m.path for m in modules] == paths
    assert all(m.name == _core.kohya_name("unet", m.path) for m in modules)
    names = {m.path: m.name for m in modules}
    assert names["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"] == \
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert names["down_blocks.0.resnets.0.conv1"] == "lora_unet_input_blocks_1_0_in_layers_2"
    assert any(m.down.dim() == 4 for m in modules)


def test_documented_epoch_loop_hook():
    # The five lines of docs/python.md in a diffusers-style loop: RESTARTs after epochs 0 and 2
    # of 4 (interval 2), from the mean step loss, with the AdamW state of the factors reset.
    unet = lora_unet()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    hook = aclora.RestartHook(aclora.modules_from_diffusers(unet), optimizer, total_epochs=4,
                              restart_interval=2, seed=0)
    sample, timesteps, context = inputs()
    ran = []
    for epoch in range(4):
        for _ in range(2):
            noise_prediction = unet(sample, timesteps, context).sample
            loss = torch.nn.functional.mse_loss(noise_prediction, torch.zeros_like(noise_prediction))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            hook.record_step(loss.detach().item())
        if hook.end_epoch(epoch):
            ran.append(epoch)
            assert all(float(optimizer.state[p]["step"]) == 0.0 for p in params)
    assert ran == [0, 2]


def truncated_delta(module, kept):
    """scale * (the best rank-K approximation of up @ down), fp64."""
    product = module.up.double().flatten(1) @ module.down.double().flatten(1)
    u, s, vh = torch.linalg.svd(product, full_matrices=False)
    return module.scale * (u[:, :kept] * s[:kept]) @ vh[:kept]


@pytest.mark.parametrize("file_format", ["diffusers", "kohya"])
def test_saved_file_holds_the_kept_ranks(tmp_path, file_format):
    # save_lora writes K-row factors whose product (with the stored scale) is the truncated
    # update within float32 rounding; kohya files list the ranks in aclora_module_ranks.
    unet = lora_unet(rank=6)
    modules = aclora.modules_from_diffusers(unet)
    ranks = {m.name: 1 + index % m.rank for index, m in enumerate(modules)}
    path = tmp_path / f"lora_{file_format}.safetensors"
    aclora.save_lora(modules, path, ranks, format=file_format)
    tensors, metadata = read_safetensors(path)
    for module in modules:
        kept = ranks[module.name]
        if file_format == "diffusers":
            down = tensors[f"unet.{module.path}.lora_A.weight"]
            up = tensors[f"unet.{module.path}.lora_B.weight"]
            scale = 1.0
        else:
            down = tensors[f"{module.name}.lora_down.weight"]
            up = tensors[f"{module.name}.lora_up.weight"]
            scale = tensors[f"{module.name}.alpha"].item() / kept
        assert down.shape[0] == kept and up.shape[1] == kept
        delta = scale * up.double().flatten(1) @ down.double().flatten(1)
        reference = truncated_delta(module, kept)
        assert (delta - reference).abs().max().item() <= 1e-5 * reference.abs().max().item() + 1e-12
    if file_format == "kohya":
        assert json.loads(metadata["aclora_module_ranks"]) == ranks


def diffusers_version():
    return tuple(int(part) for part in diffusers.__version__.split(".")[:2])


@pytest.mark.parametrize("ranks_vary", [False, True])
def test_diffusers_loads_the_saved_file(tmp_path, ranks_vary):
    # A fresh UNet with the saved diffusers file loaded by diffusers' SDXL LoRA loader gives the
    # outputs of the original UNet with each module truncated to its K, within 1e-5. With one K
    # for all modules any diffusers loads it right; with K varying per module the scales come
    # from the file's lora_adapter_metadata, which diffusers reads since 0.34 (older versions
    # give every module the first module's alpha).
    if ranks_vary and diffusers_version() < (0, 34):
        pytest.skip(f"diffusers {diffusers.__version__} ignores lora_adapter_metadata (needs >= 0.34)")
    unet = lora_unet(rank=6)
    modules = aclora.modules_from_diffusers(unet)
    ranks = {m.name: (1 + index % m.rank if ranks_vary else 2) for index, m in enumerate(modules)}
    path = tmp_path / "pytorch_lora_weights.safetensors"
    aclora.save_lora(modules, path, ranks)
    with torch.no_grad():
        for module in modules:
            kept = ranks[module.name]
            product = module.up.double().flatten(1) @ module.down.double().flatten(1)
            u, s, vh = torch.linalg.svd(product, full_matrices=False)
            module.up.zero_().flatten(1)[:, :kept] = (u[:, :kept] * s[:kept]).float()
            module.down.zero_().flatten(1)[:kept] = vh[:kept].float()
        expected = unet(*inputs()).sample
        assert (tiny_unet()(*inputs()).sample - expected).abs().max().item() > 1e-3  # the LoRA matters

    # What StableDiffusionXLPipeline.load_lora_weights does with the UNet's part of the file.
    loaded = tiny_unet()
    pipeline = diffusers.StableDiffusionXLPipeline
    if diffusers_version() >= (0, 34):
        state_dict, alphas, metadata = pipeline.lora_state_dict(str(path), return_lora_metadata=True)
        pipeline.load_lora_into_unet(state_dict, alphas, loaded, adapter_name="aclora", metadata=metadata)
    else:
        state_dict, alphas = pipeline.lora_state_dict(str(path))
        pipeline.load_lora_into_unet(state_dict, alphas, loaded, adapter_name="aclora")
    with torch.no_grad():
        actual = loaded(*inputs()).sample
    assert (actual - expected).abs().max().item() <= 1e-5
