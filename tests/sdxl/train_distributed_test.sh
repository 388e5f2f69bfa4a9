#!/usr/bin/env bash
# aclora-sdxl train as several processes (data parallel over Gloo, loopback only), on the tiny
# fixture model and training set:
#  1. torchrun with 2 processes gives, after every epoch, the factors of a 1-process run with
#     the same global batch (--grad-accum 2), and the same step and epoch losses and RESTART
#     records; the files are written once, by rank 0; both processes report identical
#     RESTARTs. Two torchruns of one process each, joined by the c10d rendezvous as two
#     machines would be, give the same LoRA.
#  2. SIGTERM to both processes stops them after the same step with a state; a resume that
#     one process cannot see is stopped, naming it; resuming as ONE process with the same
#     global batch finishes with the same LoRA; another global batch is refused, naming it.
#  3. A rank killed with SIGKILL stops the other with an error naming it, well within the
#     collective timeout; a rank that fails names its error in the other's.
#  4. A bad launch environment is an error naming the variable.
#  5. A store that accepts the connection and never answers (as torchrun of another PyTorch
#     version serves) stops the process with status 1 after --ddp-timeout, naming the launcher.
#   train_distributed_test.sh ACLORA_SDXL_EXECUTABLE FIXTURES_DIR
set -euo pipefail
exe=$1
fixtures=$2
work=$(mktemp -d)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
command -v torchrun >/dev/null || {
  echo "torchrun not found (Debian: python3-torch; cmake/install-debian-deps.sh installs it)" >&2
  exit 1
}
args=(--model "$fixtures/sdxl/tiny-sdxl" --data "$fixtures/sdxl/train_data"
  --resolution 32 --min-bucket-reso 32 --max-bucket-reso 64 --bucket-reso-steps 32
  --batch-size 4 --rank 4 --lr 3e-3 --seed 5 --no-progress --save-precision fp32
  --epochs 4 --restart-every 2)
# torchrun sets OMP_NUM_THREADS=1 in its processes; CPU kernels split their sums by thread
# count, so every run here uses one thread, as the processes torchrun starts do.
export OMP_NUM_THREADS=1
port() { echo $((20000 + RANDOM % 12000)); }  # below the ephemeral ports (32768+)

# The tensor bytes of a safetensors file (its header, with dates in the metadata, left out).
data_of() {
  local length
  length=$(od -An -t u8 -N8 "$1" | tr -d ' ')
  tail -c +$((9 + length)) "$1"
}
# The records of metrics.jsonl without the timings.
records_of() { sed -e 's/"seconds":[^,}]*//g' -e 's/"time":[^,}]*//g' "$1"; }
same_lora() {  # same_lora A B: the same tensors, bit for bit
  cmp <(data_of "$1") <(data_of "$2") || { echo "$1 and $2 differ" >&2; exit 1; }
}

# 1. One process, 2 batches per step, a LoRA file after every epoch.
"$exe" train "${args[@]}" -o "$work/one" --grad-accum 2 --save-every-n-epochs 1 \
  2>"$work/one.log"
# Two processes under torchrun, one batch each per step. (torchrun 1.13 on Python 3.11 fails
# with its default --redirects/--tee; these values work with every version.)
torchrun --nproc_per_node 2 --no_python --redirects 1 --tee 1 --log_dir "$work/torchrun" \
  --master_port "$(port)" "$exe" train "${args[@]}" -o "$work/two" --save-every-n-epochs 1 \
  >"$work/two.log" 2>&1
cat "$work/two.log"
# With two processes the sum of two gradients is one float32 addition per element, which is
# exact and commutes: the factors must equal the one-process run's bit for bit. (More
# processes would sum in another order and need a tolerance of a few float32 ulps.)
for file in lora-epoch-000001 lora-epoch-000002 lora-epoch-000003 lora; do
  same_lora "$work/one/$file.safetensors" "$work/two/$file.safetensors"
