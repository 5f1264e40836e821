#!/usr/bin/env bash
# Issue 9's GPU checks in one command, within one 10-minute call of a lent H100/H200
# (a deadline of BUDGET seconds, default 540, bounds the whole script):
#   1. the GPU tests (pytest -m gpu, tests/test_gpu.py),
#   2. PPO on CartPole: env-steps/s, compile time and device memory at 1 to 16,384 runs,
#   3. PQN likewise at 64, 4096 and 16,384 runs.
# Tables (CSV + markdown, device named) go to $OUT (the device tool's folder that comes back;
# default /tmp/gpu_check; 7 files, within what the tool brings back) and the whole log to
# $OUT/gpu_check.log. Copy the tables into results/benchmarks/ after reading them.
#
# On the device machine (no package index there; its image has jax with CUDA, flax, optax,
# chex, numpy, pandas, matplotlib, tqdm, pytest): build the missing wheels here first,
#   ../shared/tools/gpu-wheels.sh evosax==0.3.2 dotmap
# then run, carrying .whl:   bash scripts/gpu_check.sh
# The project runs from the checkout (PYTHONPATH), with the jax the image has.
#
# DRY=1 runs the same steps on whatever backend is here with small sizes (the GPU tests
# skip without a GPU): a check of this script, e.g. DRY=1 PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
log=$out/gpu_check.log
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# One deadline for the whole script, inside the device call's 10 minutes: each step gets
# its own limit or what is left, whichever is less, and steps past the deadline are skipped.
deadline=$((SECONDS + ${BUDGET:-540}))
if [ -d .whl ] && [ -z "${DRY:-}" ]; then
  if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl 2>&1 | tee -a "$log"; then
    echo "=== installing .whl failed" | tee -a "$log"; exit 1
  fi
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

if [ -n "${DRY:-}" ]; then
  ppo_runs=(1); pqn_runs=(1); steps=2048; cap=1000000; each=120
else
  ppo_runs=(1 64 1024 4096 16384); pqn_runs=(64 4096 16384); steps=100000; cap=200000000; each=90
fi

status=0
step() {  # step NAME SECONDS COMMAND...: runs it under a time limit, logs, remembers failure
  local name=$1 limit=$2; shift 2
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 10 ]; then
    echo "=== $name: skipped, past the deadline" | tee -a "$log"; status=1; return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$log"
  timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}

step versions 60 "$py" -c "from importlib.metadata import version as v; import jax
print({p: v(p) for p in ('jax', 'jaxlib', 'flax', 'optax', 'gymnax', 'hydra-core')}, jax.devices())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
step gpu_tests 180 "$py" -m pytest -m gpu -o addopts="-ra" -p no:cacheprovider tests/test_gpu.py
scaling() {  # scaling AGENT R...: env-steps/s and memory of AGENT at each R, one table
  local agent=$1; shift
  step "${agent}_scaling" $((each * $#)) "$py" scripts/benchmark.py --agent "$agent" --runs "$@" \
    --total-timesteps $steps --max-batch-steps $cap --timeout $each --out "$out" \
    --name "${agent}_scaling_gpu"
}
scaling ppo "${ppo_runs[@]}"
scaling pqn "${pqn_runs[@]}"
echo "=== done, exit $status" | tee -a "$log"
exit $status
