#!/usr/bin/env bash
# SDXL timings on a GPU machine (H200 expected) with nvcc 13, a CMake from PyPI and a PyPI
# torch 2.x; no network needed. The other libraries (ICU for the tokenizer, zlib, libpng,
# libjpeg, libwebp, toml++, cairo) come from the folder of bench/gpu/prepare_deps.sh (--deps),
# or the system.
#
#   bench/gpu/sdxl_check.sh OUT_DIR [--build-only] [--build-dir DIR] [--deps DIR] [--deps-only]
#
# Builds bench_sdxl (Release, against the python's torch; see common.sh for the toolchain and
# the options), then measures with random weights at full SDXL size in bf16: one 1024x1024
# UNet forward, one training step (forward + backward with gradient checkpointing, AdamW) with
# rank-64 and rank-128 LoRAs on the 722 Transformer2D linears with the RESTART share of an
# epoch, and a 30-step guided sample with decoding: seconds and peak GPU
# memory, in OUT_DIR/sdxl.json and OUT_DIR/summary.txt. Multi-GPU mode (bench_data_parallel
# under torchrun, NCCL): data-parallel rank-64 LoRA steps (batch 1 per GPU) at 1, 2, 4 and 8
# GPUs, as many as the machine has: seconds per step, the gradient sum's share, samples per
# second, scaling efficiency against 1 GPU, the RESTART and the factor check, in
# OUT_DIR/data_parallel.jsonl and the summary. --build-only stops after the build (no
# GPU needed; see bench/gpu/README.md for the dry run). Environment: ACLORA_PYTHON (python3),
# CMAKE, ACLORA_GPU_DEPS (--deps), ACLORA_CUDA_ARCH, ACLORA_JOBS (16), ACLORA_BUILD_TIMEOUT
# (420 s), ACLORA_DEVICE_BUILD_DIR.
check_name=sdxl_check
default_build=/tmp/aclora-sdxl-build
source "$(dirname "$0")/common.sh"

configure=("${cmake[@]}" -S "$root" -B "$build" "${configure_common[@]}" -DACLORA_WITH_CUDA=OFF
  -DACLORA_BUILD_TESTS=OFF)
note "configure: ${configure[*]}"
timeout 300 "${configure[@]}" >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; fail "configure failed (log: $out/configure.log)"; }
timeout "${ACLORA_BUILD_TIMEOUT:-420}" "${cmake[@]}" --build "$build" --target bench_sdxl \
  bench_data_parallel \
  -j "${ACLORA_JOBS:-16}" >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; fail "build failed (log: $out/build.log)"; }
note "built bench_sdxl and bench_data_parallel after $(($(date +%s) - start)) s"
[[ $build_only -eq 1 ]] && exit 0

timeout 300 "$build/bench/sdxl/bench_sdxl" --device cuda --dtype bf16 --size 1024 --steps 30 \
  --ranks 64,128 --tokenizer "$root/tests/fixtures/tokenizer/bpe_simple_vocab_16e6.txt.gz" \
  --out "$out/sdxl.json" 2>&1 | tee "$out/bench_sdxl.log" | tee -a "$summary"
status=${PIPESTATUS[0]}

# Multi-GPU mode.
gpus=$(nvidia-smi -L | grep -c '^GPU')
: >"$out/data_parallel.jsonl"
for processes in 1 2 4 8; do
  ((processes > gpus)) && break
  timeout 300 "$python" -m torch.distributed.run --standalone --nproc-per-node "$processes" \
    --no-python "$build/bench/sdxl/bench_data_parallel" --config sdxl --device cuda \
    --dtype bf16 --size 1024 --batch 1 --rank 64 --steps 10 --warmup 2 \
    >"$out/data_parallel_$processes.log" 2>&1 || status=1
  grep -o '{"program":"bench_data_parallel".*}' "$out/data_parallel_$processes.log" \
    >>"$out/data_parallel.jsonl"
done
"$python" - "$out/data_parallel.jsonl" <<'SUMMARY' | tee -a "$summary"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
one = next((r for r in rows if r["processes"] == 1), None)
for r in rows:
    efficiency = one["median_seconds_per_step"] / r["median_seconds_per_step"] if one else float("nan")
    print(f"data parallel {r['processes']} GPU(s): {r['median_seconds_per_step']:.3f} s/step, "
          f"gradient sum {100 * r['gradient_sum_share']:.1f} %, {r['samples_per_second']:.2f} "
          f"samples/s, scaling efficiency {100 * efficiency:.1f} %, RESTART "
          f"{r['restart_seconds']:.2f} s + factor check {r['factor_check_seconds']:.3f} s "
          f"(broadcast instead: {r['factor_broadcast_seconds']:.3f} s)")
if len(rows) < 2:
    print("data parallel: one GPU on this machine, no scaling measured")
SUMMARY
note "sdxl_check finished in $(($(date +%s) - start)) s, status $status"
exit "$status"
