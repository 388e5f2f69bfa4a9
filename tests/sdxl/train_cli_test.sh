#!/usr/bin/env bash
# aclora-sdxl train on the tiny fixture model and training set, as a user runs it: the run
# folder holds the LoRA at the chosen ranks, metrics, TensorBoard events, the rank picture,
# states and sample PNGs; the LoRA has the tensors (names, dtypes, shapes) of the file whose
# loading in diffusers was recorded (tests/sdxl/data/trainer_export, made by
# record_trainer_export.sh) and loads in `aclora-sdxl sample` with every module matched and
# changes the image; --resume DIR continues that state to the same tensors; a resume with
# another setting is refused (status 1) without writing; bad options exit 2 and bad data or a
# failure inside the training exit 1, each with one line and no LoRA written.
#   train_cli_test.sh ACLORA_SDXL_EXECUTABLE FIXTURES_DIR
set -euo pipefail
exe=$1
fixtures=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=$fixtures/sdxl/tiny-sdxl
small=(--resolution 32 --min-bucket-reso 32 --max-bucket-reso 64 --bucket-reso-steps 32
  --batch-size 4 --rank 4 --lr 3e-3 --seed 5 --no-progress)

printf 'a red circle --w 32 --h 32 --s 2 --d 7\na blue square --n a circle --w 32 --h 32 --s 2\n' \
  >"$work/prompts.txt"
"$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/run" "${small[@]}" \
  --epochs 2 --restart-every 1 --sample-prompts "$work/prompts.txt" 2>"$work/train.log"
cat "$work/train.log"
for file in lora.safetensors metrics.jsonl ranks.png samples/epoch-000002-prompt-00.png \
  samples/epoch-000002-prompt-01.png; do
  [[ -s $work/run/$file ]] || { echo "missing $file" >&2; exit 1; }
done
ls "$work/run"/tensorboard/events.out.tfevents.* >/dev/null
grep -q '"type":"restart"' "$work/run/metrics.jsonl"
grep -q "^wrote .*lora.safetensors: [0-9]* modules, total rank" "$work/train.log"
echo "train: LoRA, metrics, events, rank picture and samples written"

# name, dtype and shape of every tensor of a safetensors file, one per line, sorted
tensors_of() {
  local length
  length=$(od -An -t u8 -N8 "$1" | tr -d ' ')
  tail -c +9 "$1" | head -c "$length" |
    grep -o '"[^"]*":{"dtype":"[A-Z0-9]*","shape":\[[0-9,]*\]' | sort
}
recorded=$(dirname "$0")/data/trainer_export
diff <(tensors_of "$recorded/trained_kohya.safetensors") <(tensors_of "$work/run/lora.safetensors")
grep -q '"all_ok": true' "$recorded/load_check.json"
echo "train: $(tensors_of "$work/run/lora.safetensors" | wc -l) tensors as in the file diffusers loaded"

"$exe" sample --model "$model" --prompt "a red circle" --steps 2 --size 32x32 --seed 3 \
  -o "$work/plain.png"
"$exe" sample --model "$model" --prompt "a red circle" --steps 2 --size 32x32 --seed 3 \
  --lora "$work/run/lora.safetensors" -o "$work/lora.png" 2>"$work/sample.log"
grep -q "modules applied, 0 unmatched" "$work/sample.log"
if cmp -s "$work/plain.png" "$work/lora.png"; then
  echo "the trained LoRA did not change the image" >&2
  exit 1
fi
echo "sample: $(grep 'modules applied' "$work/sample.log")"

# The tensors' bytes of a safetensors file (after the header, whose metadata holds dates).
tensor_bytes() {
  local length
  length=$(od -An -t u8 -N8 "$1" | tr -d ' ')
  tail -c +$((9 + length)) "$1"
}
# Every file of a folder with its checksum, sorted (equal listings: nothing was written).
listing() { (cd "$1" && find . -type f -exec md5sum {} + | sort); }

# --resume DIR continues the state given, here the first epoch's rather than the newest: the
# second epoch runs again and ends in the straight run's tensors, byte for byte.
cp "$work/run/lora.safetensors" "$work/straight.safetensors"
"$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/run" "${small[@]}" \
  --epochs 2 --restart-every 1 --resume "$work/run/state/state-000000008" 2>"$work/resume.log"
grep -q "^resumed .*state-000000008 (epoch 1 done, step 8)" "$work/resume.log"
cmp <(tensor_bytes "$work/straight.safetensors") <(tensor_bytes "$work/run/lora.safetensors")
echo "train --resume DIR: $(grep '^resumed' "$work/resume.log")"

# A resume with a setting that changes the result is refused: status 1, the setting named by
# its dotted key with both values, nothing in the run folder changed.
before=$(listing "$work/run")
set +e
"$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/run" "${small[@]}" \
  --epochs 2 --restart-every 1 --prediction v --resume 2>"$work/refused.log"
got=$?
set -e
if [[ $got -ne 1 ]] || ! tail -1 "$work/refused.log" |
  grep -q 'trainer.loss.prediction (state: "epsilon", now: "v")'; then
  echo "expected status 1 naming trainer.loss.prediction; got $got:" >&2
  cat "$work/refused.log" >&2
  exit 1
