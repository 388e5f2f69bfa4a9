#!/usr/bin/env bash
# Writes the fixed TensorBoard sample with our writer, reads it with TensorBoard's
# EventAccumulator (tests/fixtures/make_tensorboard_fixture.py --check) and compares with
# the committed read-back. Exit 77 (ctest: skipped) when tensorboard cannot be imported.
#
# Usage: tensorboard_readback_test.sh WRITE_TENSORBOARD_SAMPLE FIXTURE_SCRIPT EXPECTED_JSON
# The Python interpreter is $ACLORA_PYTHON, or python3.
set -euo pipefail
writer="$1"
script="$2"
expected="$3"
python="${ACLORA_PYTHON:-python3}"

if ! "$python" -c "import tensorboard" >/dev/null 2>&1; then
  echo "skipped: $python cannot import tensorboard (pip install tensorboard)"
  exit 77
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$("$writer" "$work/run")"
"$python" "$script" --check "$expected" "$file"
