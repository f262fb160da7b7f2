#!/usr/bin/env bash
# Benchmark keras-siamese on a GPU machine in one command, within a time budget.
#
#   bash benchmarks/gpu.sh             # on the GPU machine (see README, "GPU")
#   bash benchmarks/gpu.sh --dry-run   # here, on the CPU: tiny sizes, same steps
#
# Steps, each under its own `timeout` and all under one budget (BUDGET
# seconds from the start: 470 by default, so that the whole run ends within
# 8 minutes; 900 in a dry run): install the carried wheels (.whl/) into a
# private folder, put the checkout on PYTHONPATH (the package without its
# dependencies), record nvidia-smi and the versions, then for every backend
# in BACKENDS: bench_training.py (all variants, roofline from the measured
# matmul rate), bench_branches.py, bench_mining.py (up to B = 8192, 512-d
# embeddings), bench_search.py where it exists, bench_files.py (images/s from
# a folder of PNG files, and a small-CNN training epoch fed from the files
# against the same epoch from arrays), and last bench_training.py's `b_jit`
# (torch.compile) on PyTorch. Steps run in that order of priority,
# each for every backend before the next step, so that a slow step cannot
# crowd out a more important one; a step the budget cannot fit is recorded
# as skipped. The dry run takes the same steps with the smallest sizes and
# without the install (and without torch.compile, 30 s on a CPU).
#
# Output, under OUT (default ./gpu-results): gpu.md, the log as Markdown
# (written as it goes), and gpu.json (the steps, nvidia-smi, the versions and
# every JSON the benchmarks wrote; rewritten after every step).
#
# Environment: PYTHON (default python3), OUT, BACKENDS (default "jax torch";
# in a dry run KERAS_BACKEND or jax), STEPS (default "training branches
# mining search files training_jit", in that order; name fewer to rerun some),
# BUDGET, WHEELS (default .whl), SEARCH_ARGS / SEARCH_DRY_ARGS (the options
# of bench_search.py; by default the exact Keras engines, as such a machine may have
# no faiss).

set -uo pipefail

DRY_RUN=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY_RUN=1 ;;
  -h | --help)
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
  *)
    echo "usage: $0 [--dry-run]" >&2
    exit 2
    ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/benchmarks
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-$REPO/.whl}
OUT=${OUT:-gpu-results}
STEPS=${STEPS:-training branches mining search files training_jit}
if [ "$DRY_RUN" = 1 ]; then
  # Generous: the dry run's limits only stop a hang on a slow CI machine.
  BUDGET=${BUDGET:-900}
  BACKENDS=${BACKENDS:-${KERAS_BACKEND:-jax}}
  MIN_STEP=5
else
  BUDGET=${BUDGET:-470}
  BACKENDS=${BACKENDS:-jax torch}
  MIN_STEP=20
fi
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keras-siamese-gpu.XXXXXX") || exit 1
mkdir -p "$WORK/meta" "$WORK/results"
LOG=$OUT/gpu.md
: >"$LOG"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1

# Sizes. The GPU sizes are chosen to fit the budget on an H100; the dry run
# takes the same steps with the smallest sizes.
VARIANTS=a_keras,b_package,b_arrays,b_fused,b_separate,c_native,d_matmuls
if [ "$DRY_RUN" = 1 ]; then
  TRAINING_ARGS=(--pairs 256 --rounds 1 --variants "$VARIANTS")
  BRANCHES_ARGS=(--encoders mlp --steps 1 --rounds 1 --batch-size 16)
  MINING_ARGS=(--sizes 32 --dim 8 --modes semi_hard --repeats 1)
  SEARCH=(--sizes 500 --queries 20 --repeats 1 --engines "keras euclidean"
    --metrics-sizes 300 --calibration-pairs 1000)
  [ -n "${SEARCH_DRY_ARGS:-}" ] && read -r -a SEARCH <<<"$SEARCH_DRY_ARGS"
  FILES_ARGS=(--images 40 --classes 4 --classes-per-batch 2 --per-class 2
    --workers 1 --repeats 1 --epoch-workers 2)
  LIMITS=(training=300 branches=150 mining=150 search=150 files=150 training_jit=0)
