#!/usr/bin/env bash
# The README's promise of where the tools are: every path build/.../aclora-NAME that README.md
# names runs (--version, exit status 0, "aclora-NAME VERSION"), with build/ being this build
# folder; and every tool this build made is named there. A tool this build did not make (a
# missing dependency) is skipped with a line saying so.
#   readme_tools_test.sh BUILD_DIR README NAME=BUILT_PATH...
set -euo pipefail
build=$1
readme=$2
shift 2
declare -A built=()
for pair in "$@"; do
  built[${pair%%=*}]=${pair#*=}
done

mapfile -t paths < <(grep -o 'build/[A-Za-z0-9_./-]*/aclora-[a-z]*' "$readme" | sort -u)
[[ ${#paths[@]} -gt 0 ]] || { echo "$readme names no build/.../aclora-* path" >&2; exit 1; }
failed=0
declare -A named=()
for path in "${paths[@]}"; do
  tool=${path##*/}
  named[$tool]=1
  if [[ -z ${built[$tool]:-} ]]; then
    echo "skipped: $path ($tool is not built here: a dependency is missing)"
    continue
  fi
  file=$build/${path#build/}
  if [[ ! -x $file ]]; then
    if [[ ${built[$tool]} == "$file" ]]; then
      echo "FAILED: $path: $tool is not built yet (cmake --build $build --target $tool)" >&2
    else
      echo "FAILED: $path: no executable there; this build makes $tool at ${built[$tool]}" >&2
    fi
    failed=1
    continue
  fi
  output=$("$file" --version 2>&1) || { echo "FAILED: $file --version: $output" >&2; failed=1; continue; }
  if [[ $output != "$tool "* ]]; then
    echo "FAILED: $file --version printed '$output', not '$tool VERSION'" >&2
    failed=1
    continue
  fi
  echo "ok: $path ($output)"
done
for tool in "${!built[@]}"; do
  [[ -n ${named[$tool]:-} ]] ||
    { echo "FAILED: $readme names no build/.../$tool, which this build made" >&2; failed=1; }
done
exit "$failed"
