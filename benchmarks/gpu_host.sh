#!/usr/bin/env bash
# The GPU-host check of the DQN (issue 5), as run on one 16-core + 1-GPU machine with no package index:
#   1. the CUDA-graph learner equals the eager one (tests/test_rl_gpu.py; if it fails, the run below goes eager);
#   2. benchmarks/dqn_throughput.py (a) fleet / raw env frames/s, (c) replay bytes, (d) learner updates/s;
#   3. `dl-ray dqn jobs/rl/dqn_pong.yaml` for PONG_SECONDS of training (0: skip), then its final 30-episode evaluation.
# Usage: bash benchmarks/gpu_host.sh OUTDIR [PONG_SECONDS] [PONG_OVERRIDES]  ((a): overlapped and serial stepping,
# float32 and bfloat16 inference, each the median of 3 rounds against the raw env; 1+2 take ~5 min, so with 15 device
# minutes run 1+2 with PONG_SECONDS=0 first)
# e.g. bash benchmarks/gpu_host.sh $OUT 270 "--set replay.on_learner=true --set replay.shards=1 --set actors.overlap=true"   (Ray, Gymnasium, ale-py from .gpu-bundle if present:
# `bash ../shared/gpu-host/bundle.sh .gpu-bundle` on a machine with pip, then carry it over).
set -uo pipefail
out=${1:?usage: gpu_host.sh OUTDIR [PONG_SECONDS] ["--set a=b ..." for the Pong run]}; seconds=${2:-270}; extra=${3:-}
mkdir -p "$out"
if [ -f .gpu-bundle/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .gpu-bundle/site.tar.xz -C /tmp/site || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
export RAY_AUTH_MODE=disabled WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 -c "import torch, ray, gymnasium, ale_py; print('torch', torch.__version__, 'ray', ray.__version__, 'cuda', torch.cuda.is_available())" || exit 1

graph=true
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_rl_gpu.py 2>&1 | tee "$out/gpu_test.log" || graph=false
echo "cuda_graph=$graph"

timeout 420 python3 benchmarks/dqn_throughput.py --seconds 4 --skip-ours --actors 6 --envs 16 --env-threads 2 \
  --cpus-per-actor 2 --gpus-per-actor 0.05 2>&1 | tee "$out/bench.log"

[ "$seconds" -gt 0 ] || exit 0
rm -rf /tmp/gpu_runs
timeout $((seconds + 200)) python3 -m dl_ray.cli dqn jobs/rl/dqn_pong.yaml --set dqn.max_time_s="$seconds" \
  --set learner.cuda_graph=$graph --set dqn.total_env_steps=10000000 --set evaluation.every_env_steps=500000 \
  --set tracking.wandb=disabled --set storage.path=/tmp/gpu_runs $extra 2>&1 | tee "$out/pong.log"
cp /tmp/gpu_runs/dqn_pong/{metrics.csv,summary.json,curves.png} "$out/" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv
