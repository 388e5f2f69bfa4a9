"""Whole-model RESTART of the SDXL UNet LoRA (722 modules, bench/common/sdxl_shapes.hpp) from
Python, in one process:

1. aclora.Restart's call overhead: the wall time of the Python call minus the time spent
   inside the C++ aclora::Restart<aclora::backends::TorchBackend> (Restart.last_core_seconds), as a
   share of the latter (target: under 5 % on the CPU);
2. aclora.Restart against the same RESTART written in plain PyTorch with torch.linalg.svd per
   factor (what a Python user writes instead), on copies of the same factors: the ratio.

Usage: python bench/python/bench_restart.py [--ranks 64] [--threads 2] [--repeats 3]
       [--attention-only] [--device cpu] [--json PATH]
Prints one table row per rank; absolute seconds are comparable only on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict, List, Tuple

import torch

import aclora

THRESHOLD = 0.9  # energy share p of every RESTART here (as bench_restart_torch)


def sdxl_unet_linears(attention_only: bool) -> List[Tuple[str, int, int, int]]:
    """(group, in_features, out_features, count) of the SDXL UNet's Transformer2D linears, as
    aclora::workload::sdxl_unet_linears (bench/common/sdxl_shapes.hpp) lists them."""
    families = []
    for channels in (640, 1280):
        blocks = 10 if channels == 640 else 60
        transformers = 5 if channels == 640 else 6
        families.append((f"{channels}.attn1.qkvo", channels, channels, 4 * blocks))
        families.append((f"{channels}.attn2.q_out", channels, channels, 2 * blocks))
        families.append((f"{channels}.attn2.k_v", 2048, channels, 2 * blocks))
        if attention_only:
            continue
        families.append((f"{channels}.ff.net.0.proj", channels, 8 * channels, blocks))
        families.append((f"{channels}.ff.net.2", 4 * channels, channels, blocks))
        families.append((f"{channels}.proj_in_out", channels, channels, 2 * transformers))
    return families


def planted_modules(rank: int, attention_only: bool, device: str) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Float32 factors whose rank-axis components decay (0.8 per component) plus a noise floor."""
    families = sdxl_unet_linears(attention_only)
    parameters = sum((n_in + n_out) * count for _, n_in, n_out, count in families)
    expected = 1_451_520 if attention_only else 2_659_840  # sdxl_shapes.hpp: parameters per rank
    assert parameters == expected, (parameters, expected)
    generator = torch.Generator().manual_seed(0)
    scale = 0.8 ** torch.arange(rank, dtype=torch.float32) + 0.05
    modules = {}
    for group, n_in, n_out, count in families:
        for index in range(count):
            down = torch.randn(rank, n_in, generator=generator) * scale[:, None] * 0.01
            up = torch.randn(n_out, rank, generator=generator) * scale[None, :] * 0.01
            modules[f"{group}.{index}"] = (down.to(device), up.to(device))
    return modules


def plain_pytorch_restart(modules, p: float, generator: torch.Generator) -> List[int]:
    """The same RESTART as a Python user writes it: torch.linalg.svd per factor (in its dtype),
    signal counts from the cumulative energy, K = max over the two factors (at least 1),
    truncation and Gaussian noise with the residual's standard deviation, in place."""
    ranks = []
    with torch.no_grad():
        for down, up in modules.values():
            plans = []
            for matrix in (down, up.t()):  # both seen as R x n
                u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
                energy = s.double() ** 2
                cumulative = torch.cumsum(energy, 0)
                count = int((cumulative < p * cumulative[-1]).sum())
                plans.append((matrix, u, s, vh, count))
            kept = max(1, max(plan[4] for plan in plans))
            for matrix, u, s, vh, _ in plans:
                truncated = (u[:, :kept] * s[:kept]) @ vh[:kept]
                sigma = (matrix - truncated).std(unbiased=False)
                noise = torch.randn(matrix.shape, generator=generator, device=matrix.device)
                matrix.copy_(truncated + sigma * noise)
            ranks.append(kept)
    return ranks


def timed(function, repeats: int, synchronize) -> List[float]:
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def run(rank: int, args) -> dict:
    device = args.device
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    modules = planted_modules(rank, args.attention_only, device)
    copies = {name: (d.clone(), u.clone()) for name, (d, u) in modules.items()}
    restart = aclora.Restart(seed=0)
    restart(modules, threshold=THRESHOLD)  # warm-up (allocator, kernels)

    # aclora and the plain-PyTorch peer alternate, so that a machine whose load changes during
    # the run slows both alike; medians over the repeats.
    generator = torch.Generator(device=device).manual_seed(0)
    python_times, core_times, plain_times = [], [], []
    for repeat in range(args.repeats):
        synchronize()
        start = time.perf_counter()
        report = restart(modules, threshold=THRESHOLD)
        synchronize()
        python_times.append(time.perf_counter() - start)
        core_times.append(restart.last_core_seconds)
        if repeat < args.plain_repeats:
            plain_times += timed(lambda: plain_pytorch_restart(copies, THRESHOLD, generator), 1, synchronize)
    overheads = [p - c for p, c in zip(python_times, core_times)]

    aclora_seconds = statistics.median(python_times)
    core_seconds = statistics.median(core_times)
    overhead_seconds = statistics.median(overheads)
    plain_seconds = statistics.median(plain_times)
    return {
        "rank": rank,
        "modules": len(modules),
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "aclora_seconds": aclora_seconds,
        "core_seconds": core_seconds,
        "overhead_seconds": overhead_seconds,
        "overhead_share": overhead_seconds / core_seconds,
        "plain_pytorch_seconds": plain_seconds,
        "speedup_over_plain_pytorch": plain_seconds / aclora_seconds,
        "kept_rank": report.total_module_rank(),
        "python_times": python_times,
        "core_times": core_times,
        "plain_times": plain_times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", default="64", help="comma-separated LoRA ranks (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed aclora RESTARTs per rank")
    parser.add_argument("--plain-repeats", type=int, default=3,
                        help="timed plain-PyTorch RESTARTs per rank (at most --repeats)")
    parser.add_argument("--attention-only", action="store_true", help="the 560 attention modules only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results as JSON to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    print(f"aclora {aclora.__version__}, torch {torch.__version__}, {args.threads} threads, p = {THRESHOLD}")
    print(f"{'rank':>4} {'modules':>7} {'aclora s':>9} {'C++ s':>8} {'overhead':>9} {'plain s':>9} "
          f"{'plain/aclora':>12}")
    for rank in (int(r) for r in args.ranks.split(",")):
        result = run(rank, args)
        results.append(result)
        print(f"{rank:>4} {result['modules']:>7} {result['aclora_seconds']:>9.3f} {result['core_seconds']:>8.3f} "
              f"{100 * result['overhead_share']:>8.2f}% {result['plain_pytorch_seconds']:>9.3f} "
              f"{result['speedup_over_plain_pytorch']:>11.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
