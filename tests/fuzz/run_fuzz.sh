#!/usr/bin/env bash
# Builds one libFuzzer target of tests/fuzz and runs it.
#
#   tests/fuzz/run_fuzz.sh [TARGET] [SECONDS] [extra libFuzzer flags...]
#
# TARGET (default: safetensors) names tests/fuzz/TARGET_fuzz.cpp (or
# fuzz_TARGET.cpp); targets now: safetensors, json, lora_detect. Its seeds
# are tests/fuzz/corpus/TARGET/ (read only) and tests/fuzz/TARGET.dict is
# used when present. To add a target, add TARGET_fuzz.cpp (+ corpus/TARGET/,
# + TARGET.dict); nothing else changes. SECONDS defaults to 60.
#
# Environment: CXX_FUZZ (default clang++-14), FUZZ_BUILD_DIR (default
# <repo>/build-fuzz, ignored by git). The growing corpus goes to
# FUZZ_BUILD_DIR/corpus/TARGET, crash/timeout inputs to
# FUZZ_BUILD_DIR/artifacts/TARGET/. Exit status: libFuzzer's (0 = no crash).
set -euo pipefail

target="${1:-safetensors}"
seconds="${2:-60}"
shift $(( $# < 2 ? $# : 2 ))

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
build="${FUZZ_BUILD_DIR:-${root}/build-fuzz}"
cxx="${CXX_FUZZ:-clang++-14}"

source_file="${here}/${target}_fuzz.cpp"
if [[ ! -f "${source_file}" && -f "${here}/fuzz_${target}.cpp" ]]; then
  source_file="${here}/fuzz_${target}.cpp"  # the other naming in use (fuzz_lora_detect.cpp)
fi
seeds="${here}/corpus/${target}"
if [[ ! -f "${source_file}" ]]; then
  echo "run_fuzz.sh: no fuzz target ${here}/${target}_fuzz.cpp or fuzz_${target}.cpp" >&2
  exit 2
fi

mkdir -p "${build}/corpus/${target}" "${build}/artifacts/${target}"
binary="${build}/${target}_fuzz"
echo "== building ${binary}"
"${cxx}" -std=c++20 -O1 -g -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"${root}/include" -I"${root}/adapters/include" \
  "${source_file}" -o "${binary}"

args=(-max_total_time="${seconds}" -print_final_stats=1 -timeout=10 -max_len=16384
      -artifact_prefix="${build}/artifacts/${target}/")
if [[ -f "${here}/${target}.dict" ]]; then
  args+=(-dict="${here}/${target}.dict")
fi
corpora=("${build}/corpus/${target}")
if [[ -d "${seeds}" ]]; then
  corpora+=("${seeds}")
fi

echo "== ${binary} ${args[*]} $* ${corpora[*]}"
exec "${binary}" "${args[@]}" "$@" "${corpora[@]}"