else
  TRAINING_ARGS=(--pairs 25600 --rounds 5 --variants "$VARIANTS")
  BRANCHES_ARGS=(--steps 40 --rounds 5)
  MINING_ARGS=(--sizes 1024 4096 8192 --dim 512 --repeats 3 --naive-limit-gib 16)
  SEARCH=(--sizes 100000 1000000 --queries 10000 --engines "keras euclidean"
    "keras cosine" --metrics-sizes 60502 --calibration-pairs 10000000)
  [ -n "${SEARCH_ARGS:-}" ] && read -r -a SEARCH <<<"$SEARCH_ARGS"
  FILES_ARGS=(--images 6000 --classes 50 --image-size 64 --workers 1 8
    --repeats 2 --epoch-workers 8)
  LIMITS=(training=100 branches=60 mining=120 search=60 files=60 training_jit=120)
fi
JIT_ARGS=(--pairs 25600 --rounds 3 --variants b_package,b_jit,c_native)

say() { printf '%s\n' "$*" | tee -a "$LOG"; }

limit_of() {
  local entry
  for entry in "${LIMITS[@]}"; do
    [ "${entry%%=*}" = "$1" ] && echo "${entry#*=}" && return
  done
  echo 60
}

now() { date +%s.%N; }
START=$(now)
elapsed() { awk -v s="$START" -v n="$(now)" 'BEGIN { printf "%d", n - s }'; }

record() { # step backend status seconds limit command
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/steps.tsv"
  "$PYTHON" "$BENCH/_gpu_report.py" "$WORK" "$OUT/gpu.json" ||
    say "(could not write gpu.json)"
}

# run_step STEP BACKEND COMMAND...: COMMAND under `timeout`, its output
# appended to the log as it comes, its JSON kept under results/STEP-BACKEND.
run_step() {
  local step=$1 backend=$2
  shift 2
  local limit remaining begin seconds rc status err
  limit=$(limit_of "$step")
  remaining=$((BUDGET - $(elapsed)))
  [ "$remaining" -lt "$limit" ] && limit=$remaining
  say ""
  say "### $step ($backend)"
  say ""
  if [ "$limit" -lt "$MIN_STEP" ]; then
    say "skipped: ${remaining}s of the ${BUDGET}s budget left"
    record "$step" "$backend" skipped 0 "$limit" "$*"
    return
  fi
  say "\`KERAS_BACKEND=$backend ${*#"$REPO/"}\` (time limit ${limit}s)"
  say ""
  err=$WORK/$step-$backend.stderr
  begin=$(now)
  BENCH_RESULTS_DIR=$WORK/results/$step-$backend KERAS_BACKEND=$backend \
    timeout -k 10 "$limit" "$@" 2>"$err" | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  seconds=$(awk -v s="$begin" -v n="$(now)" 'BEGIN { printf "%.1f", n - s }')
  case $rc in
    0) status=ok ;;
    124 | 137) status="timeout after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  if [ "$rc" != 0 ] && [ -s "$err" ]; then
    say ""
    say "stderr, last 30 lines:"
    say ""
    say '```'
    tail -n 30 "$err" | tee -a "$LOG"
    say '```'
  fi
  say ""
  say "$step ($backend): $status, ${seconds}s"
  record "$step" "$backend" "$status" "$seconds" "$limit" "$*"
}

say "# keras-siamese on the GPU"
say ""
say "- started: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, budget ${BUDGET}s"
say "- mode: $([ "$DRY_RUN" = 1 ] && echo 'dry run (tiny sizes)' || echo full)"
say "- backends: $BACKENDS; steps: $STEPS"
say "- checkout: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"

say ""
say "## Install"
say ""
if [ "$DRY_RUN" = 1 ]; then
  say "skipped (dry run): the Keras of $PYTHON is used"
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/keras-siamese-site.XXXXXX")
  say "wheels: $(cd "$WHEELS" && echo *.whl)"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"; then
    say "installing the wheels failed"
    exit 1
  fi
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  say "no wheels in $WHEELS: the Keras of $PYTHON is used, if it has one"
fi
# The package itself from the checkout, without its dependencies.
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

say ""
say "## Machine and versions"
say ""
say '```'
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee "$WORK/meta/nvidia-smi.txt" | tee -a "$LOG"
else
  echo "nvidia-smi: not found" | tee "$WORK/meta/nvidia-smi.txt" | tee -a "$LOG"
