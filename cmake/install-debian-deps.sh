#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages that aclora's build, tests, examples
# and docs need and that are missing. Run as root (or with sudo available).
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libeigen3-dev libtorch-dev
  # Multi-process training over Gloo (libtorch-dev's c10d headers include Gloo's), and
  # torchrun (python3-torch), which the multi-process tests launch with.
  libgloo-dev python3-torch
  # LibTorch links the system BLAS and LAPACK, the slow reference ones unless OpenBLAS is
  # installed (RESTART r = 64 over 722 modules, Torch backend: 4.10 s -> 3.45 s; ctest 200 s
  # -> 156 s on 2 cores).
  libopenblas0-pthread
  libicu-dev zlib1g-dev libpng-dev libcairo2-dev libcli11-dev
  libjpeg-dev libwebp-dev libtomlplusplus-dev
  doxygen
  # The evidence experiment's images (Fashion-MNIST, 30 MB; examples/evidence).
  dataset-fashion-mnist
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "aclora: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
