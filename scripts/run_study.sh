#!/usr/bin/env bash
# The testbed study behind docs/RESULTS.md (design and hypotheses: docs/study.md).
# Every family x regime is one `leaf run` of configs/study/<family>.yaml:
#   paper       the config as committed (no clean rows, the calibrated bias)
#   paper-0.95  --set data.bias=0.95
#   clean       --set data.clean_frac=0.3
# Runs resume: run the same command again after an interruption. Two runs go at a time
# (JOBS=1 for one). Then docs/RESULTS.md is regenerated from the run directories.
#   bash scripts/run_study.sh [OUT_DIR]        (default leaf-study)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-leaf-study}
LEAF=${LEAF:-.venv/bin/leaf}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
FAMILIES=${FAMILIES:-$(ls configs/study/*.yaml | xargs -n1 basename | sed 's/\.yaml$//')}
mkdir -p "$OUT"
start=$(date +%s)

one() {  # family regime
  local family=$1 regime=$2 extra=()
  case $regime in
    paper) ;;
    paper-0.95) extra=(--set data.bias=0.95) ;;
    clean) extra=(--set data.clean_frac=0.3) ;;
  esac
  TQDM_DISABLE=1 TRANSFORMERS_VERBOSITY=error OMP_NUM_THREADS=1 \
    "$LEAF" run "configs/study/$family.yaml" --no-tables --run-dir "$OUT/$family-$regime" \
    --set "name=$family-$regime" "${extra[@]}" > "$OUT/$family-$regime.log" 2>&1 \
    && echo "done: $family-$regime" || { echo "FAILED: $family-$regime (see $OUT/$family-$regime.log)"; return 1; }
}
export -f one
export OUT LEAF
for family in $FAMILIES; do
  for regime in paper paper-0.95 clean; do echo "$family $regime"; done
done | xargs -P "$JOBS" -L 1 bash -c 'one $0 $1'
echo "study wall time: $(( $(date +%s) - start )) s"
"$PY" scripts/make_results.py "$OUT" --command "FAMILIES='$FAMILIES' bash scripts/run_study.sh $OUT" \
  --timing "scripts/run_study.sh: $(( $(date +%s) - start )) s with JOBS=$JOBS"
