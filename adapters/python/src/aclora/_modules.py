"""LoRA modules: what RESTART rewrites, found in PEFT models, diffusers models or given by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from aclora import _core
from aclora._error import Error

#: The components of an SDXL pipeline, as the LoRA file writers name them.
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@dataclass(frozen=True, eq=False)
class LoraModule:
    """One LoRA module: dW = (alpha / R) * up @ down.

    ``down`` and ``up`` are the parameters themselves (not copies): down [R, in] or
    [R, in, kh, kw], up [out, R] or [out, R, 1, 1]. RESTART writes into them.
    """

    name: str
    """identifies the module in reports and errors, and keys its noise (unique; may be empty)."""
    down: torch.Tensor
    """A: [R, in] (Linear, Embedding) or [R, in, kh, kw] (Conv)."""
    up: torch.Tensor
    """B: [out, R] or [out, R, 1, 1]."""
    path: str = ""
    """the layer's dotted path in its model (PEFT: relative to the base model)."""
    component: str = "unet"
    """the model it adapts, for the kohya / diffusers files: unet, text_encoder, text_encoder_2."""
    adapter: str = ""
    """the PEFT adapter name, when it comes from PEFT."""
    alpha: Optional[float] = None
    """effective alpha: dW = alpha / R * up @ down (None: alpha = R)."""

    @property
    def rank(self) -> int:
        """R, the allocated rank."""
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """alpha / R."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


#: What Restart, RestartHook and the savers accept as modules.
ModulesLike = Union[
    Sequence[LoraModule],
    Mapping[str, Tuple[torch.Tensor, torch.Tensor]],
    Mapping[str, LoraModule],
    Sequence[Tuple[str, torch.Tensor, torch.Tensor]],
    Sequence[Tuple[torch.Tensor, torch.Tensor]],
]


def modules_from_mapping(mapping: Mapping[str, Any]) -> List[LoraModule]:
    """Modules from a plain mapping name -> (down, up) (or name -> LoraModule)."""
    modules = []
    for name, pair in mapping.items():
        if not isinstance(name, str):
            raise TypeError(f"aclora: module names must be str, got {type(name).__name__}")
        if isinstance(pair, LoraModule):
            modules.append(pair)
            continue
        try:
            down, up = pair
        except (TypeError, ValueError):
            raise TypeError(f"aclora: module '{name}': expected a pair (down, up)") from None
        modules.append(LoraModule(name, _tensor(down, name, "down"), _tensor(up, name, "up"), path=name))
    return modules


def as_modules(modules: ModulesLike) -> List[LoraModule]:
    """Any accepted form of a module list as a list of LoraModule (the tensors are not copied):
    LoraModule items, a mapping name -> (down, up), (name, down, up) triples or unnamed
    (down, up) pairs (unnamed modules are keyed by their position)."""
    if isinstance(modules, Mapping):
        return modules_from_mapping(modules)
    if isinstance(modules, (torch.Tensor, str)) or not isinstance(modules, Iterable):
        raise TypeError(
            "aclora: modules must be a list of aclora.LoraModule, a mapping name -> (down, up), "
            f"or a list of (name, down, up) / (down, up); got {type(modules).__name__}"
        )
    out: List[LoraModule] = []
    for position, item in enumerate(modules):
        if isinstance(item, LoraModule):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str):
            name, down, up = item
            out.append(LoraModule(name, _tensor(down, name, "down"), _tensor(up, name, "up"), path=name))
        elif isinstance(item, tuple) and len(item) == 2:
            label = f"#{position}"
            out.append(LoraModule("", _tensor(item[0], label, "down"), _tensor(item[1], label, "up")))
        else:
            raise TypeError(
                f"aclora: module #{position}: expected aclora.LoraModule, (name, down, up) or "
                f"(down, up), got {type(item).__name__}"
            )
    return out


def _tensor(value: Any, name: str, role: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"aclora: module '{name}': {role} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _naming_function(naming: Union[str, Callable[[str], str]], component: str) -> Callable[[str], str]:
    if callable(naming):
        return naming
    if naming == "peft":
        return lambda path: path
    if naming == "kohya":

        def kohya(path: str) -> str:
            name = _core.kohya_name(component, path)
            if name is None:
                raise Error(
                    f"aclora: layer '{path}' has no kohya name for component '{component}' (not a "
                    "path of the SDXL UNet tree); pass naming='peft' or a function"
                )
            return name

        return kohya
    raise Error(f"aclora: naming must be 'peft', 'kohya' or a function, got {naming!r}")


def _lora_layers(model: nn.Module) -> Iterable[Tuple[str, Any]]:
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        if isinstance(lora_a, nn.ModuleDict) and isinstance(lora_b, nn.ModuleDict):
            yield name, module


def _adapters_of(layer: Any) -> List[str]:
    names = list(layer.lora_A.keys())
    embedding = getattr(layer, "lora_embedding_A", None)
    if isinstance(embedding, nn.ParameterDict):
        names += [name for name in embedding.keys() if name not in names]
    return names


def _active_adapters(model: nn.Module, layers: List[Tuple[str, Any]]) -> List[str]:
    owners: List[Any] = [model, *(layer for _, layer in layers)]
    for owner in owners:
        active = getattr(owner, "active_adapters", None)
        if callable(active):  # diffusers' ModelMixin.active_adapters() is a method
            try:
                active = active()
            except Exception:  # noqa: BLE001 (not a PEFT-backed model)
                active = None
        if isinstance(active, str):
            return [active]
        if isinstance(active, (list, tuple)) and active:
            return list(active)
    return []


def _choose_adapter(model: nn.Module, layers: List[Tuple[str, Any]], adapter_name: Optional[str]) -> str:
    present: List[str] = []
    for _, layer in layers:
        present += [name for name in _adapters_of(layer) if name not in present]
    if adapter_name is not None:
        if adapter_name not in present:
            raise Error(f"aclora: adapter '{adapter_name}' not found; the model has {present}")
        return adapter_name
    if len(present) == 1:
        return present[0]
    active = [name for name in _active_adapters(model, layers) if name in present]
    if len(active) == 1:
        return active[0]
    raise Error(f"aclora: the model has the LoRA adapters {present}; choose one with adapter_name=")


def _strip_peft_prefix(path: str) -> str:
    for prefix in ("base_model.model.",):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def _discover(
    model: nn.Module,
    adapter_name: Optional[str],
    naming: Union[str, Callable[[str], str]],
    component: str,
) -> List[LoraModule]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"aclora: expected a torch.nn.Module, got {type(model).__name__}")
    if component not in COMPONENTS:
        raise Error(f"aclora: component must be one of {COMPONENTS}, got {component!r}")
    name_of = _naming_function(naming, component)
    layers = list(_lora_layers(model))
    if not layers:
        raise Error(
            f"aclora: no LoRA layer (PEFT lora_A / lora_B) in {type(model).__name__}; add the "
            "adapter first (peft.get_peft_model, or unet.add_adapter for diffusers)"
        )
    adapter = _choose_adapter(model, layers, adapter_name)
    modules: List[LoraModule] = []
    names: Dict[str, str] = {}
    for qualified, layer in layers:
        path = _strip_peft_prefix(qualified)
        if getattr(layer, "use_dora", {}).get(adapter, False):
            raise Error(f"aclora: layer '{path}' uses DoRA; RESTART supports plain LoRA factors only")
        embedding = getattr(layer, "lora_embedding_A", None)
        if adapter in layer.lora_A:
            down = layer.lora_A[adapter].weight
            up = layer.lora_B[adapter].weight
        elif isinstance(embedding, nn.ParameterDict) and adapter in embedding:
            down = embedding[adapter]
            up = layer.lora_embedding_B[adapter]
        else:
            continue  # this layer has other adapters only
        rank = int(down.shape[0])
        scaling = getattr(layer, "scaling", {}).get(adapter, 1.0)
        name = name_of(path)
        if name in names:
            raise Error(f"aclora: layers '{names[name]}' and '{path}' get the same module name '{name}'")
        names[name] = path
        modules.append(LoraModule(name, down, up, path, component, adapter, float(scaling) * rank))
    if not modules:
        raise Error(f"aclora: no LoRA layer holds adapter '{adapter}'")
    return modules


def modules_from_peft(
    model: nn.Module,
    adapter_name: Optional[str] = None,
    *,
    naming: Union[str, Callable[[str], str]] = "peft",
    component: str = "unet",
) -> List[LoraModule]:
    """Every LoRA pair of a PEFT model (peft.PeftModel or a model with PEFT LoRA layers
    injected): lora_A / lora_B of Linear, Conv and Embedding layers, in named_modules() order.

    Args:
        model: the model.
        adapter_name: the adapter to take; default: the only one, else the only active one.
        naming: "peft" (default): the layer's path relative to the base model, as the keys of
            PEFT's adapter_model.safetensors have it ("base_model.model." + path); "kohya": the
            kohya name of `component` (lora_unet_... for the SDXL UNet tree, lora_te1_ /
            lora_te2_ for the text encoders); or a function path -> name.
        component: the model the adapter belongs to, for kohya names and kohya / diffusers files.

    Raises:
        aclora.Error: no LoRA layer, several adapters and none chosen, DoRA layers, or two
            layers with one name.
    """
    return _discover(model, adapter_name, naming, component)


def modules_from_diffusers(
    model: nn.Module,
    component: str = "unet",
    *,
    adapter_name: Optional[str] = None,
    naming: Union[str, Callable[[str], str]] = "kohya",
) -> List[LoraModule]:
    """The LoRA pairs of a diffusers model with a PEFT-backed adapter (unet.add_adapter(...) in
    diffusers' training scripts; text encoders likewise), named as the kohya files name them
    (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q for the SDXL UNet), which is
    also how aclora's C++ training layer names them: the same seed gives the same noise.

    Args:
        model: UNet2DConditionModel (or a text encoder) with a LoRA adapter.
        component: "unet", "text_encoder" or "text_encoder_2".
        adapter_name: as for modules_from_peft.
        naming: "kohya" (default), "peft" (dotted diffusers paths) or a function path -> name.

    Raises:
        aclora.Error: as modules_from_peft; with kohya naming also a UNet path that has no
            LDM-tree equivalent.
    """
    return _discover(model, adapter_name, naming, component)


def module_parameters(modules: Sequence[LoraModule]) -> List[torch.Tensor]:
    """Every factor, down then up per module (the tensors an optimizer holds)."""
    out: List[torch.Tensor] = []
    for module in modules:
        out.append(module.down)
        out.append(module.up)
    return out
