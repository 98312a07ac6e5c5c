#!/usr/bin/env bash
# Replays the training chain of the bundled model (src/pandiff/weights/world-s/TRAINING.md says
# why each stage exists). About 3.5 hours on 2 idle CPU cores; every stage resumes with the same
# command after an interruption (add --resume to the interrupted `pandiff train`).
#
#   bash scripts/train_bundled.sh            # data in ./data, runs in ./runs, result in runs/bundled
set -euo pipefail
DATA=${DATA:-data}
RUNS=${RUNS:-runs}

[ -d "$DATA/world-20k" ] || pandiff make-world --out "$DATA/world-20k" --n 20000 --seed 0
[ -f "$DATA/features-pixel/manifest.json" ] || pandiff prepare --data "$DATA/world-20k" \
    --out "$DATA/features-pixel" --codec identity --text-encoder minilm \
    --image-size 64 --map-size 64 --max-captions 3

train() {  # train RUN_NAME [--set ...]: one stage of configs/world-s-pixel.yaml, exported to RUN/final
    local run=$1
    shift
    [ -f "$RUNS/$run/final/pandiff_pipeline.json" ] && return 0
    pandiff train --config configs/world-s-pixel.yaml --set "data.features=$DATA/features-pixel" \
        --run-dir "$RUNS/$run" --no-progress "$@"
}
OLD=(--set schedule.beta_schedule=scaled_linear --set loss.x0_weight_cap=1)

# 1-2: the first recipe (scaled-linear betas): epsilon, then v prediction
train bundled-1 "${OLD[@]}" --set schedule.image_prediction=epsilon --set train.steps=2750
train bundled-2 "${OLD[@]}" --set schedule.image_prediction=v_prediction --set train.warmup_steps=100 \
    --set train.steps=1000 --set "model.init=$RUNS/bundled-1/final/model"
# 3: cosine betas (zero terminal SNR), still v prediction
train bundled-3 --set schedule.image_prediction=v_prediction --set loss.x0_weight_cap=1 \
    --set train.warmup_steps=100 --set train.steps=1500 --set "model.init=$RUNS/bundled-2/final/model"
# 4: the config's recipe: cosine betas, clean-image prediction with the capped v-loss weight
train bundled-4 --set train.warmup_steps=100 --set train.steps=3750 \
    --set "model.init=$RUNS/bundled-3/final/model"
# 5: cool-down: lr 2e-4 decaying linearly to 0, faster EMA
train bundled-5 --set train.lr=2e-4 --set train.lr_schedule=linear --set train.warmup_steps=20 \
    --set train.steps=1200 --set train.ema_decay=0.995 --set "model.init=$RUNS/bundled-4/final/model"
rm -rf "$RUNS/bundled" && cp -r "$RUNS/bundled-5/final" "$RUNS/bundled"
echo "bundled model: $RUNS/bundled (compare with src/pandiff/weights/world-s)"
