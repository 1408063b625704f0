#!/usr/bin/env bash
# docs/results.md (sparse MTL): MWC+ALM+GrOWL pipeline on MDMTN and HPS vs the dense uniform baseline,
# MultiMNIST from the real 5k MNIST subset, CPU, scaled-down epochs (search 4 + retrain 2).
set -euo pipefail
cd "$(dirname "$0")/.."
for model in mdmtn_multimnist hps_multimnist; do
  .venv/bin/moomtl sparse --config examples/sparse_multimnist.yaml --set model.name=$model \
    --set train.progress=false --out runs/sparse/$model
  # Dense baseline with the same budget (search + retrain epochs), uniform weights, same optimizer.
  .venv/bin/moomtl train --config examples/sparse_multimnist.yaml --set model.name=$model \
    --set method="{name: uniform}" --set train.epochs=6 --set train.progress=false --out runs/sparse/${model}_uniform
done
