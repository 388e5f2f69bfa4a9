#!/usr/bin/env bash
# Records what tests/sdxl/test_lora_training.cpp (ExportsMatchTheRecordedLoadCheck) compares
# against: the LoRAs the training layer exports from the tiny SDXL model (kohya at per-module
# K and at full rank, diffusers, PEFT), and their load check with diffusers' load_lora_weights +
# fuse_lora and PEFT's PeftModel (tests/fixtures/make_lora_fixtures.py --check), into
# tests/sdxl/data/train_export. Run by hand (needs the Python venv of the fixture script);
# CI reads only the recorded files.
#
# Usage: tests/sdxl/record_train_export.sh TEST_SDXL_EXECUTABLE [PYTHON]
set -euo pipefail
test_sdxl="$1"
python="${2:-/work/venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/data/train_export"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ACLORA_RECORD_TRAIN_EXPORT="$work/export" "$test_sdxl" \
  --gtest_filter='LoraTraining.ExportsMatchTheRecordedLoadCheck'
mkdir -p "$work/files"
cp "$work/export"/*.safetensors "$work/files/"
cp -r "$work/export/train_peft" "$work/peft"
status=0
for dir in files peft; do
  HF_HUB_OFFLINE=1 "$python" "$root/tests/fixtures/make_lora_fixtures.py" --check "$work/$dir" || status=1
done
rm -rf "$out"
mkdir -p "$out"
cp -r "$work/export"/* "$out/"
"$python" - "$work/files/load_check.json" "$work/peft/load_check.json" "$out/load_check.json" <<'PY'
import json, sys
files, peft, target = sys.argv[1:4]
results = json.load(open(files))["results"] + json.load(open(peft))["results"]
json.dump({"all_ok": all(r.get("ok") for r in results), "results": results},
          open(target, "w"), indent=1, sort_keys=True)
PY
exit $status
