#!/usr/bin/env bash
# The main job: installs missing packages, builds aclora-evidence (Release) in ./build
# (or $ACLORA_BUILD_DIR) and runs the evidence experiment's quick mode: AC-LoRA against a
# few fixed ranks on a real training run (Fashion-MNIST, a small pretrained SDXL-layout
# UNet), writing its page, rank picture and samples to ./evidence-quick (or -o DIR).
# Extra arguments go to `aclora-evidence run` (try --help).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ACLORA_BUILD_DIR:-$root/build}

bash "$root/cmake/install-debian-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target aclora-evidence -j "$(nproc)"
exec "$build/examples/evidence/aclora-evidence" run --quick "$@"
