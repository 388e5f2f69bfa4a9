#!/usr/bin/env bash
# Records what tests/sdxl/train_cli_test.sh compares the trainer's LoRA against: the kohya file
# `aclora-sdxl train` writes for the tiny SDXL model and training set (the test's own run) and
# its load check with diffusers' load_lora_weights + fuse_lora (tests/fixtures/
# make_lora_fixtures.py --check), into tests/sdxl/data/trainer_export. Run by hand (needs the
# Python venv of the fixture script); CI reads only the recorded files.
#
# Usage: tests/sdxl/record_trainer_export.sh ACLORA_SDXL_EXECUTABLE [PYTHON]
set -euo pipefail
exe="$1"
python="${2:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/data/trainer_export"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$exe" train --model "$root/tests/fixtures/sdxl/tiny-sdxl" --data "$root/tests/fixtures/sdxl/train_data" \
  -o "$work/run" --resolution 32 --min-bucket-reso 32 --max-bucket-reso 64 --bucket-reso-steps 32 \
  --batch-size 4 --rank 4 --lr 3e-3 --seed 5 --no-progress --epochs 2 --restart-every 1
mkdir -p "$work/files"
cp "$work/run/lora.safetensors" "$work/files/trained_kohya.safetensors"
HF_HUB_OFFLINE=1 "$python" "$root/tests/fixtures/make_lora_fixtures.py" --check "$work/files"
rm -rf "$out"
mkdir -p "$out"
cp "$work/files/trained_kohya.safetensors" "$work/files/load_check.json" "$out/"
grep -q '"ok": true' "$out/load_check.json"
