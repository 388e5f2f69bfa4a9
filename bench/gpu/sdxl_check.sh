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
check_name=sdxl_check
default_build=/tmp/aclora-sdxl-build
source "$(dirname "$0")/common.sh"

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
