#!/usr/bin/env bash
# The SQuAD frontier of issue 16 (dense, OTO and OTO+KD at 0.3 / 0.5 / 0.7; seeds 42, 1, 2 at 0.5) on the reduced
# CPU protocol (600 steps x 16, seq 256, lr 2e-4, all-MiniLM-L6-v2), as two 1-thread streams on a 2-core machine:
#
#   bash bench/squad_frontier.sh RUNS_DIR A > a.log 2>&1 &  bash bench/squad_frontier.sh RUNS_DIR B > b.log 2>&1 &
#
# One run takes 1.5-2 h on one thread, so the set spans several sessions. It resumes: a run whose results.json
# exists is skipped, and a run cut short starts again from scratch. A KD run waits for its seed's dense teacher
# (RUNS_DIR/dense<seed>/dense). Each stream lists its runs in priority order. KD uses the quality benches' default
# alpha 0.5, T 2, chosen on SST-2's tuning split (bench/README.md); they were not tuned on SQuAD.
# Then: python bench/plot_frontier.py RUNS_DIR/*42/results.json --out bench/frontier_squad.png
# DRY=1 prints the commands instead of running them. Env: SQUAD_DATA (default ../shared/data/squad_v1.1).
set -u
RUNS=$(realpath -m "${1:?usage: squad_frontier.sh RUNS_DIR A|B}")
STREAM=${2:?usage: squad_frontier.sh RUNS_DIR A|B}
DATA=$(realpath -m "${SQUAD_DATA:-$(dirname "$0")/../../shared/data/squad_v1.1}")
cd "$(dirname "$0")" || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/..${PYTHONPATH:+:$PYTHONPATH}"
PROTOCOL=(--data_dir "$DATA" --steps 600 --batch 16 --max_seq_length 256 --lr 2e-4 --latency_threads 1)

# run NAME SEED KIND [TARGET]: KIND is dense, oto or kd
run() {
  local name=$1 seed=$2 kind=$3 target=${4:-}
  local args=("${PROTOCOL[@]}" --seed "$seed" --output_dir "$RUNS/$name")
  case $kind in
    dense) args+=(--sparsities) ;;
    oto) args+=(--sparsities "$target" --skip_dense) ;;
    kd) args+=(--sparsities "$target" --distill --teacher_dir "$RUNS/dense$seed/dense") ;;
  esac
  if [ -f "$RUNS/$name/results.json" ]; then echo "skip $name (done)"; return; fi
  if [ -n "${DRY:-}" ]; then echo python quality_squad.py "${args[@]}"; return; fi
  if [ "$kind" = kd ]; then
    until [ -f "$RUNS/dense$seed/results.json" ]; do sleep 30; done
  fi
  echo "start $name $(date -u +%FT%TZ)"
  mkdir -p "$RUNS"
  python quality_squad.py "${args[@]}" > "$RUNS/$name.log" 2>&1 || echo "FAILED $name (see $RUNS/$name.log)"
  echo "end $name $(date -u +%FT%TZ)"
}

if [ "$STREAM" = A ]; then
  run dense42 42 dense; run kd05_42 42 kd 0.5; run oto03_42 42 oto 0.3; run dense1 1 dense; run kd05_1 1 kd 0.5
  run oto05_2 2 oto 0.5; run oto05_42 42 oto 0.5
else
  run oto07_42 42 oto 0.7; run kd07_42 42 kd 0.7; run kd03_42 42 kd 0.3; run oto05_1 1 oto 0.5; run dense2 2 dense
  run kd05_2 2 kd 0.5
fi
