#!/usr/bin/env bash
# The main job: installs missing packages, builds example 01 (Release) in ./build
# (or $ACLORA_BUILD_DIR) and runs one AC-LoRA RESTART over an SDXL-shaped LoRA.
# Extra arguments go to the example (try --help).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ACLORA_BUILD_DIR:-$root/build}

bash "$root/cmake/install-debian-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target 01_restart_eigen -j "$(nproc)"
exec "$build/examples/01_restart_eigen/01_restart_eigen" "$@"
