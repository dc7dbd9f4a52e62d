#!/usr/bin/env bash
# The GPU checks of this project in one call (device time is scarce): kernel launches per optimizer step,
# OTOTrainer under FSDP2 (world size 1: train, checkpoint, slim save, fresh-process reload), the training-step /
# optimizer-step overhead benchmark, then the SQuAD quality benchmark in bf16. Expects, under .device/ (git-ignored):
# whl/ (transformers 5.24, datasets, evaluate, dill, multiprocess wheels for the GPU machine's Python),
# model/ (all-MiniLM-L6-v2 weights stored in fp16 to fit the transfer limit; loaded as fp32) and data/
# (gzipped SQuAD v1.1 split). Output logs go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, datasets, evaluate; print(torch.__version__, transformers.__version__, datasets.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/versions.log"
timeout 60 python3 bench/optimizer_launches.py --device cuda 2>&1 | grep -v "Warning" | tee "$OUT/optimizer_launches.log"
timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node 1 tests/ddp_train_script.py --no_use_cpu \
  --fsdp2 --keep_accelerate_gate --save_steps 8 --learning_rate 1e-3 --output_dir /tmp/fsdp2 --dump_dir /tmp/fsdp2_dump \
  > "$OUT/fsdp2_train.log" 2>&1 && python3 bench/fsdp_reload_check.py /tmp/fsdp2 /tmp/fsdp2_dump 2>&1 | grep -v "Loading" | tee "$OUT/fsdp2.log"
timeout "${GPU_STEP_TIMEOUT:-130}" python3 bench/gpu_step.py --steps "${GPU_STEPS:-80}" --opt-reps 20 2>&1 | grep -v "Warning\|Writing\|Loading" | tee "$OUT/gpu_step.log"
mkdir -p /tmp/data/squad
gunzip -c .device/data/squad_train.json.gz > /tmp/data/squad/train.json
gunzip -c .device/data/squad_validation.json.gz > /tmp/data/squad/validation.json
cd bench && timeout "${SQUAD_TIMEOUT:-320}" python3 quality_squad.py --data_dir /tmp/data/squad --model ../.device/model \
  --bf16 --steps "${SQUAD_STEPS:-1000}" --batch 32 --oto_saliency "${SQUAD_SALIENCY:-taylor}" --latency_threads 2 --output_dir /tmp/quality_squad 2>&1 \
  | grep -v "Warning\|Writing\|Loading\|Map\|{'loss\|{'train\|{'eval" | tee "$OUT/quality_squad.log"
cp /tmp/quality_squad/results.json "$OUT/quality_squad_results.json" 2>/dev/null
exit 0