done
diff <(records_of "$work/one/metrics.jsonl") <(records_of "$work/two/metrics.jsonl")
[[ $(grep -c '"type":"restart"' "$work/two/metrics.jsonl") -eq 2 ]]
[[ $(grep -c "RESTART: identical factors on all 2 processes" "$work/two.log") -eq 2 ]]
[[ $(grep -c "^wrote .*lora.safetensors" "$work/two.log") -eq 1 ]]
[[ $(ls "$work/two/tensorboard" | wc -l) -eq 1 ]]
[[ $(ls "$work/two/state" | wc -l) -eq 2 ]]
echo "torchrun: 2 processes = 1 process with --grad-accum 2, bit for bit, files written once"

# Two "machines" of one process each, joined by torchrun's c10d rendezvous (as across nodes).
endpoint=127.0.0.1:$(port)
for node in 0 1; do
  torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d --rdzv_endpoint "$endpoint" \
    --rdzv_id aclora-test --no_python --redirects 1 --tee 1 --log_dir "$work/node$node" \
    "$exe" train "${args[@]}" -o "$work/nodes" >"$work/node$node.log" 2>&1 &
  pids+=($!)
done
wait "${pids[-2]}" && wait "${pids[-1]}" || { cat "$work/node0.log" "$work/node1.log"; exit 1; }
same_lora "$work/one/lora.safetensors" "$work/nodes/lora.safetensors"
echo "torchrun c10d rendezvous, 2 nodes x 1 process: the same LoRA"

# Starts rank $1 of 2 with store port $2 and output $3; more arguments follow.
start_rank() {
  local rank=$1 master=$2 output=$3
  shift 3
  WORLD_SIZE=2 RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$master \
    "$exe" train "${args[@]}" -o "$output" "$@" 2>"$output.$rank.log" &
  pids+=($!)
}
wait_for_state() {  # wait_for_state OUTPUT: until its first state exists (at most 120 s)
  for _ in $(seq 1200); do
    compgen -G "$1/state/state-*/manifest.json" >/dev/null && return 0
    sleep 0.1
  done
  echo "no state in $1" >&2
  exit 1
}

# 2. SIGTERM to both, then resume as one process with the same global batch.
master=$(port)
start_rank 0 "$master" "$work/term"
start_rank 1 "$master" "$work/term"
wait_for_state "$work/term"
kill -TERM "${pids[-2]}" "${pids[-1]}"
status=0
wait "${pids[-2]}" || status=$?
[[ $status -eq 130 ]] || { echo "rank 0 exited $status, not 130" >&2; cat "$work/term.0.log"; exit 1; }
status=0
wait "${pids[-1]}" || status=$?
[[ $status -eq 130 ]] || { echo "rank 1 exited $status, not 130" >&2; cat "$work/term.1.log"; exit 1; }
# A process that cannot see the state (its output folder is another, as on a machine without
# the shared file system) stops the resume, named by the other.
master=$(port)
start_rank 0 "$master" "$work/term" --resume
start_rank 1 "$master" "$work/elsewhere" --resume
status=0
wait "${pids[-1]}" || status=$?
[[ $status -ne 0 ]]
status=0
wait "${pids[-2]}" || status=$?
[[ $status -ne 0 ]]
grep -q "rank 1 failed: .*elsewhere/state: no training state to resume" "$work/term.0.log" ||
  { cat "$work/term.0.log" >&2; exit 1; }
if "$exe" train "${args[@]}" -o "$work/term" --resume 2>"$work/refused.log"; then
  echo "a resume with another global batch was accepted" >&2
  exit 1
fi
grep -q "trainer.batches_per_step (state: 2, now: 1)" "$work/refused.log"
"$exe" train "${args[@]}" -o "$work/term" --resume --grad-accum 2 2>"$work/resumed.log"
same_lora "$work/one/lora.safetensors" "$work/term/lora.safetensors"
echo "SIGTERM: both processes stopped at one step; resumed as 1 process, the same LoRA"

