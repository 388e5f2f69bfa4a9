"""Saving a LoRA at the rank each module kept: the product analysis of dW = up @ down
(aclora/product.hpp, computed from the factors without forming dW) refactors every module to
its K, so the file holds what was learned and no more. alpha' = alpha K / R keeps each
module's scale (alpha sqrt(K / R) with rsLoRA)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from aclora import _core
from aclora._error import Error
from aclora._modules import LoraModule, ModulesLike, as_modules, modules_from_peft

#: K per module: a mapping name -> K, a list in module order, or anything with a
#: module_ranks() method (a RestartReport, a RestartHook). None keeps R.
RanksLike = Union[Mapping[str, int], Sequence[int], Any, None]


def factors_at_rank(module: LoraModule, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(down', up') of `module` at rank K: float32 CPU tensors shaped like the factors with R
    replaced by K; up' @ down' is the best rank-K approximation of up @ down (the factors as
    they are at K = R). The module's tensors are not modified.

    Raises:
        aclora.Error: K outside [1, R], factors holding NaN or Inf, or factor shapes that
            disagree.
    """
    return _core.factors_at_rank(module.name, module.down, module.up, int(rank))


def update_singular_values(module: LoraModule) -> torch.Tensor:
    """The R singular values of dW = up @ down (without the alpha / R scale), decreasing,
    float64 on the CPU, computed from the factors without forming dW."""
    return torch.tensor(_core.update_singular_values(module.name, module.down, module.up), dtype=torch.float64)


def _resolve_ranks(modules: List[LoraModule], ranks: RanksLike) -> List[int]:
    if ranks is None:
        return [module.rank for module in modules]
    if hasattr(ranks, "module_ranks"):
        ranks = ranks.module_ranks()
    if isinstance(ranks, Mapping):
        missing = [module.name for module in modules if module.name not in ranks]
        if missing:
            raise Error(f"aclora: no rank given for module '{missing[0]}' ({len(missing)} modules lack one)")
        values = [ranks[module.name] for module in modules]
    else:
        values = list(ranks)
        if len(values) != len(modules):
            raise Error(f"aclora: {len(values)} ranks for {len(modules)} modules")
    out = []
    for module, value in zip(modules, values):
        kept = int(value)
        if not 1 <= kept <= module.rank:
            raise Error(f"aclora: module '{module.name}': rank {kept} outside [1, {module.rank}]")
        out.append(kept)
    return out


def _replace_directory(built: str, target: str) -> None:
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".old-", dir=os.path.dirname(target))
        os.rmdir(old)
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(built, target)


