#!/usr/bin/env bash
# Dry run of both GPU checks on a machine without a GPU (ours: Debian 12, 2 cores), so that
# the first run on a GPU machine is not spent on the build: prepares the folder of libraries
# into OUT_DIR/deps (prepare_deps.sh; kept when it exists), then runs device_check.sh and
# sdxl_check.sh with --build-only against that folder alone (the system's packages ignored)
# and the torch of $ACLORA_PYTHON, as the GPU machine would.
#
#   ACLORA_PYTHON=/path/to/venv/bin/python [CMAKE=/path/to/cmake] bench/gpu/dry_run.sh OUT_DIR
#
# Exit status 0 when every target of both checks built. Environment: as the checks; here
# ACLORA_JOBS defaults to 2 and ACLORA_BUILD_TIMEOUT to 7200 s.
set -uo pipefail
[[ $# -eq 1 ]] || {
  echo "usage: ACLORA_PYTHON=... $0 OUT_DIR" >&2
  exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1" || exit 1
out=$(cd "$1" && pwd)
export ACLORA_JOBS=${ACLORA_JOBS:-2}
export ACLORA_BUILD_TIMEOUT=${ACLORA_BUILD_TIMEOUT:-7200}
start=$(date +%s)
if [[ ! -f $out/deps/packages.txt ]]; then
  bash "$here/prepare_deps.sh" "$out/deps" || exit 1
fi
status=0
bash "$here/device_check.sh" "$out/device" --build-only --deps "$out/deps" --deps-only \
  --build-dir "$out/device-build" || status=1
bash "$here/sdxl_check.sh" "$out/sdxl" --build-only --deps "$out/deps" --deps-only \
  --build-dir "$out/sdxl-build" || status=1
echo "dry_run: status $status after $(($(date +%s) - start)) s (summaries: $out/device/summary.txt," \
  "$out/sdxl/summary.txt)"
exit $status
