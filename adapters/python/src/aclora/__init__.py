"""aclora: AC-LoRA's RESTART for PyTorch trainers.

The C++ RESTART of aclora's Torch backend (aclora::Restart<aclora::backends::TorchBackend>) runs in
place on the LoRA factors of a PyTorch model: every few epochs it keeps, per module, the
leading components that hold a loss-derived share p = 1 - L^alpha of each factor's energy and
replaces the rest by noise of the same variance. See docs/python.md.

    import aclora
    modules = aclora.modules_from_peft(model)                 # or modules_from_diffusers(unet)
    hook = aclora.RestartHook(modules, optimizer, total_epochs=100, restart_interval=10)
    for epoch in range(100):
        hook.end_epoch(epoch, train_one_epoch())             # RESTART after epochs 0, 10, ...
    aclora.save_peft(model, "out", hook)                      # the file at the kept ranks
"""

from typing import TYPE_CHECKING, Any

import torch

from aclora._error import Error

try:
    from aclora import _core
except ImportError as _error:  # pragma: no cover (a broken installation)
    raise ImportError(
        f"aclora: the C++ extension does not load ({_error}). It is built for one torch: "
        "reinstall aclora with the torch you use (pip install --force-reinstall adapters/python)."
    ) from _error

if _core.torch_build_version != torch.__version__:
    raise ImportError(
        f"aclora was built for torch {_core.torch_build_version} but torch {torch.__version__} is "
        "loaded; reinstall aclora (pip install --force-reinstall adapters/python) with this torch"
    )

from aclora._core import LossWindow, Schedule, threshold_from_loss  # noqa: E402
from aclora._hook import RestartHook, RestartOutcome  # noqa: E402
from aclora._modules import (  # noqa: E402
    LoraModule,
    as_modules,
    module_parameters,
    modules_from_diffusers,
    modules_from_mapping,
    modules_from_peft,
)
from aclora._optim import OptimizerPolicy, check_resettable, reset_optimizer_state  # noqa: E402
from aclora._report import LayerReport, ModuleReport, RestartReport  # noqa: E402
from aclora._restart import Restart  # noqa: E402
from aclora._save import factors_at_rank, save_lora, save_peft, update_singular_values  # noqa: E402

__version__: str = _core.__version__

if TYPE_CHECKING:
    from aclora.trainer_callback import RestartCallback

__all__ = [
    "Error",
    "LayerReport",
    "LoraModule",
    "LossWindow",
    "ModuleReport",
    "OptimizerPolicy",
    "Restart",
    "RestartCallback",
    "RestartHook",
    "RestartOutcome",
    "RestartReport",
    "Schedule",
    "as_modules",
    "check_resettable",
    "factors_at_rank",
    "module_parameters",
    "modules_from_diffusers",
    "modules_from_mapping",
    "modules_from_peft",
    "reset_optimizer_state",
    "save_lora",
    "save_peft",
    "threshold_from_loss",
    "update_singular_values",
]


def __getattr__(name: str) -> Any:
    # RestartCallback subclasses transformers.TrainerCallback: import transformers only when used.
    if name == "RestartCallback":
        from aclora.trainer_callback import RestartCallback

        return RestartCallback
    raise AttributeError(f"module 'aclora' has no attribute {name!r}")
