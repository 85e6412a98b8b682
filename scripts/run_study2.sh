#!/usr/bin/env bash
# The second testbed study (pre-registration: docs/study2.md), one step per command, each
# resumable (run it again after an interruption; a step cut short loses at most its current stage):
#   bash scripts/run_study2.sh pilot   [OUT]   the pilot: every dose, data seed 900, 1 replicate,
#                                              100 test items per split (never read)
#   bash scripts/run_study2.sh r1-nl00 [OUT]   R1 at dose 0% (likewise r1-nl03, r1-nl15)
#   bash scripts/run_study2.sh r2      [OUT]   R2 (distractor shift)
#   bash scripts/run_study2.sh signal  [OUT]   the unverified sets' counterfactual signal
#                                              (scripts/study2_signal.py; before results)
#   bash scripts/run_study2.sh results [OUT]   docs/RESULTS.md part 2 from the finished runs
# OUT defaults to leaf-study2. N (training rows) and EPOCHS come from the pilot's rules
# (OUT/pilot/decision.json, written by scripts/study2_pilot.py); R1 and R2 read them.
# With the pilot's N = 16000 and 6 epochs one R1 dose or R2 takes about 2.5 hours alone on a core
# (two steps run side by side on two cores), so run it in parts of one to two hours:
# SEEDS='[0,1]', then SEEDS='[0,1,2]', ..., then the step without SEEDS (all five; the finished
# seeds are reused). The study's cells use seeds 0-4; a run folder with fewer gives no verdict.
# The P rule (docs/study2.md): when `results` flags a primary cell (detectable difference above
# 0.03 after 5 seeds), run that step again with SEEDS='[0,1,2,3,4,5,6,7]'; the verdicts then
# read that cell over seeds 0-7 and every other cell over seeds 0-4 (leaf.testbed.study2).
# Run every step of one study from one code state (the commit its first run used, e.g. a
# `git worktree` of it with PYTHONPATH=<worktree>/src), so that every seed is trained by the
# same code.
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?usage: run_study2.sh pilot|r1-nl00|r1-nl03|r1-nl15|r2|signal|results [OUT]}
OUT=${2:-leaf-study2}
LEAF=${LEAF:-.venv/bin/leaf}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
mkdir -p "$OUT"
export TQDM_DISABLE=1 TRANSFORMERS_VERBOSITY=error OMP_NUM_THREADS=1
declare -A STUDENT=([nl00]=testbed:word_problem/student_nl00
                    [nl03]=testbed:word_problem/student_nl03
                    [nl15]=testbed:word_problem/student)

run() {  # name config [--set ...]
  local name=$1 config=$2; shift 2
  [ -n "${SEEDS:-}" ] && set -- "$@" --set "seeds=$SEEDS"
  "$LEAF" run "$config" --no-tables --run-dir "$OUT/$name" --set "name=$name" "$@" \
    > "$OUT/$name.log" 2>&1 && echo "done: $name" \
    || { echo "FAILED: $name (see $OUT/$name.log)"; return 1; }
}

decided() {  # the pilot's decision as --set arguments
  [ -f "$OUT/pilot/decision.json" ] || { echo "no $OUT/pilot/decision.json: run the pilot step first" >&2; exit 1; }
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"--set data.sizes.train={d['train_rows']} --set distill.args.num_train_epochs={d['epochs']}\")" "$OUT/pilot/decision.json"
}

case $STEP in
  pilot)
    export -f run; export OUT LEAF
    for dose in nl00 nl03 nl15; do echo "$dose ${STUDENT[$dose]}"; done | xargs -P "$JOBS" -L 1 bash -c '
      run pilot-$0 configs/study2/word_problem_r1.yaml --set student=$1 --set data.seed=900 \
        --set seeds=[0] --set "data.sizes={train: 8000, test_id: 100, test_anti: 100, test_clean: 100}" \
        --set attention.enabled=false'
    "$PY" scripts/study2_pilot.py "$OUT" ;;
  r1-nl00|r1-nl03|r1-nl15)
    dose=${STEP#r1-}
    # shellcheck disable=SC2046
    run "$STEP" configs/study2/word_problem_r1.yaml --set "student=${STUDENT[$dose]}" \
      $(decided) ;;
  r2)
    # shellcheck disable=SC2046
    run r2 configs/study2/word_problem_r2.yaml $(decided) ;;
  signal)
    "$PY" scripts/study2_signal.py "$OUT" ;;
  results)
    "$PY" scripts/make_results.py --study2 "$OUT" ;;
  *) echo "unknown step $STEP" >&2; exit 2 ;;
esac
