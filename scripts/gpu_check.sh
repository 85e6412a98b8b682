#!/usr/bin/env bash
# One prepared command for a first GPU: about 5 minutes on one GPU, no network, no downloads.
#
#   bash scripts/gpu_check.sh [--out DIR] [--dry-run] [--skip-install]
#
# Steps (each with its own time limit; a failed step is reported and the next one runs):
#   install   pip install --no-deps --no-build-isolation -e . (+ wheels/*.whl if carried)
#   tests     the GPU-marked tests (pytest -m gpu): fused loss, saliency, a bf16 training step
#   loss      leaf's fused loss vs the obvious loss (and the chunked one) at 8192 x 152064,
#             bfloat16 (benchmarks/bench_kl.py)
#   peers     the same beside Liger-Kernel's chunked loss (bench_kl.py --peers), only when
#             liger-kernel is installed (its wheel carried in wheels/)
#   detect    detection on a Llama-3.2-1B-shaped random model vs the authors' loop, bfloat16
#             (benchmarks/bench_detect.py --llama-1b)
#   pair      a random-weight SmolLM2-shaped teacher/student pair built from configs
#             (benchmarks/random_pair.py)
#   run       leaf run --quick on that pair, runtime cuda / bfloat16 (the testbed's digit_sum data)
#   2-ranks   stage 1 (screen, detect, prune) on 2 data-parallel ranks, outputs compared byte for
#             byte with the 1-rank run; only when more than one GPU is visible
# It writes DIR/gpu_check.md (device name, versions, each step's status, time and result lines)
# and each step's full output in DIR/logs/. Exit status: 0 when every step passed.
#
# --dry-run: the same steps on the CPU at toy shapes (the GPU tests run on the CPU through
#   LEAF_TEST_DEVICE=cpu; no install; 2-ranks skipped), about a minute: tests/test_gpu_check.py
#   runs it so the script cannot rot.
#
# What the GPU machine needs: torch, transformers, accelerate, peft (preinstalled there), and a
# few small pure-Python wheels it may lack, carried in wheels/ (gitignored; make it here, where
# the package index is reachable, and name it in what travels with the tree):
#   pip download --no-deps -d wheels pytest pluggy iniconfig \
#       math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
# (math-verify grades the testbed's answers in `leaf run`; pytest runs the GPU tests); add
# liger-kernel to that list for the peers step. datasets and gguf are not needed by any step.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUTDIR="${OUT:-$ROOT/gpu-check}"
DRY=0
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1; INSTALL=0 ;;
        --skip-install) INSTALL=0 ;;
        --out) OUTDIR="$2"; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUTDIR/logs"
OUTDIR="$(cd "$OUTDIR" && pwd)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
cd "$ROOT"

if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    export LEAF_TEST_DEVICE=cpu
else
    DEVICE=cuda
fi

SUMMARY="$OUTDIR/gpu_check.md"
ROWS="$OUTDIR/.rows"
: > "$ROWS"
FAILED=0

# step NAME LIMIT_S COMMAND...: run it, keep its output, add a row and its last lines
step() {
    local name="$1" limit="$2"
    shift 2
    local log="$OUTDIR/logs/$name.log" start end status
    echo "== $name: $*" | tee "$log"
    start=$(date +%s)
    timeout "$limit" "$@" >> "$log" 2>&1
    status=$?
    end=$(date +%s)
    local verdict="passed"
    if [ "$status" = 124 ]; then verdict="**timed out** (${limit} s)"; FAILED=1
    elif [ "$status" != 0 ]; then verdict="**failed** (exit $status)"; FAILED=1; fi
    echo "   $verdict in $((end - start)) s"
    {
        echo "### $name: $verdict in $((end - start)) s"
        echo
        echo "\`$*\`"
        echo
        echo '```'
        grep -E '^(RATIO|T=|check at|params|reference|leaf|fused|obvious|chunked|[0-9]+ (passed|failed)|=+ .*(passed|failed|skipped)|wrote|run directory|outputs)' "$log" | tail -n 25
        if [ "$verdict" != passed ]; then tail -n 15 "$log"; fi
        echo '```'
        echo
    } >> "$ROWS"
}

skip() {  # skip NAME REASON
    echo "== $1: skipped ($2)"
    printf '### %s: skipped (%s)\n\n' "$1" "$2" >> "$ROWS"
}

