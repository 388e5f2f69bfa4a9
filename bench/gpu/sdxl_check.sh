#!/usr/bin/env bash
# SDXL timings on a GPU machine (H200 expected) with LibTorch 2.x from python3's torch
# package; no network needed.
#
#   bench/gpu/sdxl_check.sh OUT_DIR [--build-only] [--build-dir DIR]
#
# Builds bench_sdxl (Release, against torch.utils.cmake_prefix_path), then measures with
# random weights at full SDXL size in bf16: one 1024x1024 UNet forward, one forward +
# backward with gradient checkpointing and a rank-64 LoRA on the 722 Transformer2D
# linears, and a 30-step guided sample with decoding: seconds and peak GPU memory, in
# OUT_DIR/sdxl.json and OUT_DIR/summary.txt. Needs ICU, zlib and libpng headers (the
# tokenizer and the PNG writer); --build-only stops after the build (no GPU needed).
set -uo pipefail

usage() {
  echo "usage: $0 OUT_DIR [--build-only] [--build-dir DIR]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
out=$1
shift
build_only=0
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ACLORA_DEVICE_BUILD_DIR:-/tmp/aclora-sdxl-build}
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-only) build_only=1 ;;
    --build-dir)
      [[ $# -ge 2 ]] || usage
      build=$2
      shift
      ;;
    *) usage ;;
  esac
  shift
done
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
start=$(date +%s)
note() { echo "$*" | tee -a "$summary"; }
fail() {
  note "sdxl_check: $*"
  exit 1
}

if [[ $build_only -eq 0 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: no NVIDIA driver (use --build-only)"
  gpu=$(timeout 30 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1) ||
    fail "nvidia-smi failed: $gpu"
  note "GPU: $gpu"
fi

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
configure=(cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DACLORA_WITH_CUDA=OFF
  -DACLORA_BUILD_TESTS=OFF -DACLORA_BUILD_DOCS=OFF -DACLORA_INSTALL=OFF)
[[ -n $torch_prefix ]] && configure+=(-DCMAKE_PREFIX_PATH="$torch_prefix")
note "configure: ${configure[*]}"
timeout 180 "${configure[@]}" >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; fail "configure failed (log: $out/configure.log)"; }
timeout 420 cmake --build "$build" --target bench_sdxl -j "${ACLORA_JOBS:-16}" >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; fail "build failed (log: $out/build.log)"; }
note "built bench_sdxl after $(($(date +%s) - start)) s"
[[ $build_only -eq 1 ]] && exit 0

timeout 300 "$build/bench/sdxl/bench_sdxl" --device cuda --dtype bf16 --size 1024 --steps 30 \
  --rank 64 --tokenizer "$root/tests/fixtures/tokenizer/bpe_simple_vocab_16e6.txt.gz" \
  --out "$out/sdxl.json" 2>&1 | tee "$out/bench_sdxl.log" | tee -a "$summary"
status=${PIPESTATUS[0]}
note "sdxl_check finished in $(($(date +%s) - start)) s, status $status"
exit "$status"
