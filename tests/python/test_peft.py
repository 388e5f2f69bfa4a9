"""PEFT and the Hugging Face Trainer on small models built from configs (no weights
downloaded): discovery of every LoRA pair, RESTARTs at the right epochs of a real training
run through aclora.RestartCallback, and the adapter saved at K per module loading back in PEFT
with the outputs of the truncated model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import aclora
from conftest import need, read_safetensors

transformers = need("transformers")
peft = need("peft")

VOCAB = 64
# Cross-entropy over 64 tokens starts near log(64) = 4.2; dividing by 12 puts L near 0.3, so p
# lies between 0.6 and 0.9 and the modules keep different ranks.
LOSS_SCALE = 12.0


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def lora_llama(seed: int = 0, rank: int = 8):
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                             target_modules=["q_proj", "v_proj", "down_proj"])
    return peft.get_peft_model(tiny_llama(seed), config)


class Tokens(torch.utils.data.Dataset):
    """Sequences following a fixed next-token rule: something a LoRA can learn."""

    def __init__(self, count: int = 32, length: int = 12):
        generator = torch.Generator().manual_seed(1)
        start = torch.randint(0, VOCAB, (count, 1), generator=generator)
        self.data = (start + 3 * torch.arange(length)) % VOCAB

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return {"input_ids": self.data[index], "labels": self.data[index]}


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(8, 5)


def test_discovery_finds_every_lora_pair():
    # Every lora_A / lora_B parameter pair PEFT created is found, as the same tensors, named by
    # the layer path under the base model; Conv2d and Embedding LoRAs too.
    model = lora_llama()
    modules = aclora.modules_from_peft(model)
    expected = {name[len("base_model.model."):-len(".lora_A.default.weight")]: parameter
                for name, parameter in model.named_parameters() if name.endswith("lora_A.default.weight")}
    assert [m.name for m in modules] == list(expected)
    assert len(modules) == 2 * 3
    for module in modules:
        assert module.down is expected[module.name]
        assert module.path == module.name and module.adapter == "default"
        assert module.rank == 8 and module.alpha == pytest.approx(16.0)
    assert modules[0].name == "model.layers.0.self_attn.q_proj"

    conv = peft.get_peft_model(ConvNet(), peft.LoraConfig(r=4, target_modules=["emb", "conv", "fc"]))
    found = {m.name: m for m in aclora.modules_from_peft(conv)}
    assert set(found) == {"emb", "conv", "fc"}
    assert tuple(found["conv"].down.shape) == (4, 3, 3, 3) and tuple(found["conv"].up.shape) == (6, 4, 1, 1)
    assert tuple(found["emb"].down.shape) == (4, 10) and tuple(found["emb"].up.shape) == (8, 4)
    for module in found.values():
        with torch.no_grad():
            module.up.normal_()
    report = aclora.Restart(seed=1)(list(found.values()), threshold=0.5)
    assert [m.R for m in report.modules] == [4, 4, 4]


def test_adapter_choice():
    # Two adapters: the active one is taken, another can be named, an unknown one is refused.
    model = lora_llama()
    model.add_adapter("second", peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert {m.adapter for m in aclora.modules_from_peft(model)} == {"default"}
    second = aclora.modules_from_peft(model, "second")
    assert len(second) == 2 and all(m.rank == 2 for m in second)
    with pytest.raises(aclora.Error, match="not found"):
        aclora.modules_from_peft(model, "third")
    with pytest.raises(aclora.Error, match="no LoRA layer"):
        aclora.modules_from_peft(tiny_llama())


def train(tmp_path, epochs=5, interval=2):
    model = lora_llama()
    callback = aclora.RestartCallback(restart_interval=interval, seed=7, loss_scale=LOSS_SCALE)
    options = dict(output_dir=str(tmp_path / "run"), num_train_epochs=epochs, per_device_train_batch_size=8,
                   learning_rate=2e-2, logging_steps=1, save_strategy="no", report_to=[], optim="adamw_torch",
                   seed=0, disable_tqdm=True, dataloader_num_workers=0)
    arguments = transformers.TrainingArguments(**options)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=Tokens(), callbacks=[callback])
    trainer.train()
    return model, callback, trainer


def truncate_in_place(model, ranks):
    """The reference "truncated model": each module's up @ down replaced by its best rank-K
    approximation (fp64 SVD), padded with zeros to R."""
    with torch.no_grad():
        for module in aclora.modules_from_peft(model):
            kept = ranks[module.name]
            product = module.up.double() @ module.down.double()
            u, s, vh = torch.linalg.svd(product, full_matrices=False)
            module.up.zero_()[:, :kept] = (u[:, :kept] * s[:kept]).to(module.up.dtype)
            module.down.zero_()[:kept] = vh[:kept].to(module.down.dtype)


def test_trainer_callback_restarts_and_saved_adapter_reloads(tmp_path):
    # A 5-epoch Trainer run with restart_interval 2 restarts after epochs 0, 2 and 4, each from
    # the mean of the epoch losses since the previous one (per-epoch means of the logged
    # losses). The adapter saved at the kept ranks holds K-row factors, and PeftModel loads it
    # with the outputs of the truncated model within 1e-5.
    model, callback, trainer = train(tmp_path)
    assert [outcome.epoch for outcome in callback.history] == [0, 2, 4]
    logged = [(entry["epoch"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    per_epoch = [[loss for epoch, loss in logged if e < epoch <= e + 1 + 1e-9] for e in range(5)]
    means = [sum(values) / len(values) for values in per_epoch]
    for outcome, window in zip(callback.history, ([0], [1, 2], [3, 4])):
        expected = sum(means[e] for e in window) / len(window) / LOSS_SCALE
        assert outcome.report.mean_loss == pytest.approx(expected, rel=1e-12)

    ranks = callback.hook.module_ranks()
    assert any(k < 8 for k in ranks.values())
    directory = tmp_path / "adapter"
    assert aclora.save_peft(model, directory, callback.hook) == ranks
    tensors, _ = read_safetensors(directory / "adapter_model.safetensors")
    for name, kept in ranks.items():
        assert tensors[f"base_model.model.{name}.lora_A.weight"].shape[0] == kept
        assert tensors[f"base_model.model.{name}.lora_B.weight"].shape[1] == kept
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["r"] in ranks.values()

    batch = Tokens()[0]["input_ids"][None]
    model.eval()
    with torch.no_grad():
        untruncated = model(input_ids=batch).logits
    truncate_in_place(model, ranks)
    with torch.no_grad():
        expected = model(input_ids=batch).logits
    assert (untruncated - expected).abs().max().item() > 1e-3  # the truncation matters
    with torch.no_grad():
        loaded = peft.PeftModel.from_pretrained(tiny_llama(), str(directory)).eval()
        actual = loaded(input_ids=batch).logits
    assert (actual - expected).abs().max().item() <= 1e-5


def test_saving_at_full_rank_reproduces_the_model(tmp_path):
    # ranks=None writes the factors as trained: the reloaded model equals the trained one.
    model = lora_llama()
    with torch.no_grad():
        for module in aclora.modules_from_peft(model):
            module.up.normal_(std=0.05)
    directory = tmp_path / "full"
    aclora.save_peft(model, directory)
    batch = Tokens()[1]["input_ids"][None]
    with torch.no_grad():
        expected = model(input_ids=batch).logits
        actual = peft.PeftModel.from_pretrained(tiny_llama(), str(directory)).eval()(input_ids=batch).logits
    assert torch.allclose(actual, expected, rtol=0, atol=1e-6)
    with pytest.raises(aclora.Error, match="outside"):
        aclora.save_peft(model, tmp_path / "bad", {m.name: 9 for m in aclora.modules_from_peft(model)})
    assert not (tmp_path / "bad").exists()