# ---------------------------------------------------------------- install
if [ "$INSTALL" = 1 ]; then
    if ls "$ROOT"/wheels/*.whl > /dev/null 2>&1; then
        step wheels 120 "$PYTHON" -m pip install --no-deps --no-index "$ROOT"/wheels/*.whl
    fi
    step install 180 "$PYTHON" -m pip install --no-deps --no-build-isolation -e "$ROOT"
else
    skip install "$([ "$DRY" = 1 ] && echo 'dry run: this checkout on PYTHONPATH' || echo '--skip-install')"
fi

# ---------------------------------------------------------------- the machine
"$PYTHON" - > "$OUTDIR/machine.txt" 2>&1 <<'EOF'
import platform, torch, transformers
cuda = torch.cuda.is_available()
print("device:", torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})")
print("gpus:", torch.cuda.device_count() if cuda else 0)
print(f"versions: Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
      + (f", CUDA {torch.version.cuda}" if cuda else ""))
for name in ("accelerate", "peft", "pytest", "math_verify", "liger_kernel", "datasets", "gguf"):
    try:
        module = __import__(name)
        print(f"  {name}: {getattr(module, '__version__', 'present')}")
    except Exception as e:
        print(f"  {name}: absent ({type(e).__name__})")
EOF
GPUS=$(sed -n 's/^gpus: //p' "$OUTDIR/machine.txt")
GPUS=${GPUS:-0}
if [ "$DRY" = 0 ] && [ "$GPUS" = 0 ]; then
    echo "gpu_check.sh: torch sees no CUDA device (use --dry-run on a CPU)" >&2
    cat "$OUTDIR/machine.txt" >&2
    exit 2
fi

# ---------------------------------------------------------------- the GPU-marked tests
GPU_TESTS=$(grep -l "pytest.mark.gpu" tests/*.py | tr '\n' ' ')
# shellcheck disable=SC2086
step tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS

# ---------------------------------------------------------------- the loss
if [ "$DRY" = 1 ]; then
    step loss 120 "$PYTHON" benchmarks/bench_kl.py --device cpu --dtype bfloat16 \
        --sizes 256x2000x64:obvious,fused --no-step --reps 1 --json "$OUTDIR/kl.json"
else
    step loss 240 "$PYTHON" benchmarks/bench_kl.py --device cuda --dtype bfloat16 \
        --sizes 8192x152064x2048 --no-step --reps 3 --json "$OUTDIR/kl.json"
fi

# ---------------------------------------------------------------- the loss beside Liger's
if grep -q "liger_kernel: [0-9p]" "$OUTDIR/machine.txt"; then
    if [ "$DRY" = 1 ]; then
        step peers 180 "$PYTHON" benchmarks/bench_kl.py --peers --device cpu \
            --sizes 256x2000x64 --reps 1 --json "$OUTDIR/peers.json"
    else
        step peers 240 "$PYTHON" benchmarks/bench_kl.py --peers --device cuda --dtype bfloat16 \
            --sizes 8192x152064x2048 --reps 3 --json "$OUTDIR/peers.json"
    fi
else
    skip peers "liger-kernel not installed (carry its wheel in wheels/ to add it)"
fi

# ---------------------------------------------------------------- detection
if [ "$DRY" = 1 ]; then
    step detect 120 "$PYTHON" benchmarks/bench_detect.py --toy --dtype bfloat16 --mem-reps 0 \
        --json "$OUTDIR/detect.json"
else
    step detect 240 "$PYTHON" benchmarks/bench_detect.py --device cuda --llama-1b \
        --dtype bfloat16 --mem-reps 1 --json "$OUTDIR/detect.json"
fi

# ---------------------------------------------------------------- leaf run on a random pair
SHAPE=$([ "$DRY" = 1 ] && echo toy || echo smollm2)
step pair 180 "$PYTHON" benchmarks/random_pair.py "$OUTDIR/pair" --shape "$SHAPE"
if [ "$DRY" = 1 ]; then  # the CPU: the same stages, fewer rows, one test split, two variants
    FULL_SIZES="{train: 64, test_id: 0, test_anti: 32, test_clean: 0}"
    SIZES="{train: 16, test_anti: 8}"; TOKENS=8
    VARIANTS="{kd: {sets: [], hybrid_lambda: 1.0},
              leaf_logits: {sets: [instruction_span], args: {kd_loss_path: logits}}}"
    ATTENTION=false
else
    FULL_SIZES="{train: 512, test_id: 128, test_anti: 128, test_clean: 128}"
    SIZES="{train: 128, test_id: 64, test_anti: 64, test_clean: 64}"; TOKENS=16
    VARIANTS="{kd: {sets: [], hybrid_lambda: 1.0},
              leaf_instr_resp: [instruction_span, response_span],
              leaf_logits: {sets: [instruction_span], args: {kd_loss_path: logits}}}"
    ATTENTION=true
fi
cat > "$OUTDIR/run.yaml" <<EOF
# written by scripts/gpu_check.sh: the testbed's digit_sum data on a random-weight pair; the
# variants train on the fused (hidden-state) loss path (kd, leaf_instr_resp) and the logits path
name: gpu-check
data: {testbed: digit_sum, seed: 0, bias: 0.4, sizes: $FULL_SIZES}
seeds: [0, 1]
teacher: $OUTDIR/pair/teacher
student: $OUTDIR/pair/student
runtime: {device: $DEVICE, dtype: bfloat16}
screen: {batch_size: 64, max_new_tokens: $TOKENS}
detect: {levels: [instruction, response], segments: 2, batch_size: 16, score_all: true}
prune: {threshold_mode: fixed, tau: 0.10}
counterfactuals:
  instruction_span: {level: instruction, masking: gradient, strategy: span, verify: true}
  response_span: {level: response, masking: gradient, strategy: span, verify: true, tau: 0.15}
distill:
  args: {num_train_epochs: 1, per_device_train_batch_size: 8, max_length: 128,
         learning_rate: 1.0e-4, warmup_steps: 1, logging_steps: 4, save_strategy: "no",
         report_to: none, disable_tqdm: true, dataloader_num_workers: 0}
  variants: $VARIANTS
evaluate: {batch_size: 64, max_new_tokens: $TOKENS}
detection: {rules: {gradient: instruction_span}}
attention: {enabled: $ATTENTION, split: test_anti, limit: 8}
quick:
  data: {sizes: $SIZES}
  seeds: [0]
EOF
step run 240 "$PYTHON" -m leaf.cli run "$OUTDIR/run.yaml" --quick --run-dir "$OUTDIR/run"

# ---------------------------------------------------------------- two ranks
if [ "$DRY" = 0 ] && [ "$GPUS" -gt 1 ]; then
    two_ranks() {
        "$PYTHON" -m leaf.cli run "$OUTDIR/run.yaml" --quick --run-dir "$OUTDIR/run-2ranks" \
            --set parallel.processes=2 --set "parallel.stages=[screen, detect, prune]" \
            --set distill.args.max_steps=1 || return 1
        local differ=0
        for f in data0/screen/screened.jsonl data0/detect/instruction.jsonl \
                 data0/detect/response.jsonl data0/prune/instruction_span.jsonl; do
            if cmp -s "$OUTDIR/run/$f" "$OUTDIR/run-2ranks/$f"; then echo "outputs equal: $f"
            else echo "outputs differ: $f"; differ=1; fi
        done
        return $differ
    }
    export OUTDIR PYTHON
    export -f two_ranks
    step 2-ranks 240 bash -c two_ranks
else
    skip 2-ranks "$([ "$DRY" = 1 ] && echo 'dry run' || echo "$GPUS GPU visible")"
fi

# ---------------------------------------------------------------- the summary
{
    echo "# leaf GPU check$([ "$DRY" = 1 ] && echo ' (dry run on the CPU, toy shapes)')"
    echo
    echo "Written by \`scripts/gpu_check.sh$([ "$DRY" = 1 ] && echo ' --dry-run')\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    sed 's/^/    /' "$OUTDIR/machine.txt"
    echo
    echo "Result: $([ "$FAILED" = 0 ] && echo 'every step passed' || echo '**a step failed** (see below and logs/)')."
    echo
    cat "$ROWS"
} > "$SUMMARY"
rm -f "$ROWS"
echo "wrote $SUMMARY"
exit "$FAILED"
