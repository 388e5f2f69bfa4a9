#!/usr/bin/env bash
# aclora-sdxl sample on the tiny fixture model: the diffusers folder and the single file
# give the same PNG for the same seed; a LoRA changes it; bad input fails with one line
# and leaves no file.
#   sample_cli_test.sh ACLORA_SDXL_EXECUTABLE FIXTURES_DIR
set -euo pipefail
exe=$1
fixtures=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--prompt "a photo of a cat" --steps 3 --size 64x64 --seed 11)

"$exe" sample --model "$fixtures/sdxl/tiny-sdxl" "${common[@]}" -o "$work/folder.png"
"$exe" sample --model "$fixtures/sdxl/tiny_sdxl_single_file.safetensors" \
  --config "$fixtures/sdxl/tiny-sdxl" "${common[@]}" -o "$work/single.png"
cmp "$work/folder.png" "$work/single.png"
echo "folder and single file: same PNG"

"$exe" sample --model "$fixtures/sdxl/tiny-sdxl" "${common[@]}" \
  --lora "$fixtures/lora/kohya.safetensors:0.7" -o "$work/lora.png" 2>"$work/lora.log"
grep -q "modules applied, 0 unmatched" "$work/lora.log"
if cmp -s "$work/folder.png" "$work/lora.png"; then
  echo "the LoRA did not change the image" >&2
  exit 1
fi
echo "with a LoRA: a different PNG"

# A LoRA file given as the model: one-line error, exit 1, no output.
if "$exe" sample --model "$fixtures/lora/kohya.safetensors" "${common[@]}" \
  -o "$work/bad.png" 2>"$work/bad.log"; then
  echo "a LoRA file was accepted as a model" >&2
  exit 1
fi
[[ $(wc -l <"$work/bad.log") -eq 1 && ! -e $work/bad.png ]]
echo "LoRA as model: $(cat "$work/bad.log")"

# A missing option: usage error, exit 2.
set +e
"$exe" sample --model "$fixtures/sdxl/tiny-sdxl" -o "$work/x.png" 2>/dev/null
[[ $? -eq 2 && ! -e $work/x.png ]]
