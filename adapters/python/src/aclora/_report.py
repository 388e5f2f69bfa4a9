"""What one RESTART returns: RestartReport, ModuleReport, LayerReport."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

#: Rows that str(report) prints before it elides the rest.
PRINTED_MODULES = 24


@dataclass(frozen=True, eq=False)
class LayerReport:
    """Outcome for one factor of a module (layer 0: down / A, layer 1: up / B)."""

    shape: Tuple[int, int]
    """rows x cols of the factor seen as a matrix (conv down: R x in*kh*kw)."""
    axis: str
    """its rank axis: "rows" (down) or "cols" (up)."""
    signal_count: int
    """k_j: the components below the threshold p (before the union over the module)."""
    singular_values: torch.Tensor
    """before the RESTART, decreasing (float64, CPU)."""
    kept_energy_fraction: float
    """E_K / T: the share of the factor's energy in the K kept components (1 when T = 0)."""
    sigma: float
    """standard deviation of the residual, which is that of the noise added."""

    def to_dict(self) -> Dict[str, Any]:
        """The fields as plain Python values (singular values as a list)."""
        return {
            "rows": self.shape[0],
            "cols": self.shape[1],
            "axis": self.axis,
            "signal_count": self.signal_count,
            "singular_values": self.singular_values.tolist(),
            "kept_energy_fraction": self.kept_energy_fraction,
            "sigma": self.sigma,
        }


