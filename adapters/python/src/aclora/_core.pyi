"""Type stub of aclora._core, the C++ extension (csrc/module.cpp). Use the aclora package."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch

__version__: str
torch_build_version: str

class Schedule:
    """When RESTART runs and how strict it is: N total epochs, a RESTART every E epochs."""

    def __init__(self, total_epochs: int = 100, restart_interval: int = 10) -> None: ...
    @property
    def total_epochs(self) -> int: ...
    @property
    def restart_interval(self) -> int: ...
    def alpha(self, epoch: int) -> float:
        """alpha(e) = 1 + e / (N - 1), 1 when N = 1. Raises aclora.Error for e outside [0, N)."""
    def due(self, epoch: int) -> bool:
        """True when a RESTART follows epoch e's training: e % E == 0."""
    def threshold(self, mean_loss: float, epoch: int) -> float:
        """p = 1 - L^alpha(e), clamped to [0, 1]."""

def threshold_from_loss(mean_loss: float, alpha: float) -> float:
    """p = 1 - L^alpha clamped to [0, 1]. Raises aclora.Error unless L is finite and > 0."""

class LossWindow:
    """The per-epoch losses recorded since the last RESTART; their mean is L."""

    def __init__(self) -> None: ...
    def record(self, loss: float) -> None:
        """Adds one epoch's loss. Raises aclora.Error when it is not finite."""
    def mean(self) -> float:
        """Their arithmetic mean. Raises aclora.Error when none was recorded."""
    def clear(self) -> None: ...
    def __len__(self) -> int: ...

_LayerTuple = Tuple[int, int, str, int, torch.Tensor, float, float]
_ModuleTuple = Tuple[str, int, int, int, List[_LayerTuple]]
_ReportTuple = Tuple[int, float, float, float, List[_ModuleTuple]]
_LoraInput = Tuple[str, torch.Tensor, torch.Tensor]

class Restart:
    """aclora::Restart<aclora::backends::TorchBackend>; the report comes back as tuples."""

    def __init__(self, seed: int, noise: str, min_rank: int, chunk_elements: int) -> None: ...
    def scheduled(self, modules: Sequence[_LoraInput], total_epochs: int, epoch: int, mean_loss: float) -> _ReportTuple: ...
    def at_threshold(self, modules: Sequence[_LoraInput], threshold: float) -> _ReportTuple: ...
    restart_count: int
    @property
    def seed(self) -> int: ...
    @property
    def noise(self) -> str: ...
    @property
    def min_rank(self) -> int: ...
    @property
    def last_core_seconds(self) -> float: ...

def factors_at_rank(name: str, down: torch.Tensor, up: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]: ...
def update_singular_values(name: str, down: torch.Tensor, up: torch.Tensor) -> List[float]: ...
def write_lora(
    format: str,
    modules: Sequence[Tuple[str, str, str, torch.Tensor, torch.Tensor, float, int]],
    path: str,
    dtype: str,
    metadata: Dict[str, str],
    title: str,
    sdxl: bool,
    uniform_alpha: bool,
) -> None: ...
def kohya_name(component: str, path: str) -> Optional[str]: ...