fi
# Read from the packages' metadata: nothing is imported (each backend's
# import is checked just below).
"$PYTHON" - <<'EOF' 2>&1 | tee "$WORK/meta/versions.txt" | tee -a "$LOG"
import importlib.metadata as metadata
import importlib.util
import platform

print("python", platform.python_version(), platform.machine())
spec = importlib.util.find_spec("keras_siamese")
print("keras_siamese from", spec.submodule_search_locations[0])
names = (
    "keras", "jax", "jaxlib", "jax-cuda13-plugin", "torch", "tensorflow", "numpy",
    "ml-dtypes", "optree", "namex", "h5py", "rich", "absl-py", "packaging",
)
for name in names:
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} -")
EOF
say '```'

# A backend that sees no GPU is left out of a full run: CPU numbers from the
# GPU machine would only spend its time.
ACTIVE=()
for backend in $BACKENDS; do
  device=$(KERAS_BACKEND=$backend timeout 120 "$PYTHON" -c "
import sys
sys.path.insert(0, sys.argv[1])
import _common
print(_common.framework_version() + '; ' + _common.device_description())
" "$BENCH" 2>"$WORK/$backend-device.stderr")
  rc=$?
  if [ "$rc" != 0 ]; then
    say "- $backend: cannot start (exit $rc): $(tail -n 1 "$WORK/$backend-device.stderr")"
  elif [ "$DRY_RUN" = 0 ] && [[ "$device" != *"GPU:"* ]]; then
    say "- $backend: sees no GPU ($device), left out"
  else
    say "- $backend: $device"
    ACTIVE+=("$backend")
  fi
  echo "$device" >"$WORK/meta/device-$backend.txt"
done
if [ "${#ACTIVE[@]}" = 0 ]; then
  record setup - "failed (no backend to run)" "$(elapsed)" "$BUDGET" "$BACKENDS"
  say "no backend to run; log $LOG, results $OUT/gpu.json"
  exit 1
fi
record setup - ok "$(elapsed)" "$BUDGET" "install, nvidia-smi, versions"

say ""
say "## Benchmarks"
for step in $STEPS; do
  for backend in "${ACTIVE[@]}"; do
    case $step in
      training)
        run_step training "$backend" "$PYTHON" "$BENCH/bench_training.py" \
          "${TRAINING_ARGS[@]}"
        ;;
      branches)
        run_step branches "$backend" "$PYTHON" "$BENCH/bench_branches.py" \
          "${BRANCHES_ARGS[@]}"
        ;;
      mining)
        run_step mining "$backend" "$PYTHON" "$BENCH/bench_mining.py" \
          "${MINING_ARGS[@]}"
        ;;
      search)
        # bench_search.py comes from another branch: run it where it exists.
        [ -f "$BENCH/bench_search.py" ] || continue
        run_step search "$backend" "$PYTHON" "$BENCH/bench_search.py" \
          ${SEARCH[@]+"${SEARCH[@]}"}
        ;;
      files)
        run_step files "$backend" "$PYTHON" "$BENCH/bench_files.py" \
          "${FILES_ARGS[@]}"
        ;;
      training_jit)
        # b_jit is b_package on JAX, which always compiles.
        [ "$backend" = torch ] || continue
        if [ "$(limit_of training_jit)" = 0 ]; then
          say ""
          say "### training_jit ($backend)"
          say ""
          say "skipped in a dry run: torch.compile alone takes about 30 s on a CPU"
          record training_jit "$backend" "skipped (dry run)" 0 0 "${JIT_ARGS[*]}"
        else
          run_step training_jit "$backend" "$PYTHON" "$BENCH/bench_training.py" \
            "${JIT_ARGS[@]}"
        fi
        ;;
      *)
        say "unknown step $step in STEPS"
        record "$step" "$backend" "failed (unknown step)" 0 0 "-"
        ;;
    esac
  done
done

say ""
say "## Summary"
say ""
"$PYTHON" "$BENCH/_gpu_report.py" "$WORK" "$OUT/gpu.json" --summary | tee -a "$LOG"
say ""
say "total: $(elapsed)s of the ${BUDGET}s budget; log $LOG, results $OUT/gpu.json"
# Exit status: 1 if a step failed or timed out (skipped steps do not count).
failures=$(cut -f3 "$WORK/steps.tsv" | grep -cE '^(failed|timeout)')
rm -rf "$WORK"
[ "$failures" = 0 ]
