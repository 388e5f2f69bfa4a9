# Shared start of the GPU check scripts (sourced, not run). Before sourcing, set
# `check_name` and `default_build`; afterwards the script has: $root, $out (absolute),
# $build, $build_only, $start, $summary, note, fail, $python, the CMake command ${cmake[@]},
# the configure arguments ${configure_common[@]} (build type, torch, CUDA compiler and
# architectures, the prepared folder), $nvcc, $arch and (unless --build-only) $gpu.
#   SCRIPT OUT_DIR [--build-only] [--build-dir DIR] [--deps DIR] [--deps-only]
#
# Toolchain (what the GPU machine has): a C++ compiler, nvcc 13 (CUDACXX or PATH or
# /usr/local/cuda), a CMake >= 3.25 ($CMAKE, else `cmake` on PATH, else `python -m cmake` of a
# PyPI cmake), and a python with a PyPI torch 2.x ($ACLORA_PYTHON, default python3), whose
# package carries LibTorch's headers, libraries and CMake config.
#
# --deps DIR: the folder of bench/gpu/prepare_deps.sh (or $ACLORA_GPU_DEPS): GoogleTest,
# Google Benchmark, Eigen, ICU and the image libraries, found there first. --deps-only
# ignores the system's packages (/usr, /usr/local) so that a dry run on a fully equipped
# machine proves the folder is enough.
#
# LibTorch's CMake config needs three things handled (done here): its CUDA architecture
# list follows ours (TORCH_CUDA_ARCH_LIST; its own default starts at compute_50, which nvcc 13
# refuses); programs linked against a PyPI torch must resolve the libraries of the wheel's
# nvidia/*/lib (NCCL and others) rather than the CUDA toolkit's older copies (-rpath-link);
# CMake 3.25 cannot give nvcc 13 the C++20 dialect LibTorch's config asks for (the project's
# CMake drops that request; any CMake >= 3.25 works).
set -uo pipefail

usage() {
  echo "usage: $0 OUT_DIR [--build-only] [--build-dir DIR] [--deps DIR] [--deps-only]" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
out=$1
shift
build_only=0
deps=${ACLORA_GPU_DEPS:-}
deps_only=0
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ACLORA_DEVICE_BUILD_DIR:-$default_build}
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-only) build_only=1 ;;
    --build-dir)
      [[ $# -ge 2 ]] || usage
      build=$2
      shift
      ;;
    --deps)
      [[ $# -ge 2 ]] || usage
      deps=$2
      shift
      ;;
    --deps-only) deps_only=1 ;;
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
  note "$check_name: $*"
  exit 1
}

# 1. A GPU must be visible (fail fast otherwise).
gpu=""
if [[ $build_only -eq 0 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 ||
    fail "nvidia-smi not found: no NVIDIA driver on this machine (use --build-only to only build)"
  gpu=$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1) ||
    fail "nvidia-smi failed: $gpu"
  [[ -n $gpu ]] || fail "nvidia-smi lists no GPU"
  note "GPU: $gpu"
fi

# 2. Toolchain.
cxx=${CXX:-$(command -v c++ || command -v g++ || true)}
[[ -n $cxx ]] || fail "no C++ compiler (c++ or g++, or set CXX)"
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x $nvcc ]] || fail "nvcc not found (set CUDACXX or put the CUDA toolkit's bin in PATH)"
note "nvcc: $("$nvcc" --version | tail -1)"
python=${ACLORA_PYTHON:-python3}

cmake_version_ok() {  # cmake_version_ok COMMAND...: true for CMake >= 3.25
  local version
  version=$("$@" --version 2>/dev/null | sed -n 's/^cmake version \([0-9][0-9.]*\).*/\1/p')
  [[ -n $version ]] && printf '%s\n3.25\n' "$version" | sort -V -C -r
}
if [[ -n ${CMAKE:-} ]]; then
  cmake=("$CMAKE")
