#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (H200 expected), nvcc 13, a CMake from
# PyPI and a PyPI torch 2.x (its package carries LibTorch); no network needed. The other
# libraries come from the folder of bench/gpu/prepare_deps.sh (--deps), or the system.
#
#   bench/gpu/device_check.sh OUT_DIR [--build-only] [--build-dir DIR] [--deps DIR] [--deps-only]
#
# Configures (Release, the GPU's CUDA architecture, LibTorch from the python's torch; see
# common.sh for the toolchain and the options), builds only what it runs, then runs the CUDA
# tests, the CUDA and Torch conformance suites and the two RESTART benchmarks, each under
# `timeout`. Results (GoogleTest and Google Benchmark JSON, logs, summary.txt) go to OUT_DIR.
# --build-only skips the GPU check and stops after the build (for machines without a GPU:
# see bench/gpu/README.md for the dry run). Environment: ACLORA_PYTHON (python3), CMAKE,
# ACLORA_GPU_DEPS (--deps), ACLORA_CUDA_ARCH (the GPU's, else 90), ACLORA_JOBS (16),
# ACLORA_BUILD_TIMEOUT (420 s), ACLORA_PEER_STRIDE (2: peers timed on every 2nd factor,
# scaled), ACLORA_DEVICE_BUILD_DIR.
#
# Torch on CUDA: test_conformance_torch instantiates its suite for CPU tensors and for
# CUDA tensors (TorchTraits<true>), which runs whenever torch::cuda::is_available(); no
# environment variable is needed. bench_restart_torch gets --devices=cuda.
check_name=device_check
default_build=/tmp/aclora-device-build
source "$(dirname "$0")/common.sh"

# Configure and build only the targets run below.
jobs=${ACLORA_JOBS:-16}
build_timeout=${ACLORA_BUILD_TIMEOUT:-420}
# Ninja builds all targets in one parallel run; CMake's Makefiles build goals one after
# another, so without Ninja the CUDA and the Torch targets build as two parallel runs.
generator=()
if command -v ninja >/dev/null 2>&1 && [[ ! -f $build/Makefile ]]; then
  generator=(-G Ninja)
fi
configure=("${cmake[@]}" -S "$root" -B "$build" "${generator[@]}" "${configure_common[@]}"
  -DACLORA_WITH_CUDA=ON -DACLORA_BUILD_EXAMPLES=OFF -DACLORA_SANITIZED_TESTS=OFF)
note "configure: ${configure[*]}"
timeout 300 "${configure[@]}" >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; fail "configure failed (log: $out/configure.log)"; }
grep -E "aclora: CUDA architectures" "$out/configure.log" | tee -a "$summary"

# Keep going past a failing target; a target counts as built when its executable exists.
declare -A binary=(
  [test_cuda]=tests/cuda/test_cuda
  [test_conformance_cuda]=tests/cuda/test_conformance_cuda
  [bench_restart_cuda]=bench/cuda/bench_restart_cuda
  [test_conformance_torch]=tests/conformance/test_conformance_torch
  [bench_restart_torch]=bench/torch/bench_restart_torch
)
targets=(test_cuda test_conformance_cuda bench_restart_cuda test_conformance_torch bench_restart_torch)
for target in "${targets[@]}"; do rm -f "$build/${binary[$target]}"; done
cuda_group=(test_cuda test_conformance_cuda bench_restart_cuda)
torch_group=(test_conformance_torch bench_restart_torch)
if [[ -f $build/build.ninja ]]; then
  timeout "$build_timeout" "${cmake[@]}" --build "$build" --target "${targets[@]}" -j "$jobs" -- -k 0 \
    >"$out/build.log" 2>&1 || note "build reported errors (log: $out/build.log)"
else
  half=$(((jobs + 1) / 2))
  timeout "$build_timeout" "${cmake[@]}" --build "$build" --target "${cuda_group[@]}" -j "$half" -- -k \
    >"$out/build_cuda.log" 2>&1 &
  cuda_pid=$!
  timeout "$build_timeout" "${cmake[@]}" --build "$build" --target "${torch_group[@]}" -j "$half" -- -k \
    >"$out/build_torch.log" 2>&1 &
  torch_pid=$!
  wait $cuda_pid || note "CUDA targets: build reported errors (log: $out/build_cuda.log)"
  wait $torch_pid || note "Torch targets: build reported errors (log: $out/build_torch.log)"
fi
built=()
for target in "${targets[@]}"; do
  if [[ -x $build/${binary[$target]} ]]; then
    built+=("$target")
    note "built $target"
  else
    note "BUILD FAILED: $target (logs: $out/build*.log)"
  fi
done
note "build done after $(($(date +%s) - start)) s"
if [[ $build_only -eq 1 ]]; then
  [[ ${#built[@]} -eq ${#targets[@]} ]] || exit 1
  exit 0
fi

# 4. Run: each step under timeout; a failing step does not stop the others.
status=0
is_built() { [[ " ${built[*]} " == *" $1 "* ]]; }
run_step() {
  local name=$1 limit=$2
  shift 2
  if ! is_built "$name"; then
    note "SKIPPED $name (not built)"
    status=1
    return
  fi
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  local took=$(($(date +%s) - t0))
  if [[ $rc -eq 0 ]]; then
    note "PASSED $name (${took} s)"
  else
    [[ $rc -eq 124 ]] && note "TIMEOUT $name after ${limit} s" || note "FAILED $name (exit $rc, ${took} s)"
    tail -40 "$out/$name.log"
    status=1
  fi
  grep -E "^\[  (PASSED|SKIPPED|FAILED) " "$out/$name.log" | head -20 | tee -a "$summary"
}

bin=$build
run_step test_cuda 120 "$bin/${binary[test_cuda]}" --gtest_output="json:$out/test_cuda.json"
run_step test_conformance_cuda 180 "$bin/${binary[test_conformance_cuda]}" \
  --gtest_output="json:$out/test_conformance_cuda.json"
run_step test_conformance_torch 180 "$bin/${binary[test_conformance_torch]}" \
  --gtest_output="json:$out/test_conformance_torch.json"
run_step bench_restart_cuda 200 "$bin/${binary[bench_restart_cuda]}" \
  --peer_stride="${ACLORA_PEER_STRIDE:-2}" \
  --benchmark_out="$out/bench_restart_cuda.json" --benchmark_out_format=json
run_step bench_restart_torch 200 "$bin/${binary[bench_restart_torch]}" --devices=cuda \
  --per_matrix_stride="${ACLORA_PEER_STRIDE:-2}" --json_out="$out/bench_restart_torch.json"

# 5. Summary: the benchmarks' closing tables.
for name in bench_restart_cuda bench_restart_torch; do
  [[ -f $out/$name.log ]] || continue
  note "--- $name"
  grep -E "r=|device:|ms|speed" "$out/$name.log" | tail -20 | tee -a "$summary" >/dev/null
done
note "device_check finished in $(($(date +%s) - start)) s, status $status"
cat "$summary"
exit $status