# 3. A killed rank, then a failing rank.
master=$(port)
start_rank 0 "$master" "$work/killed" --epochs 40 --ddp-timeout 1
start_rank 1 "$master" "$work/killed" --epochs 40 --ddp-timeout 1
wait_for_state "$work/killed"
kill -KILL "${pids[-1]}"
for _ in $(seq 600); do  # the timeout is 60 s; a closed connection is noticed at once
  kill -0 "${pids[-2]}" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "${pids[-2]}" 2>/dev/null; then
  echo "rank 0 still runs 60 s after rank 1 was killed" >&2
  exit 1
fi
status=0
wait "${pids[-2]}" || status=$?
[[ $status -ne 0 ]]
tail -n 1 "$work/killed.0.log"
tail -n 1 "$work/killed.0.log" | grep -q "^aclora-sdxl: error: rank 0 of 2: .* failed: .* rank 1 stopped responding"

master=$(port)
start_rank 0 "$master" "$work/two"  # holds a finished run: rank 0 refuses to overwrite it
start_rank 1 "$master" "$work/two"
status=0
wait "${pids[-1]}" || status=$?
[[ $status -ne 0 ]]
wait "${pids[-2]}" || true
tail -n 1 "$work/two.1.log"
tail -n 1 "$work/two.1.log" | grep -q "rank 0 failed: .*metrics.jsonl exists"
echo "failures: a killed rank and a failing rank are named by the other"

# 4. Launch environment errors: exit status 1, the variable named.
expect_launch_error() {  # expect_launch_error PATTERN VAR=VALUE...
  local pattern=$1
  shift
  local status=0
  env "$@" "$exe" train "${args[@]}" -o "$work/bad" 2>"$work/bad.log" || status=$?
  [[ $status -eq 1 ]] && grep -q "$pattern" "$work/bad.log" || {
    echo "expected status 1 and '$pattern', got $status:" >&2
    cat "$work/bad.log" >&2
    exit 1
  }
  [[ ! -e $work/bad/lora.safetensors ]]
}
expect_launch_error "MASTER_ADDR is not set" WORLD_SIZE=2 RANK=0 MASTER_PORT=1
expect_launch_error "RANK is '2', not an integer in \[0, 1\]" WORLD_SIZE=2 RANK=2 \
  MASTER_ADDR=127.0.0.1 MASTER_PORT=1
echo "launch errors: named"

# 5. A silent store at MASTER_PORT, served "by torchrun's agent": status 1 after --ddp-timeout
# (3 s), the launcher named, no output file.
silent=$work/silent_store.port
python3 -c '
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
open(sys.argv[1], "w").write(str(server.getsockname()[1]))
connections = []
end = time.time() + 300
while time.time() < end:  # accepts, never answers; ends by itself
    server.settimeout(max(0.1, end - time.time()))
    try:
        connections.append(server.accept()[0])
    except socket.timeout:
        pass
' "$silent" &
pids+=($!)
for _ in $(seq 300); do [[ -s $silent ]] && break; sleep 0.1; done
[[ -s $silent ]] || { echo "the silent store did not start" >&2; exit 1; }
status=0
WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(cat "$silent") \
  TORCHELASTIC_USE_AGENT_STORE=True "$exe" train "${args[@]}" -o "$work/silent" \
  --ddp-timeout 0.05 2>"$work/silent.log" || status=$?
cat "$work/silent.log"
[[ $status -eq 1 ]] || { echo "status $status, not 1" >&2; exit 1; }
grep -q "rank 1 of 2: the rendezvous store at 127.0.0.1:.* (served by torchrun's agent) accepted the connection but did not answer within 3 s" "$work/silent.log"
grep -q "Launch with the torchrun of PyTorch" "$work/silent.log"
[[ ! -e $work/silent/lora.safetensors ]]
kill "${pids[-1]}" && wait "${pids[-1]}" 2>/dev/null || true  # the store, quietly
echo "a store of another protocol: stopped after the timeout, the launcher named"
