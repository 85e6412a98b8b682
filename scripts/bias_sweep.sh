#!/usr/bin/env bash
# The distillation-data bias sweep reported in docs/RESULTS.md: the digit_sum demo config run
# with 50%, 80% and 95% of the distillation samples' distractors agreeing with the answer.
#   bash scripts/bias_sweep.sh [OUT_DIR]      (default leaf-sweep; about one demo run per bias)
#   python scripts/make_results.py leaf-demo --sweep leaf-sweep
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-leaf-sweep}
LEAF=${LEAF:-leaf}
for bias in 0.5 0.8 0.95; do
  "$LEAF" run src/leaf/configs/testbed/digit_sum.yaml --no-tables \
    --set data.bias="$bias" --set name="digit_sum-bias$bias" --run-dir "$OUT/bias-$bias"
done