@dataclass(frozen=True, eq=False)
class ModuleReport:
    """Outcome for one module: its allocated rank R and the kept rank K."""

    name: str
    index: int
    """position in the module list."""
    allocated_rank: int
    """R."""
    module_rank: int
    """K, kept by every factor of the module."""
    layers: Tuple[LayerReport, ...]
    """(down, up)."""

    @property
    def R(self) -> int:  # noqa: N802 (the paper's symbol)
        """The allocated rank R."""
        return self.allocated_rank

    @property
    def K(self) -> int:  # noqa: N802 (the paper's symbol)
        """The kept rank K."""
        return self.module_rank

    @property
    def kept_energy(self) -> Tuple[float, ...]:
        """E_K / T per factor (down, up)."""
        return tuple(layer.kept_energy_fraction for layer in self.layers)

    @property
    def sigma(self) -> Tuple[float, ...]:
        """Noise standard deviation per factor (down, up)."""
        return tuple(layer.sigma for layer in self.layers)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as plain Python values."""
        return {
            "name": self.name,
            "index": self.index,
            "allocated_rank": self.allocated_rank,
            "module_rank": self.module_rank,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _layer_names(count: int) -> List[str]:
    return ["down", "up"] if count == 2 else [str(i) for i in range(count)]


def _number(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


@dataclass(frozen=True, eq=False)
class RestartReport:
    """Outcome of one RESTART: the threshold and, per module, what was kept.

    ``str(report)`` is a table; ``report.to_dict()`` nests plain values (JSON-ready);
    ``report.to_records()`` gives one flat dict per module (``pandas.DataFrame(records)``).
    """

    restart_index: int
    """0 for the first RESTART of a Restart object."""
    mean_loss: Optional[float]
    """L (None when the threshold was given explicitly)."""
    alpha: Optional[float]
    """alpha(e) (None when the threshold was given explicitly)."""
    threshold: float
    """p."""
    modules: Tuple[ModuleReport, ...]
    """one per module, in list order."""

    @property
    def p(self) -> float:
        """The energy threshold p."""
        return self.threshold

    def total_module_rank(self) -> int:
        """Sum of K over the modules."""
        return sum(module.module_rank for module in self.modules)

    def total_allocated_rank(self) -> int:
        """Sum of R over the modules."""
        return sum(module.allocated_rank for module in self.modules)

    def module_ranks(self) -> Dict[str, int]:
        """K per module name, in list order."""
        return {module.name: module.module_rank for module in self.modules}

    def to_dict(self) -> Dict[str, Any]:
        """The whole report as nested plain values (lists, floats, ints, str, None)."""
        return {
            "restart_index": self.restart_index,
            "mean_loss": self.mean_loss,
            "alpha": self.alpha,
            "threshold": self.threshold,
            "modules": [module.to_dict() for module in self.modules],
        }

    def to_records(self) -> List[Dict[str, Any]]:
        """One flat record per module: restart, L, alpha, p, name, index, R, K and, per factor
        (suffix _down / _up), k, kept_energy and sigma. Ready for pandas.DataFrame."""
        records = []
        for module in self.modules:
            record: Dict[str, Any] = {
                "restart": self.restart_index,
                "mean_loss": self.mean_loss,
                "alpha": self.alpha,
                "p": self.threshold,
                "name": module.name,
                "index": module.index,
                "R": module.allocated_rank,
                "K": module.module_rank,
            }
            for suffix, layer in zip(_layer_names(len(module.layers)), module.layers):
                record[f"k_{suffix}"] = layer.signal_count
                record[f"kept_energy_{suffix}"] = layer.kept_energy_fraction
                record[f"sigma_{suffix}"] = layer.sigma
            records.append(record)
        return records

    def __repr__(self) -> str:
        return (
            f"RestartReport(restart_index={self.restart_index}, p={self.threshold:.6g}, "
            f"alpha={_number(self.alpha, 6)}, mean_loss={_number(self.mean_loss, 6)}, "
            f"modules={len(self.modules)}, K={self.total_module_rank()}/"
            f"{self.total_allocated_rank()})"
        )

    def __str__(self) -> str:
        lines = [
            f"RESTART #{self.restart_index}: L = {_number(self.mean_loss)}, "
            f"alpha = {_number(self.alpha)}, p = {self.threshold:.4g}; {len(self.modules)} "
            f"modules, kept rank {self.total_module_rank()} of {self.total_allocated_rank()}"
        ]
        if not self.modules:
            return lines[0]
        width = min(60, max(len("module"), *(len(m.name) for m in self.modules)))
        lines.append(
            f"{'module':<{width}} {'R':>4} {'K':>4}  {'kept down':>9} {'kept up':>9}"
            f"  {'sigma down':>10} {'sigma up':>10}"
        )
        for module in self.modules[:PRINTED_MODULES]:
            name = module.name or f"#{module.index}"
            if len(name) > width:
                name = "..." + name[-(width - 3) :]
            kept = list(module.kept_energy) + [math.nan] * (2 - len(module.layers))
            sigma = list(module.sigma) + [math.nan] * (2 - len(module.layers))
            lines.append(
                f"{name:<{width}} {module.allocated_rank:>4} {module.module_rank:>4}"
                f"  {kept[0]:>9.4f} {kept[1]:>9.4f}  {sigma[0]:>10.3e} {sigma[1]:>10.3e}"
            )
        hidden = len(self.modules) - PRINTED_MODULES
        if hidden > 0:
            lines.append(f"... {hidden} more modules (report.to_records() has them all)")
        return "\n".join(lines)

    @staticmethod
    def _from_core(raw: tuple) -> "RestartReport":
        restart_index, mean_loss, alpha, threshold, modules = raw
        return RestartReport(
            restart_index=restart_index,
            mean_loss=None if math.isnan(mean_loss) else mean_loss,
            alpha=None if math.isnan(alpha) else alpha,
            threshold=threshold,
            modules=tuple(
                ModuleReport(
                    name=name,
                    index=index,
                    allocated_rank=allocated_rank,
                    module_rank=module_rank,
                    layers=tuple(
                        LayerReport((rows, cols), axis, count, values, kept, sigma)
                        for rows, cols, axis, count, values, kept, sigma in layers
                    ),
                )
                for name, index, allocated_rank, module_rank, layers in modules
            ),
        )
