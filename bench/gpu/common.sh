# Shared start of the GPU check scripts (sourced, not run). Before sourcing, set
# `check_name` and `default_build`; afterwards the script has: $root, $out (absolute),
# $build, $build_only, $start, $summary, note, fail, and (unless --build-only) $gpu.
#   SCRIPT OUT_DIR [--build-only] [--build-dir DIR]
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
build=${ACLORA_DEVICE_BUILD_DIR:-$default_build}
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
  note "$check_name: $*"
  exit 1
}

# A GPU must be visible (fail fast otherwise).
if [[ $build_only -eq 0 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 ||
    fail "nvidia-smi not found: no NVIDIA driver on this machine (use --build-only to only build)"
  gpu=$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1) ||
    fail "nvidia-smi failed: $gpu"
  [[ -n $gpu ]] || fail "nvidia-smi lists no GPU"
  note "GPU: $gpu"
fi