fi
[[ $(listing "$work/run") == "$before" ]] || { echo "a refused resume wrote files" >&2; exit 1; }
echo "status 1: $(tail -1 "$work/refused.log")"

# An invalid_argument from inside the training (a sample size the VAE cannot take, met when
# sampling after the epoch) is a failed run, status 1, not a bad command line (2).
printf 'a red circle --w 33 --h 32 --s 2\n' >"$work/odd_prompts.txt"
set +e
"$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/odd" "${small[@]}" \
  --epochs 1 --sample-prompts "$work/odd_prompts.txt" 2>"$work/odd.log"
got=$?
set -e
if [[ $got -ne 1 ]] || ! tail -1 "$work/odd.log" | grep -q "error: .*multiple of"; then
  echo "expected status 1 for a sample size error inside training; got $got:" >&2
  cat "$work/odd.log" >&2
  exit 1
fi
echo "status 1: $(tail -1 "$work/odd.log")"

# --restart-loss, one process per run: with --min-snr-gamma the default logs the loss trained
# on (min-SNR weighted), and the RESTART's L is the mean of the logged step losses; unweighted
# logs the plain MSE (what a run without min-SNR logs at its first step, where factors and
# draws are the same; to the rounding of two fp32 summation orders) while it trains the same
# way, so each of its step losses is >= the weighted one, and some are larger.
for kind in weighted unweighted; do
  "$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/loss_$kind" \
    "${small[@]}" --epochs 1 --no-save-state --min-snr-gamma 5 --restart-loss "$kind" 2>/dev/null
done
"$exe" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/loss_plain" \
  "${small[@]}" --epochs 1 --no-save-state 2>/dev/null
step_losses() { grep '"type":"step"' "$1/metrics.jsonl" | sed 's/.*"loss":\([^,}]*\).*/\1/'; }
restart_l() { grep '"type":"restart"' "$1/metrics.jsonl" | sed 's/.*"L":\([^,}]*\).*/\1/'; }
for kind in weighted unweighted; do
  step_losses "$work/loss_$kind" | awk -v l="$(restart_l "$work/loss_$kind")" \
    '{ s += $1; n++ } END { d = l - s / n; if (n != 8 || d * d > (1e-12 * l) ^ 2) exit 1 }' ||
    { echo "--restart-loss $kind: L is not the mean of the step losses" >&2; exit 1; }
done
paste <(step_losses "$work/loss_weighted") <(step_losses "$work/loss_unweighted") |
  awk '{ if ($1 > $2 * (1 + 1e-6)) bad = 1; if ($1 < $2 * (1 - 1e-3)) lower++ }
       END { exit (bad || lower == 0) }' ||
  { echo "--restart-loss: the unweighted losses are not the plain MSE >= the weighted" >&2; exit 1; }
paste <(step_losses "$work/loss_unweighted" | head -1) <(step_losses "$work/loss_plain" | head -1) |
  awk '{ d = $1 - $2; if (d * d > (16 * 2 ^ -24 * $2) ^ 2) exit 1 }' ||
  { echo "--restart-loss unweighted: the first step is not the plain MSE" >&2; exit 1; }
echo "train --restart-loss: weighted L $(restart_l "$work/loss_weighted"), unweighted L $(restart_l "$work/loss_unweighted")"

# One line on stderr, exit status $1, no LoRA file.
expect_failure() {  # expect_failure STATUS PATTERN ARGS...
  local status=$1 pattern=$2
  shift 2
  rm -rf "$work/bad"
  set +e
  "$exe" "$@" 2>"$work/bad.log"
  local got=$?
  set -e
  if [[ $got -ne $status || $(wc -l <"$work/bad.log") -ne 1 || -e $work/bad/lora.safetensors ]] ||
    ! grep -q -- "$pattern" "$work/bad.log"; then
    echo "expected status $status and one line with '$pattern' for: $*; got $got:" >&2
    cat "$work/bad.log" >&2
    exit 1
  fi
  echo "status $status: $(cat "$work/bad.log")"
}
expect_failure 2 "--rank" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/bad" --rank 0
expect_failure 2 "--targets" train --model "$model" --data "$fixtures/sdxl/train_data" -o "$work/bad" --targets conv
expect_failure 2 "exclude each other" train --model "$model" --data "$fixtures/sdxl/train_data" \
  --dataset-config "$work/prompts.txt" -o "$work/bad"
expect_failure 2 "fp16 needs a CUDA device" train --model "$model" --data "$fixtures/sdxl/train_data" \
  -o "$work/bad" --mixed-precision fp16
expect_failure 2 "not a state of the output folder" train --model "$model" \
  --data "$fixtures/sdxl/train_data" -o "$work/bad" --resume "$work/run/state/state-000000008"
expect_failure 2 "unknown option '--prompt'" train --model "$model" --data "$fixtures/sdxl/train_data" \
  -o "$work/bad" --prompt x
mkdir -p "$work/uncaptioned/2_things"
cp "$fixtures/sdxl/train_data/4_shapes/00_red_circle.png" "$work/uncaptioned/2_things/"
expect_failure 1 "00_red_circle" train --model "$model" --data "$work/uncaptioned" -o "$work/bad" "${small[@]}"
"$exe" train --help >"$work/help.txt"
grep -q -- "--restart-every" "$work/help.txt"
echo "train --help"
