#!/usr/bin/env bash
# Builds and runs the LoRA format-detection fuzzer (clang + libFuzzer + ASan + UBSan).
# Usage: tests/fuzz/run_lora_fuzz.sh [SECONDS] [BUILD_DIR]   (default 600 s, /tmp/aclora-fuzz)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-600}"
build="${2:-/tmp/aclora-fuzz}"
mkdir -p "$build/corpus_lora_detect"
clang++-14 -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/include" -I"$root/adapters/include" \
  "$here/fuzz_lora_detect.cpp" -o "$build/fuzz_lora_detect"
# The working corpus grows in $build; the committed seeds are read-only input.
"$build/fuzz_lora_detect" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
  -print_final_stats=1 "$build/corpus_lora_detect" "$here/corpus/lora_detect"
