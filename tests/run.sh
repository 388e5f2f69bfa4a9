#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds everything (Release) in
# ./build (or $ACLORA_BUILD_DIR), runs ctest (extra arguments go to ctest), then the Python
# package's tests (tests/python/run.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ACLORA_BUILD_DIR:-$root/build}
jobs=$(nproc)

bash "$root/cmake/install-debian-deps.sh"
# Without a GPU the CUDA programs are only compiled (their tests skip): one architecture is
# enough and compiles several times faster than the default list (cmake/AcloraTargets.cmake).
if ! nvidia-smi -L >/dev/null 2>&1; then
  export CUDAARCHS=${CUDAARCHS:-90}
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
# The Python package (adapters/python) on Debian's python3-torch.
bash "$root/tests/python/run.sh"
