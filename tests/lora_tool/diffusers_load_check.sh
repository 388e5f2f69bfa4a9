#!/usr/bin/env bash
# Loads files written by aclora-lora back with the reference libraries (diffusers'
# load_lora_weights + fuse, PEFT's PeftModel, sd-scripts-style kohya key checks) through
# tests/fixtures/make_lora_fixtures.py --check, and records the outcome in
# tests/lora_tool/data/load_check_*.json. Run by hand (needs the Python venv of the fixture
# script); CI reads only the recorded JSON.
#
# Usage: tests/lora_tool/diffusers_load_check.sh ACLORA_LORA_EXECUTABLE [PYTHON]
set -euo pipefail
tool="$1"
python="${2:-/work/venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="$root/tests/fixtures/lora"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/files" "$work/peft_convert" "$work/peft_resize" "$here/data"

# kohya and diffusers files: conversions of every fixture layout, and resized files.
for source in kohya.safetensors diffusers.safetensors diffusers_old.safetensors peft; do
  stem="${source%.safetensors}"
  "$tool" convert "$fixtures/$source" -o "$work/files/convert_${stem}_to_kohya.safetensors" --to kohya
  "$tool" convert "$fixtures/$source" -o "$work/files/convert_${stem}_to_diffusers.safetensors" --to diffusers
done
# resize and restart write one alpha for all kohya modules by default (diffusers 0.42
# mis-scales kohya files whose alpha varies per module: the per-module variant records it).
"$tool" resize "$fixtures/kohya.safetensors" -o "$work/files/resize_energy1_kohya.safetensors" --energy 1
"$tool" resize "$fixtures/kohya.safetensors" -o "$work/files/resize_energy1_kohya_per_module_alpha.safetensors" \
  --energy 1 --per-module-alpha
"$tool" convert "$fixtures/kohya.safetensors" -o "$work/files/convert_kohya_to_kohya_uniform_alpha.safetensors" \
  --to kohya --uniform-alpha
"$tool" resize "$fixtures/kohya.safetensors" -o "$work/files/resize_rank3_diffusers.safetensors" --rank 3 --to diffusers
# F16 output: factors rounded once, alphas stored as F16 like every other tensor.
"$tool" resize "$fixtures/kohya.safetensors" -o "$work/files/resize_energy1_kohya_f16.safetensors" \
  --energy 1 --dtype f16
"$tool" resize "$fixtures/kohya.safetensors" -o "$work/files/resize_rank3_diffusers_f16.safetensors" \
  --rank 3 --to diffusers --dtype f16
"$tool" restart "$fixtures/kohya.safetensors" -o "$work/files/restart_kohya.safetensors" \
  --loss 0.1 --epoch 4 --epochs 10 --seed 1

# PEFT folders (one adapter per component).
"$tool" convert "$fixtures/kohya.safetensors" -o "$work/peft_convert_out" --to peft
mv "$work/peft_convert_out"/* "$work/peft_convert/"
"$tool" resize "$fixtures/diffusers.safetensors" -o "$work/peft_resize_out" --energy 1 --to peft
mv "$work/peft_resize_out"/* "$work/peft_resize/"

status=0
for dir in files peft_convert peft_resize; do
  HF_HUB_OFFLINE=1 "$python" "$root/tests/fixtures/make_lora_fixtures.py" --check "$work/$dir" || status=1
  cp "$work/$dir/load_check.json" "$here/data/load_check_$dir.json"
done
exit $status