def save_peft(
    model: nn.Module,
    directory: Union[str, os.PathLike],
    ranks: RanksLike = None,
    *,
    adapter_name: Optional[str] = None,
) -> Dict[str, int]:
    """Saves the PEFT adapter of `model` at K per module into `directory` (adapter_model.safetensors
    + adapter_config.json, as model.save_pretrained writes them), loadable with
    peft.PeftModel.from_pretrained(base_model, directory). Modules at K < R are refactored by
    the product analysis; r / lora_alpha become the most common values and rank_pattern /
    alpha_pattern name the other modules by their full paths. The folder is built beside
    `directory` and renamed into place: nothing is left half-written.

    Args:
        model: a peft.PeftModel (or a model with a PEFT adapter and a peft_config).
        ranks: K per module (names as modules_from_peft gives them), a RestartReport or a
            RestartHook (its last K), or None (K = R: the adapter as trained).
        adapter_name: as for modules_from_peft.

    Returns:
        K per module path.

    Raises:
        aclora.Error: bad ranks, non-finite factors, a model without peft_config.
    """
    try:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file
    except ImportError as error:
        raise Error(f"aclora: save_peft needs peft and safetensors ({error})") from None
    modules = modules_from_peft(model, adapter_name)
    kept = _resolve_ranks(modules, ranks)
    adapter = modules[0].adapter
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or adapter not in configs:
        raise Error(f"aclora: the model has no peft_config for adapter '{adapter}'")
    config = copy.deepcopy(configs[adapter])
    rslora = bool(getattr(config, "use_rslora", False))
    state = get_peft_model_state_dict(model, adapter_name=adapter)

    ranks_by_path: Dict[str, int] = {}
    alphas_by_path: Dict[str, float] = {}
    for module, rank in zip(modules, kept):
        keys = None
        for down_key, up_key in (("lora_A.weight", "lora_B.weight"), ("lora_embedding_A", "lora_embedding_B")):
            prefix = f"base_model.model.{module.path}."
            if prefix + down_key in state and prefix + up_key in state:
                keys = (prefix + down_key, prefix + up_key)
                break
        if keys is None:
            raise Error(f"aclora: module '{module.name}': its factors are not in the adapter's state dict")
        down, up = factors_at_rank(module, rank)
        state[keys[0]] = down.to(module.down.dtype).contiguous()
        state[keys[1]] = up.to(module.up.dtype).contiguous()
        scaling = module.scale
        ranks_by_path[module.path] = rank
        alphas_by_path[module.path] = scaling * (rank**0.5 if rslora else rank)

    common_rank = Counter(ranks_by_path.values()).most_common(1)[0][0]
    common_alpha = Counter(alphas_by_path.values()).most_common(1)[0][0]
    config.r = common_rank
    config.lora_alpha = common_alpha
    config.rank_pattern = {path: rank for path, rank in ranks_by_path.items() if rank != common_rank}
    config.alpha_pattern = {path: alpha for path, alpha in alphas_by_path.items() if alpha != common_alpha}
    config.inference_mode = True

    target = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    built = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".tmp-", dir=parent)
    try:
        save_file({key: value.detach().cpu().contiguous() for key, value in state.items()},
                  os.path.join(built, "adapter_model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(built)
        _replace_directory(built, target)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return ranks_by_path


def save_lora(
    modules: ModulesLike,
    path: Union[str, os.PathLike],
    ranks: RanksLike = None,
    *,
    format: str = "diffusers",  # noqa: A002 (the file format's name)
    dtype: str = "F32",
    metadata: Optional[Mapping[str, str]] = None,
    title: str = "aclora",
    sdxl: bool = True,
    uniform_alpha: bool = True,
) -> Dict[str, int]:
    """Writes `modules` at K per module as one LoRA file with aclora's C++ writers (the files
    aclora-lora and the C++ training layer write), atomically:

    - "diffusers": COMPONENT.PATH.lora_A.weight / .lora_B.weight with each module's scale
      folded into lora_B, and lora_adapter_metadata (pipe.load_lora_weights loads it);
    - "kohya": NAME.lora_down.weight / .lora_up.weight / .alpha (sd-scripts, ComfyUI, A1111),
      with ss_* / modelspec.* metadata and aclora_module_ranks; one alpha for all modules
      when `uniform_alpha`. Module names must be kohya names (modules_from_diffusers gives them).

    Args:
        modules: modules_from_diffusers(unet) (and of the text encoders, concatenated).
        ranks: as for save_peft.
        dtype: "F32", "F16" or "BF16".
        metadata: ss_* / modelspec.* entries (kohya only); title: modelspec.title (kohya);
        sdxl: kohya metadata for an SDXL LoRA.

    Returns:
        K per module name.

    Raises:
        aclora.Error: bad ranks, format, dtype or component, non-finite factors, or a failed
            write (nothing is left at `path` then).
    """
    items = as_modules(modules)
    kept = _resolve_ranks(items, ranks)
    entries = [
        (module.name, module.component, module.path or module.name, module.down, module.up,
         float(module.alpha if module.alpha is not None else module.rank), rank)
        for module, rank in zip(items, kept)
    ]
    _core.write_lora(format, entries, os.fspath(path), dtype, dict(metadata or {}), title, sdxl, uniform_alpha)
    return {module.name: rank for module, rank in zip(items, kept)}
