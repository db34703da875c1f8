#!/usr/bin/env bash
# The paper's Table 2 on the phantom, both methods side by side, end to end from documented commands.
#
#   OMP_NUM_THREADS=1 bash benchmarks/table2_phantom.sh [WORK]          # WORK defaults to runs/table2
#
# Steps (each is skipped when its output is already in WORK, so an interrupted run continues; wall times are
# appended to WORK/times.tsv):
#   1. phantom: runs/phantom-demo if it is there (the phantom the demo model was trained on: 2,000 images at
#      128 px, seed 0, indexed with a patient-level split), else the same made afresh in WORK/phantom;
#   2. attribute classifier on its train/val split (scored once on test);
#   3. the SCM baseline, small preset (64 px), with a graph that also holds Cardiomegaly, $SCM_STEPS steps;
#   4. edits of the first $LIMIT test images by the shipped demo model (direct inversion, 20 steps) and by the
#      SCM, with do(sex), do(Cardiomegaly) and do(race) in both directions (an edit that leaves an image's
#      record as it is, e.g. do(sex=Female) of a woman, is a null edit: `cfaudit evaluate` reports it apart);
#   5. cfaudit evaluate at 192 px (the default; model axioms on the first 8 images) and at 64 px (the SCM's
#      resolution; no model axioms).
#
# CFAUDIT overrides the command (default: cfaudit), e.g. CFAUDIT="python my_entry_point.py".
set -euo pipefail

WORK=${1:-runs/table2}
CFAUDIT=${CFAUDIT:-cfaudit}
LIMIT=${LIMIT:-32}
SCM_STEPS=${SCM_STEPS:-1000}
CLASSIFIER_EPOCHS=${CLASSIFIER_EPOCHS:-30}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"
TIMES="$WORK/times.tsv"

step() {  # step NAME DONE-FILE COMMAND...: run COMMAND unless DONE-FILE exists; log its wall time
  local name=$1 done_file=$2
  shift 2
  if [[ -e $done_file ]]; then
    echo "== $name: done ($done_file)"
    return
  fi
  echo "== $name: $*"
  local start=$SECONDS
  "$@"
  printf '%s\t%d s\t%s\n' "$name" "$((SECONDS - start))" "$*" >>"$TIMES"
}

# 1. The phantom and its index
if [[ -f runs/phantom-demo/index.csv ]]; then
  INDEX=runs/phantom-demo/index.csv
else
  INDEX=$WORK/phantom/index.csv
  step phantom "$WORK/phantom/phantom.json" $CFAUDIT phantom --out "$WORK/phantom" --n 2000 --size 128 --seed 0
  step index "$INDEX" $CFAUDIT data index --source phantom --root "$WORK/phantom" --out "$INDEX"
fi

# 2. The attribute classifier (never sees the test split)
step classifier "$WORK/classifier/classifier.json" \
  $CFAUDIT classifiers train --index "$INDEX" --out "$WORK/classifier" --epochs "$CLASSIFIER_EPOCHS" --device cpu

# 3. The SCM baseline: the default graph plus Cardiomegaly, so both methods take the same interventions
cat >"$WORK/graph.yaml" <<'EOF'
nodes:
  sex: binary
  race: categorical
  age: continuous
  Cardiomegaly: binary
  Pleural Effusion: binary
edges:
  - age -> Pleural Effusion
image_parents: all
EOF
step scm-train "$WORK/scm/model/scm.json" \
  $CFAUDIT scm train --index "$INDEX" --preset small --graph "$WORK/graph.yaml" --steps "$SCM_STEPS" \
  --out "$WORK/scm" --device cpu --threads 1

# 4. Edits of the same test images by both methods
DO=(--do "sex=Female" --do "sex=Male" --do "Cardiomegaly=1" --do "Cardiomegaly=0" --do "race=Black" --do "race=White")
step edit-diffusion "$WORK/edits-diffusion/edits.csv" \
  $CFAUDIT edit --model demo --index "$INDEX" --split test --limit "$LIMIT" "${DO[@]}" --steps 20 \
  --batch-size 4 --out "$WORK/edits-diffusion" --device cpu
step edit-scm "$WORK/edits-scm/edits.csv" \
  $CFAUDIT scm edit --model "$WORK/scm" --index "$INDEX" --split test --limit "$LIMIT" "${DO[@]}" \
  --out "$WORK/edits-scm" --device cpu

# 5. Table 2 and the axioms
step evaluate-192 "$WORK/table2/table2.md" \
  $CFAUDIT evaluate --edits "$WORK/edits-diffusion" --edits "$WORK/edits-scm" --classifier "$WORK/classifier" \
  --index "$INDEX" --out "$WORK/table2" --size 192 --axiom-images 8 --device cpu
step evaluate-64 "$WORK/table2-64px/table2.md" \
  $CFAUDIT evaluate --edits "$WORK/edits-diffusion" --edits "$WORK/edits-scm" --classifier "$WORK/classifier" \
  --index "$INDEX" --out "$WORK/table2-64px" --size 64 --no-model-axioms --device cpu

echo "== wall times ($TIMES):"
cat "$TIMES"
