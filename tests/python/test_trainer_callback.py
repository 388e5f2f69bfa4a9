"""aclora.RestartCallback across a real Trainer resume: the state saved with a checkpoint and
restored by Trainer.train(resume_from_checkpoint=...) continues the run as if uninterrupted
(restart count, loss window, kept ranks, the noise of later RESTARTs, the adapter saved at K);
checkpoints without that state, or trained with other settings, are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import aclora
from conftest import need, read_safetensors
from test_peft import LOSS_SCALE, Tokens, lora_llama

transformers = need("transformers")
need("peft")
from aclora.trainer_callback import STATE_KEY  # noqa: E402 (needs transformers)

# 32 sequences in batches of 8: 4 steps per epoch, 20 in all. RESTARTs after epochs 0 and 3
# (steps 4 and 16); checkpoints at steps 6 (mid epoch 1, after the first RESTART, with two of
# the epoch's losses logged), 12 and 18 (mid epoch 4, after the last RESTART).
EPOCHS, INTERVAL, SAVE_STEPS, RANK = 5, 3, 6, 8


def snapshot(callback):
    """The state of a RestartCallback that a resumed run must reproduce."""
    hook = callback.hook
    return {"restart_count": hook.restart_count, "loss_window": hook.loss_window,
            "module_ranks": hook.module_ranks(), "state": callback.state_dict()}


class Snapshots(transformers.TrainerCallback):
    """Records the RestartCallback's state at train begin (after it restored a checkpoint's,
    being listed after it) and at every checkpoint save."""

    def __init__(self, restart):
        self.restart = restart
        self.at_begin = None
        self.at_save = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.at_begin = snapshot(self.restart)

    def on_save(self, args, state, control, **kwargs):
        self.at_save[state.global_step] = snapshot(self.restart)


# PEFT warns that a model built from a config has no name to look its vocabulary up by.
pytestmark = pytest.mark.filterwarnings("ignore:Could not find a config file")


def train(output_dir, resume=None, seed=7, restore_callback_states=False, extra_callbacks=()):
    """One Trainer run (from scratch, or resumed from `resume`) with checkpoints every 6 steps."""
    model = lora_llama(rank=RANK)
    restart = aclora.RestartCallback(restart_interval=INTERVAL, seed=seed, loss_scale=LOSS_SCALE)
    probe = Snapshots(restart)
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=EPOCHS, per_device_train_batch_size=8, learning_rate=2e-2,
        logging_steps=1, save_strategy="steps", save_steps=SAVE_STEPS, report_to=[], optim="adamw_torch", seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
        restore_callback_states_from_checkpoint=restore_callback_states)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=Tokens(),
                                   callbacks=[restart, probe, *extra_callbacks])
    trainer.train(resume_from_checkpoint=resume)
    return model, restart, probe


def factors(model):
    return {module.name: (module.down.detach().clone(), module.up.detach().clone())
            for module in aclora.modules_from_peft(model)}


def assert_same_factors(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        assert torch.equal(actual[name][0], expected[name][0]), name
        assert torch.equal(actual[name][1], expected[name][1]), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, whose checkpoints the resumed runs start from."""
    directory = tmp_path_factory.mktemp("straight")
    model, restart, probe = train(directory)
    assert [outcome.epoch for outcome in restart.history] == [0, 3]
    return directory, factors(model), restart, probe


def test_resume_mid_epoch_gives_the_uninterrupted_run(straight, tmp_path):
    # resume_from_checkpoint=True (the newest checkpoint of output_dir) at step 6: after resume
    # the callback's restart count, loss window, kept ranks and current-epoch losses are those
    # of the uninterrupted run at step 6; the RESTART after epoch 3 then sees the same mean loss
    # and draws the same noise (restart index 1), so every factor ends bit-identical.
    directory, expected, straight_restart, straight_probe = straight
    at_checkpoint = straight_probe.at_save[6]
    assert at_checkpoint["restart_count"] == 1 and at_checkpoint["loss_window"] == []
    assert at_checkpoint["state"]["epoch_loss_steps"] == 2
    assert any(rank < RANK for rank in at_checkpoint["module_ranks"].values())

    shutil.copytree(directory / "checkpoint-6", tmp_path / "checkpoint-6")
    model, restart, probe = train(tmp_path, resume=True)
    assert probe.at_begin == at_checkpoint
    assert [outcome.epoch for outcome in restart.history] == [3]
    report, straight_report = restart.history[0].report, straight_restart.history[1].report
    assert report.restart_index == straight_report.restart_index == 1
    assert report.mean_loss == straight_report.mean_loss
    assert report.module_ranks() == straight_report.module_ranks()
    assert_same_factors(factors(model), expected)


@pytest.mark.parametrize("restore_callback_states", [False, True])
def test_resume_after_the_last_restart_saves_at_the_kept_ranks(straight, tmp_path, restore_callback_states):
    # Resuming from an explicit checkpoint path at step 18 (no RESTART left to run): the hook
    # holds the ranks kept by the RESTART after epoch 3, and save_peft exports at those ranks.
    # The callback the user holds is the one restored, whether or not the Trainer restores
    # callback states itself (restore_callback_states_from_checkpoint).
    directory, expected, straight_restart, straight_probe = straight
    model, restart, probe = train(tmp_path / "run", resume=str(directory / "checkpoint-18"),
                                  restore_callback_states=restore_callback_states)
    assert probe.at_begin == straight_probe.at_save[18]
    assert restart.history == [] and restart.hook.restart_count == 2
    assert_same_factors(factors(model), expected)
    ranks = straight_restart.hook.module_ranks()
    assert any(rank < RANK for rank in ranks.values())
    assert aclora.save_peft(model, tmp_path / "adapter", restart.hook) == ranks
    tensors, _ = read_safetensors(tmp_path / "adapter" / "adapter_model.safetensors")
    for name, kept in ranks.items():
        assert tensors[f"base_model.model.{name}.lora_A.weight"].shape[0] == kept


def test_resume_with_other_settings_is_refused(straight, tmp_path):
    # Another seed would draw other noise than the checkpoint's run: refused, naming the setting.
    directory = straight[0]
    with pytest.raises(aclora.Error, match="seed = 7.*has 8"):
        train(tmp_path, resume=str(directory / "checkpoint-6"), seed=8)


def test_resume_from_a_checkpoint_without_the_state_is_refused(straight, tmp_path):
    # A checkpoint whose trainer_state.json lacks the callback's state (saved without it, or by
    # an older aclora) is refused instead of restarting the noise keys from 0.
    checkpoint = tmp_path / "checkpoint-6"
    shutil.copytree(straight[0] / "checkpoint-6", checkpoint)
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    del trainer_state["stateful_callbacks"][STATE_KEY]
    (checkpoint / "trainer_state.json").write_text(json.dumps(trainer_state))
    with pytest.raises(aclora.Error, match="holds no state of a RestartCallback"):
        train(tmp_path, resume=True)


def test_two_callbacks_over_the_same_modules_are_refused(tmp_path):
    # Two RestartCallbacks over the same modules would RESTART them twice and share one saved
    # state: refused at train begin.
    second = aclora.RestartCallback(restart_interval=INTERVAL, seed=7, loss_scale=LOSS_SCALE)
    with pytest.raises(aclora.Error, match="two RestartCallbacks"):
        train(tmp_path, extra_callbacks=[second])
