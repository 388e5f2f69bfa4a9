"""aclora.Error: what every failure of aclora raises."""

from __future__ import annotations

from typing import Optional


class Error(RuntimeError):
    """Invalid input or a failed RESTART / save. The message names the module (its name and
    position in the list) and the layer ("down" is layer 0, "up" layer 1) when the problem is
    in one. When a RESTART raises it, no tensor and no optimizer state was modified.

    Attributes:
        reason: the problem, without the location.
        module_name: the module's name, or None when the error concerns no single module.
        module_index: its position in the module list, or None.
        layer_index: 0 (down) or 1 (up), or None.
        layer: "down", "up", or None.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: Optional[str] = None,
        module_name: Optional[str] = None,
        module_index: Optional[int] = None,
        layer_index: Optional[int] = None,
        layer: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message
        self.module_name = module_name
        self.module_index = module_index
        self.layer_index = layer_index
        self.layer = layer
