#!/usr/bin/env bash
# aclora-sdxl sample on the tiny fixture model: the diffusers folder and the single file
# give the same PNG for the same seed; a LoRA changes it; a folder whose tokenizers hold only
# tokenizer.json (transformers 5) gives the same PNG; a folder whose scheduler config asks for
# v-prediction is sampled with it; seeds take the whole uint64 range and are printed exactly;
# bad input fails with one line and leaves no file; a bad command line exits with status 2.
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

# A copy of the folder (links) whose tokenizer folders hold only what transformers 5 writes,
# and one whose scheduler config is v-prediction.
link_model() {  # link_model DEST: every part of tiny-sdxl but tokenizer*/ and scheduler/
  mkdir -p "$1"
  for part in "$fixtures/sdxl/tiny-sdxl"/*; do
    case $(basename "$part") in tokenizer | tokenizer_2 | scheduler) ;; *) ln -s "$part" "$1/" ;; esac
  done
}
link_model "$work/json_tokenizer"
ln -s "$fixtures/sdxl/tiny-sdxl/scheduler" "$work/json_tokenizer/scheduler"
for tok in tokenizer tokenizer_2; do
  mkdir "$work/json_tokenizer/$tok"
  cp "$fixtures/sdxl/tiny-sdxl/$tok/tokenizer.json" "$fixtures/sdxl/tiny-sdxl/$tok/tokenizer_config.json" \
    "$work/json_tokenizer/$tok/"
done
"$exe" sample --model "$work/json_tokenizer" "${common[@]}" -o "$work/json_tokenizer.png"
cmp "$work/folder.png" "$work/json_tokenizer.png"
echo "tokenizer.json only: same PNG"

link_model "$work/vpred"
ln -s "$fixtures/sdxl/tiny-sdxl/tokenizer" "$fixtures/sdxl/tiny-sdxl/tokenizer_2" "$work/vpred/"
ln -s "$fixtures/sdxl/schedulers/vpred_trailing_zsnr" "$work/vpred/scheduler"
"$exe" sample --model "$work/vpred" "${common[@]}" -o "$work/vpred.png" 2>"$work/vpred.log"
grep -q "v_prediction, trailing spacing, scaled_linear betas, zero terminal SNR" "$work/vpred.log"
if cmp -s "$work/folder.png" "$work/vpred.png"; then
  echo "the v-prediction scheduler config did not change the image" >&2
  exit 1
fi
echo "v-prediction folder: $(grep scheduler: "$work/vpred.log")"

# Seeds: 2^53 + 1 and 2^64 - 1 run and are printed exactly.
for seed in 9007199254740993 18446744073709551615; do
  "$exe" sample --model "$fixtures/sdxl/tiny-sdxl" --prompt "a cat" --steps 1 --size 16x16 \
    --seed "$seed" -o "$work/seed.png" 2>"$work/seed.log"
  grep -q "seed $seed)" "$work/seed.log"
done
echo "seeds 9007199254740993 and 18446744073709551615: run, printed exactly"

# One-line error, exit status $1, no output file.
expect_failure() {  # expect_failure STATUS PATTERN ARGS...
  local status=$1 pattern=$2
  shift 2
  set +e
  "$exe" "$@" -o "$work/bad.png" 2>"$work/bad.log"
  local got=$?
  set -e
  if [[ $got -ne $status || $(wc -l <"$work/bad.log") -ne 1 || -e $work/bad.png ]] ||
    ! grep -q -- "$pattern" "$work/bad.log"; then
    echo "expected status $status and one line with '$pattern' for: $*; got $got:" >&2
    cat "$work/bad.log" >&2
    exit 1
  fi
  echo "status $status: $(cat "$work/bad.log")"
}
expect_failure 1 "LoRA" sample --model "$fixtures/lora/kohya.safetensors" "${common[@]}"
link_model "$work/karras"
ln -s "$fixtures/sdxl/tiny-sdxl/tokenizer" "$fixtures/sdxl/tiny-sdxl/tokenizer_2" "$work/karras/"
mkdir "$work/karras/scheduler"
sed 's/"use_karras_sigmas": false/"use_karras_sigmas": true/' \
  "$fixtures/sdxl/tiny-sdxl/scheduler/scheduler_config.json" >"$work/karras/scheduler/scheduler_config.json"
expect_failure 1 "use_karras_sigmas true is not supported" sample --model "$work/karras" "${common[@]}"
expect_failure 2 "--prompt is required" sample --model "$fixtures/sdxl/tiny-sdxl"
expect_failure 2 "too large" sample --model "$fixtures/sdxl/tiny-sdxl" --prompt x --seed 18446744073709551616
expect_failure 2 "not a whole number" sample --model "$fixtures/sdxl/tiny-sdxl" --prompt x --seed 1e3
expect_failure 2 "negative" sample --model "$fixtures/sdxl/tiny-sdxl" --prompt x --steps -2
expect_failure 2 "unknown option '--rank'" sample --model "$fixtures/sdxl/tiny-sdxl" --prompt x --rank 3
"$exe" --version | grep -q "^aclora-sdxl [0-9]"
"$exe" sample --help | grep -q -- "--seed"
echo "--version and sample --help"
