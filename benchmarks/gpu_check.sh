#!/usr/bin/env bash
# Every figure issues #3 and #4 ask of a GPU, in one run of about 8 minutes (sized for one H200 lease call):
#   1. training throughput, SD v1.5 architecture at 512 x 512, batch 8, bf16: cfaudit's step against the
#      diffusers-example reference loop, side by side, with the peak GPU memory of each (benchmarks/train_throughput.py);
#   2. editing cost at 512 x 512 with the SD v1.5 architecture: null-text inversion + P2P (the reference) against the
#      default (direct inversion, 12 steps), one and five edits per image, seconds per edit and peak memory
#      (benchmarks/edit_cost.py). Random weights: the cost, time and memory columns hold; fidelity ones do not.
#
#   bash benchmarks/gpu_check.sh --prepare   # here, once: wheels the GPU image lacks -> .whl/, assets -> .gpu-assets/
#   bash benchmarks/gpu_check.sh             # there (device tool: carry [".whl", ".gpu-assets"]); writes $OUT
#   bash benchmarks/gpu_check.sh --smoke     # here, on the CPU: the same steps at toy size, to check the script
#
# The GPU image has torch, transformers, accelerate, peft, safetensors, pandas, typer and rich but no diffusers
# (/work/.library/device/KINDS.md), so diffusers travels as a wheel; cfaudit runs from src/ on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
out=${OUT:-runs/gpu-check}
mkdir -p "$out"

if [ "$mode" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
  grep -qx '/.gpu-assets/' .git/info/exclude || echo '/.gpu-assets/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "diffusers==0.42.1"
  home=$(.venv/bin/python -c 'from cfaudit.assets import cache_dir; print(cache_dir())')
  mkdir -p .gpu-assets && cp -r "$home/tokenizer-sd15" .gpu-assets/
  ls -la .whl .gpu-assets
  exit 0
fi

if [ "$mode" = "--smoke" ]; then
  py=.venv/bin/python
  train_args=(--arch tiny --resolution 64 --batch-size 2 --images 8 --steps 2 --warmup 1 --device cpu --threads 2)
  edit_args=(--arch tiny --images 1 --device cpu --threads 2 --only 15 --nti-inner 2)
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD/src:/tmp/site" CFAUDIT_HOME="$PWD/.gpu-assets" HF_HUB_OFFLINE=1
  py=python3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  train_args=(--arch sd15 --resolution 512 --batch-size 8 --images 64 --steps 10 --warmup 3 --device cuda
              --mixed-precision bf16 --threads 16)
  edit_args=(--arch sd15 --images 2 --device cuda --threads 16 --only 1,15)
fi
export PYTHONUNBUFFERED=1

echo "== 1. training throughput" | tee "$out/train.log"
"$py" benchmarks/train_throughput.py "${train_args[@]}" --json "$out/train_throughput.json" 2>&1 \
  | grep -v "Loading weights\|Writing model shards" | tee -a "$out/train.log"

echo "== 2. editing cost" | tee "$out/edit.log"
"$py" benchmarks/edit_cost.py "${edit_args[@]}" 2>&1 | grep -v "Loading weights" | tee -a "$out/edit.log"
echo "done: $out"