elif command -v cmake >/dev/null 2>&1 && cmake_version_ok cmake; then
  cmake=(cmake)
elif cmake_version_ok "$python" -m cmake; then
  cmake=("$python" -m cmake)
else
  fail "no CMake >= 3.25: set CMAKE, or pip install cmake (for $python)"
fi
cmake_version_ok "${cmake[@]}" || fail "${cmake[*]} is older than 3.25"
note "cmake: ${cmake[*]} ($("${cmake[@]}" --version | head -1))"

# 3. torch: its CMake prefix, version, and the wheel's CUDA libraries.
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
torch_libraries=()
if [[ -n $torch_prefix ]]; then
  note "torch: $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') at $torch_prefix"
  while IFS= read -r dir; do
    [[ -n $dir ]] && torch_libraries+=("$dir")
  done < <("$python" - <<'EOF' 2>/dev/null
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
for d in sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib"))):
    print(d)
print(os.path.join(os.path.dirname(torch.__file__), "lib"))
EOF
  )
else
  note "torch: $python has no torch package; the Torch targets use whatever LibTorch CMake finds"
fi

# 4. CUDA architectures: ACLORA_CUDA_ARCH, else the GPU's (nvidia-smi), else 90 (the H200 the
# checks are made for); torch's list follows (9.0 for 90).
arch=${ACLORA_CUDA_ARCH:-}
if [[ -z $arch ]] && command -v nvidia-smi >/dev/null 2>&1; then
  arch=$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
    head -1 | tr -d ' .')
fi
[[ $arch =~ ^[0-9] ]] || arch=90
torch_arch=$(echo "$arch" | tr ';' '\n' | sed -E 's/-(real|virtual)$//; s/^([0-9]+)([0-9])$/\1.\2/' |
  paste -sd';')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$torch_arch}
note "CUDA architectures: $arch (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"

# 5. The configure arguments every check shares.
link_dirs=("${torch_libraries[@]}")
configure_common=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx"
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch"
  -DACLORA_BUILD_DOCS=OFF -DACLORA_INSTALL=OFF)
prefixes=()
if [[ -n $deps ]]; then
  [[ -d $deps/root/usr ]] || fail "--deps $deps: not a folder of bench/gpu/prepare_deps.sh"
  deps=$(cd "$deps" && pwd)
  multiarch=$(ls "$deps/root/usr/lib" | grep -- '-linux-gnu$' | head -1)
  deps_lib=$deps/root/usr/lib/$multiarch
  prefixes+=("$deps/root/usr")
  link_dirs+=("$deps_lib")
  export PKG_CONFIG_LIBDIR=$deps_lib/pkgconfig:$deps/root/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$deps_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  configure_common+=(-DPKG_CONFIG_EXECUTABLE="$deps/root/usr/bin/pkg-config")
  note "prepared folder: $deps ($(wc -l <"$deps/packages.txt") packages)"
  if [[ $deps_only -eq 1 ]]; then
    configure_common+=("-DCMAKE_SYSTEM_IGNORE_PREFIX_PATH=/usr;/usr/local")
    note "system packages ignored (--deps-only)"
  fi
elif [[ $deps_only -eq 1 ]]; then
  fail "--deps-only needs --deps DIR"
fi
[[ -n $torch_prefix ]] && prefixes+=("$torch_prefix")
if [[ ${#prefixes[@]} -gt 0 ]]; then
  configure_common+=(-DCMAKE_PREFIX_PATH="$(printf '%s;' "${prefixes[@]}" | sed 's/;$//')")
fi
if [[ ${#link_dirs[@]} -gt 0 ]]; then
  rpath_link="-Wl,-rpath-link,$(printf '%s:' "${link_dirs[@]}" | sed 's/:$//')"
  configure_common+=(-DCMAKE_EXE_LINKER_FLAGS="$rpath_link"
    -DCMAKE_SHARED_LINKER_FLAGS="$rpath_link")
fi
