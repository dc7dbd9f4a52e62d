#!/usr/bin/env bash
# The SQuAD frontier of issue 16 (dense, OTO and OTO+KD at 0.3 / 0.5 / 0.7; seeds 42, 1, 2 at 0.5) on the reduced
# CPU protocol (600 steps x 16, seq 256, lr 2e-4, all-MiniLM-L6-v2), as two 1-thread streams on a 2-core machine:
#
#   bash bench/squad_frontier.sh RUNS_DIR A > a.log 2>&1 &  bash bench/squad_frontier.sh RUNS_DIR B > b.log 2>&1 &
#
# One run takes 1.5-2 h on one thread, so the set spans several sessions. It resumes: a run whose results.json
# exists is skipped, and a run cut short starts again from scratch. A KD run waits for its seed's dense teacher
# (RUNS_DIR/dense<seed>/dense) and is skipped if that run failed. Each stream lists its runs in priority order.
# Stream ALL starts every run at once (KD runs still wait for their teacher): for a GPU, with the full protocol
# given in SQUAD_PROTOCOL (bench/gpu_suite.sh does this). Streams TUNE_A and TUNE_B compare KD settings at 0.7 on
# the tuning split (`--tune_holdout 0.1`; validation.json unread), stream TUNE05 at 0.5 (its teacher: run
# tune_dense1 first, or beside it). Streams A, B and ALL use the quality benches'
# default alpha 0.5, T 2, chosen on SST-2's tuning split; on SQuAD's, TUNE05 found no better one (bench/README.md).
# Then: python bench/plot_frontier.py RUNS_DIR/*/results.json --out bench/frontier_squad.png
# DRY=1 prints the commands instead of running them. Env: SQUAD_DATA (default ../shared/data/squad_v1.1),
# SQUAD_PROTOCOL (replaces the protocol's arguments), SQUAD_MODEL (a model folder), PYTHON (default python),
# SQUAD_RESULTS_TO (a folder that gets NAME.json, a copy of each results.json, as soon as the run ends, or at
# once for a run done earlier).
# SQUAD_THREADS (training threads per run, default 1; latency is always timed on 1 thread).
# Instead of a stream, run names may be given (`squad_frontier.sh RUNS_DIR dense2 kd05_2`): those runs, in order.
# SIGTERM (e.g. from `timeout`) or Ctrl-C stops every run this script started.
set -u
USAGE="usage: squad_frontier.sh RUNS_DIR A|B|TUNE_A|TUNE_B|TUNE05|ALL|RUN_NAME..."
RUNS=$(realpath -m "${1:?$USAGE}")
STREAM=${2:?$USAGE}
DATA=$(realpath -m "${SQUAD_DATA:-$(dirname "$0")/../../shared/data/squad_v1.1}")
MODEL=${SQUAD_MODEL:+$(realpath -m "$SQUAD_MODEL")}
cd "$(dirname "$0")" || exit 1
export OMP_NUM_THREADS=${SQUAD_THREADS:-1} MKL_NUM_THREADS=${SQUAD_THREADS:-1} HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/..${PYTHONPATH:+:$PYTHONPATH}"
read -r -a PYTHON <<< "${PYTHON:-python}"
read -r -a PROTOCOL <<< "${SQUAD_PROTOCOL:---steps 600 --batch 16 --max_seq_length 256 --lr 2e-4 --latency_threads 1}"
PROTOCOL+=(--data_dir "$DATA" ${MODEL:+--model "$MODEL"})
STARTED=$(mktemp) && trap 'rm -f "$STARTED"' EXIT  # failure markers older than this are from earlier attempts
# every run is a background job (`wait` lets the trap fire at once); on TERM stop them and their python processes
trap 'for job in $(jobs -p); do pkill -TERM -P "$job"; kill -TERM "$job" 2>/dev/null; done; exit 143' TERM INT

# copy_result NAME: RUNS_DIR/NAME/results.json to SQUAD_RESULTS_TO/NAME.json, where that is set
copy_result() {
  if [ -n "${SQUAD_RESULTS_TO:-}" ]; then mkdir -p "$SQUAD_RESULTS_TO" && cp "$RUNS/$1/results.json" "$SQUAD_RESULTS_TO/$1.json"; fi
}

