#!/usr/bin/env bash
# Fronts of linear, TCH, smooth TCH and OMD-TCH on MultiMNIST (real 5k subset, CPU, scaled-down epochs),
# overlaid in one plot with their hypervolumes: runs/scalarizations/compare/comparison.{md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-5}
PREFS=${PREFS:-5}
LR=${LR:-0.01}
for m in linear tch stch omd_tch; do
  .venv/bin/moomtl sweep --config examples/multimnist.yaml --method "$m" --preferences "$PREFS" \
    --set train.epochs="$EPOCHS" --set optimizer.lr="$LR" --set train.progress=false --out "runs/scalarizations/$m"
done
.venv/bin/moomtl compare runs/scalarizations/linear runs/scalarizations/tch runs/scalarizations/stch \
  runs/scalarizations/omd_tch --out runs/scalarizations/compare
