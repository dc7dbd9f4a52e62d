#!/usr/bin/env bash
# The GPU checks of this project in one call (device time is scarce): fp16 distillation through accelerate's
# GradScaler path (the cuda cases of tests/test_distillation.py's fp16 test), kernel launches per optimizer step,
# OTOTrainer under FSDP2 (world size 1: train, checkpoint, slim save, fresh-process reload), the training-step /
# optimizer-step overhead benchmark, then the SQuAD quality benchmark in bf16. Expects, under .device/ (git-ignored):
# whl/ (transformers 5.24, datasets, evaluate, dill, multiprocess, pytest, pluggy, iniconfig wheels for the GPU
# machine's Python),
# model/ (all-MiniLM-L6-v2 weights stored in fp16 to fit the transfer limit; loaded as fp32) and data/
# (gzipped SQuAD v1.1 split). Output logs go to $OUT.
#
# GPU_SUITE=frontier runs instead the SQuAD frontier of issue 16 on the full protocol (1000 steps x 32, seq 384,
# bf16, lr 2e-4): bench/squad_frontier.sh's 13 runs (dense, OTO, OTO+KD at 0.3 / 0.5 / 0.7, seeds 42, 1, 2 at 0.5)
# side by side on the one GPU, each KD run starting when its dense teacher is done, for at most FRONTIER_TIMEOUT
# seconds. Every finished run's results.json comes back as $OUT/frontier/NAME.json, with the plot and the logs.
# The CPU speedups are then measured while the other runs train (1 thread each, interleaved median).
set -u
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, datasets, evaluate; print(torch.__version__, transformers.__version__, datasets.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/versions.log"
mkdir -p /tmp/data/squad
gunzip -c .device/data/squad_train.json.gz > /tmp/data/squad/train.json
gunzip -c .device/data/squad_validation.json.gz > /tmp/data/squad/validation.json
if [ "${GPU_SUITE:-checks}" = frontier ]; then
  SQUAD_PROTOCOL="--steps 1000 --batch 32 --max_seq_length 384 --lr 2e-4 --bf16 --latency_threads 1" \
    SQUAD_MODEL=.device/model SQUAD_DATA=/tmp/data/squad PYTHON=python3 SQUAD_RESULTS_TO="$OUT/frontier" \
    timeout "${FRONTIER_TIMEOUT:-480}" bash bench/squad_frontier.sh /tmp/frontier ALL 2>&1 | tee "$OUT/frontier.log"
  mkdir -p "$OUT/frontier" && for log in /tmp/frontier/*.log; do tail -n 30 "$log" > "$OUT/frontier/$(basename "$log")"; done
  python3 bench/plot_frontier.py "$OUT"/frontier/*.json --out "$OUT/frontier_squad.png" 2>&1 | tee -a "$OUT/frontier.log"
  exit 0
fi
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_distillation.py -k "fp16 and cuda" -rs 2>&1 | tail -n 20 | tee "$OUT/fp16_teacher.log"
timeout 60 python3 bench/optimizer_launches.py --device cuda 2>&1 | grep -v "Warning" | tee "$OUT/optimizer_launches.log"
timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node 1 tests/ddp_train_script.py --no_use_cpu \
  --fsdp2 --keep_accelerate_gate --save_steps 8 --learning_rate 1e-3 --output_dir /tmp/fsdp2 --dump_dir /tmp/fsdp2_dump \
  > "$OUT/fsdp2_train.log" 2>&1 && python3 bench/fsdp_reload_check.py /tmp/fsdp2 /tmp/fsdp2_dump 2>&1 | grep -v "Loading" | tee "$OUT/fsdp2.log"
timeout "${GPU_STEP_TIMEOUT:-130}" python3 bench/gpu_step.py --steps "${GPU_STEPS:-80}" --opt-reps 20 2>&1 | grep -v "Warning\|Writing\|Loading" | tee "$OUT/gpu_step.log"
cd bench && timeout "${SQUAD_TIMEOUT:-320}" python3 quality_squad.py --data_dir /tmp/data/squad --model ../.device/model \
  --bf16 --steps "${SQUAD_STEPS:-1000}" --batch 32 --oto_saliency "${SQUAD_SALIENCY:-taylor}" --latency_threads 2 --output_dir /tmp/quality_squad 2>&1 \
  | grep -v "Warning\|Writing\|Loading\|Map\|{'loss\|{'train\|{'eval" | tee "$OUT/quality_squad.log"
cp /tmp/quality_squad/results.json "$OUT/quality_squad_results.json" 2>/dev/null
exit 0