# run NAME SEED KIND TARGET [ARGS...]: KIND is dense, oto or kd; TARGET is - for dense; ARGS go to quality_squad.py.
# A KD run's teacher is the dense run named like it up to "kd", then dense<SEED> (kd05_1: dense1; tune_kd07_1:
# tune_dense1). A failed run (an error, or no results.json) leaves RUNS_DIR/NAME.failed.
run() {
  local name=$1 seed=$2 kind=$3 target=$4 teacher=${1%%kd*}dense$2
  shift 4
  local args=("${PROTOCOL[@]}" --seed "$seed" --output_dir "$RUNS/$name" "$@")
  case $kind in
    dense) args+=(--sparsities) ;;
    oto) args+=(--sparsities "$target" --skip_dense) ;;
    kd) args+=(--sparsities "$target" --distill --teacher_dir "$RUNS/$teacher/dense") ;;
  esac
  if [ -f "$RUNS/$name/results.json" ]; then echo "skip $name (done)"; copy_result "$name"; return; fi
  if [ -n "${DRY:-}" ]; then echo "${PYTHON[@]}" quality_squad.py "${args[@]}"; return; fi
  mkdir -p "$RUNS" && rm -f "$RUNS/$name.failed"
  if [ "$kind" = kd ]; then
    until [ -f "$RUNS/$teacher/results.json" ]; do
      if [ "$RUNS/$teacher.failed" -nt "$STARTED" ]; then echo "skip $name (teacher $teacher failed)"; return; fi
      sleep 10
    done
  fi
  echo "start $name $(date -u +%FT%TZ)"
  if "${PYTHON[@]}" quality_squad.py "${args[@]}" > "$RUNS/$name.log" 2>&1 && [ -f "$RUNS/$name/results.json" ]; then
    echo "end $name $(date -u +%FT%TZ)" && copy_result "$name"
  else
    touch "$RUNS/$name.failed"; echo "FAILED $name $(date -u +%FT%TZ) (see $RUNS/$name.log)"
  fi
}

STREAM_A=("dense42 42 dense -" "kd05_42 42 kd 0.5" "oto03_42 42 oto 0.3" "dense1 1 dense -" "kd05_1 1 kd 0.5"
  "oto05_2 2 oto 0.5" "oto05_42 42 oto 0.5")
# Stream B ends with the tuning split's longer recovery (TUNE05: projection deadline 0.4) on the evaluation split,
# seed 1: plain OTO, then OTO+KD (after dense1).
STREAM_B=("oto07_42 42 oto 0.7" "kd07_42 42 kd 0.7" "kd03_42 42 kd 0.3" "oto05_1 1 oto 0.5" "dense2 2 dense -"
  "kd05_2 2 kd 0.5" "oto05e4_1 1 oto 0.5 --oto_projection_deadline 0.4"
  "kd05e4_1 1 kd 0.5 --oto_projection_deadline 0.4")
# Choosing KD settings at 0.7 on the tuning split (the last 10% of train.json's articles; validation.json unread):
# the defaults, hidden-state distillation, SST-2's runner-up alpha / T, and an earlier projection deadline (0.6:
# 240 steps to recover instead of 120), against plain OTO.
TUNE=(--tune_holdout 0.1)
STREAM_TUNE_A=("tune_dense1 1 dense - ${TUNE[*]}" "tune_kd07_1 1 kd 0.7 ${TUNE[*]}"
  "tune_kd07h_1 1 kd 0.7 ${TUNE[*]} --distill_hidden_weight 1")
STREAM_TUNE_B=("tune_oto07_1 1 oto 0.7 ${TUNE[*]}" "tune_kd07a_1 1 kd 0.7 ${TUNE[*]} --distill_alpha 0.9 --distill_temperature 4"
  "tune_kd07e_1 1 kd 0.7 ${TUNE[*]} --oto_projection_deadline 0.6")
# The same comparison at 0.5, where the target is nearer (issue 16's 0.5 miss was 0.51 F1): the defaults against
# stronger distillation in one bundle (alpha 0.9 as in nn_pruning, plus hidden-state MSE as in CoFi), both after
# tune_dense1. Plain OTO 0.5 on this split at lr 2e-4 and seed 1 is in bench/README's first table. Then a longer
# recovery after the projection, with the default KD: deadline 0.6 and 0.4 (240 and 360 of 600 steps to recover,
# against 120 at the default 0.8).
STREAM_TUNE05=("tune_kd05_1 1 kd 0.5 ${TUNE[*]}"
  "tune_kd05s_1 1 kd 0.5 ${TUNE[*]} --distill_alpha 0.9 --distill_hidden_weight 1"
  "tune_kd05e6_1 1 kd 0.5 ${TUNE[*]} --oto_projection_deadline 0.6"
  "tune_kd05e4_1 1 kd 0.5 ${TUNE[*]} --oto_projection_deadline 0.4")
# in_order SPEC...: one run after another (each a background job, so that the TERM trap fires at once)
in_order() { for spec in "$@"; do run $spec & wait $!; done; }
case $STREAM in
  A) in_order "${STREAM_A[@]}" ;;
  B) in_order "${STREAM_B[@]}" ;;
  TUNE_A) in_order "${STREAM_TUNE_A[@]}" ;;
  TUNE_B) in_order "${STREAM_TUNE_B[@]}" ;;
  TUNE05) in_order "${STREAM_TUNE05[@]}" ;;
  ALL) for spec in "${STREAM_A[@]}" "${STREAM_B[@]}"; do run $spec & done; wait ;;
  *)  # run names: look each up among every stream's specs, then run them in the order given
    named=()
    for name in "${@:2}"; do
      found=""
      for spec in "${STREAM_A[@]}" "${STREAM_B[@]}" "${STREAM_TUNE_A[@]}" "${STREAM_TUNE_B[@]}" "${STREAM_TUNE05[@]}"; do
        if [ "${spec%% *}" = "$name" ]; then found=$spec; break; fi
      done
      if [ -z "$found" ]; then echo "unknown stream or run '$name': use A, B, TUNE_A, TUNE_B, TUNE05, ALL or run names" >&2; exit 2; fi
      named+=("$found")
    done
    in_order "${named[@]}" ;;
esac
