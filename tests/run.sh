#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds everything (Release) in
# ./build (or $ACLORA_BUILD_DIR) and runs ctest. Extra arguments go to ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ACLORA_BUILD_DIR:-$root/build}
jobs=$(nproc)

bash "$root/cmake/install-debian-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
