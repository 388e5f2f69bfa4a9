#!/usr/bin/env bash
# The cost of data parallelism on this CPU machine, over Gloo on loopback: the tiny SDXL-layout
# fixture model (tests/fixtures/sdxl/tiny-sdxl) trained by bench_data_parallel as 1 process and
# as 2 processes under torchrun (one thread each, batch 4 per process): seconds per step, the
# gradient sum's share, samples per second, and the 2-process throughput relative to twice the
# 1-process one. A CPU figure: GPUs with NCCL are measured by bench/gpu/sdxl_check.sh.
#   bench/sdxl/data_parallel_cpu.sh BUILD_DIR [--size 64] [--rank 4] [--steps 20] ...
set -euo pipefail
build=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
exe=$build/bench/sdxl/bench_data_parallel
args=(--config "$root/tests/fixtures/sdxl/tiny-sdxl" --size 64 --batch 4 --rank 4 --steps 20
  --warmup 3 --gradient-checkpointing 0 "$@")
export OMP_NUM_THREADS=1
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
one=$("$exe" "${args[@]}")
torchrun --nproc_per_node 2 --no_python --redirects 1 --tee 1 --log_dir "$logs" \
  --master_port $((20000 + RANDOM % 12000)) "$exe" "${args[@]}" >"$logs/two.log" 2>&1 ||
  { cat "$logs/two.log" >&2; exit 1; }
two=$(grep -o '{"program":"bench_data_parallel".*}' "$logs/two.log")
echo "$one"
echo "$two"
python3 - "$one" "$two" <<'SUMMARY'
import json, sys
one, two = (json.loads(text) for text in sys.argv[1:3])
print(f"1 process:   {one['median_seconds_per_step']:.4f} s/step, "
      f"{one['samples_per_second']:.1f} samples/s")
print(f"2 processes: {two['median_seconds_per_step']:.4f} s/step "
      f"(gradient sum {two['median_gradient_sum_seconds'] * 1000:.2f} ms, "
      f"{100 * two['gradient_sum_share']:.1f} %), {two['samples_per_second']:.1f} samples/s = "
      f"{two['samples_per_second'] / (2 * one['samples_per_second']) * 100:.1f} % of 2 x 1 process; "
      f"RESTART {two['restart_seconds'] * 1000:.1f} ms, factor check "
      f"{two['factor_check_seconds'] * 1000:.1f} ms (a broadcast of the factors: "
      f"{two['factor_broadcast_seconds'] * 1000:.1f} ms)")
SUMMARY
