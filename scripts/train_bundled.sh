#!/usr/bin/env bash
# Replays the training chain of the bundled model (src/pandiff/weights/world-s/TRAINING.md says
# why each stage exists). Stages 1-5 took about 3.5 hours on 2 idle CPU cores; stages 6-10 (batch
# 512-2048) took 14 minutes on one H100 and 18 minutes on one H200 and would take days on a CPU: run
# them where a GPU is (DEVICE=cuda also puts the feature preparation there); stages 11-16 took about
# 3.9 hours on 2 CPU cores. Every stage resumes
# with the same command after an interruption (add --resume to the interrupted `pandiff train`).
#
#   bash scripts/train_bundled.sh            # data in ./data, runs in ./runs, result in runs/bundled
#   DEVICE=cuda bash scripts/train_bundled.sh
set -euo pipefail
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
DEVICE=${DEVICE:-cpu}

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
# 6: a fresh 50k-scene world (seed 1: none of the seed-0 val scenes used for evaluation), batch
# 512, lr 8e-4 decaying linearly to 0 over 11500 steps. The shipped weights are the EMA at step
# 10800 (the GPU lease ended there; the lr was down to 5e-5). To replay them exactly, interrupt
# after checkpoint-00010800 and export it: the same command with --resume --set train.steps=10800.
[ -d "$DATA/world-50k-s1" ] || pandiff make-world --out "$DATA/world-50k-s1" --n 50000 --seed 1
[ -f "$DATA/features-50k-s1/manifest.json" ] || pandiff prepare --data "$DATA/world-50k-s1" \
    --out "$DATA/features-50k-s1" --codec identity --text-encoder minilm --image-size 64 --map-size 64 \
    --max-captions 3 --device "$DEVICE" --workers 8 --batch-size 512
train bundled-6 --set "data.features=$DATA/features-50k-s1" --set data.num_workers=6 --set sample.every=0 \
    --set train.compile=false --set train.batch_size=512 --set train.lr=8e-4 --set train.lr_schedule=linear \
    --set train.warmup_steps=300 --set train.steps=11500 --set train.ema_decay=0.999 \
    --set train.checkpoint_every=300 \
    --set "model.init=$RUNS/bundled-5/final/model"
# 7-8: another fresh world (seed 2, 60k scenes), batch 1024 with 10 data-loader workers: lr 6e-4
# (200 warm-up) -> 0 linear over 3050 steps, then 3e-4 (100 warm-up) -> 0 over 2000 steps
[ -d "$DATA/world-60k-s2" ] || pandiff make-world --out "$DATA/world-60k-s2" --n 60000 --seed 2
[ -f "$DATA/features-60k-s2/manifest.json" ] || pandiff prepare --data "$DATA/world-60k-s2" \
    --out "$DATA/features-60k-s2" --codec identity --text-encoder minilm --image-size 64 --map-size 64 \
    --max-captions 3 --device "$DEVICE" --workers 14 --batch-size 256
GPU=(--set sample.every=0 --set train.compile=false --set train.lr_schedule=linear --set train.ema_decay=0.999)
BIG=("${GPU[@]}" --set "data.features=$DATA/features-60k-s2" --set data.num_workers=10
    --set train.batch_size=1024 --set train.checkpoint_every=250)
train bundled-7 "${BIG[@]}" --set train.lr=6e-4 --set train.warmup_steps=200 --set train.steps=3050 \
    --set "model.init=$RUNS/bundled-6/final/model"
train bundled-8 "${BIG[@]}" --set train.lr=3e-4 --set train.warmup_steps=100 --set train.steps=2000 \
    --set "model.init=$RUNS/bundled-7/final/model"
# 9-10: another fresh world (seed 3): batch 2048 with 12 workers, lr 5e-4 (150 warm-up) -> 0 over
# 1750 steps; then batch 1024, 2e-4 (100 warm-up) -> 0 over 1700 steps
[ -d "$DATA/world-60k-s3" ] || pandiff make-world --out "$DATA/world-60k-s3" --n 60000 --seed 3
[ -f "$DATA/features-60k-s3/manifest.json" ] || pandiff prepare --data "$DATA/world-60k-s3" \
    --out "$DATA/features-60k-s3" --codec identity --text-encoder minilm --image-size 64 --map-size 64 \
    --max-captions 3 --device "$DEVICE" --workers 14 --batch-size 256
S3=("${GPU[@]}" --set "data.features=$DATA/features-60k-s3")
train bundled-9 "${S3[@]}" --set data.num_workers=12 --set train.batch_size=2048 --set train.lr=5e-4 \
    --set train.warmup_steps=150 --set train.steps=1750 --set train.checkpoint_every=150 \
    --set "model.init=$RUNS/bundled-8/final/model"
train bundled-10 "${S3[@]}" --set data.num_workers=10 --set train.batch_size=1024 --set train.lr=2e-4 \
    --set train.warmup_steps=100 --set train.steps=1700 --set train.checkpoint_every=250 \
    --set "model.init=$RUNS/bundled-9/final/model"
# 11 (CPU, ~45 min on 2 cores): a pixel refiner after the image head, trained with everything else
# frozen (the maps stay stage 10's); warm start = stage 10's predictions exactly. Text guidance 2
# is the folder's default since the image-judged guidance sweep.
train bundled-11 --set sample.every=0 --set train.batch_size=32 --set train.lr=1e-3 \
    --set train.lr_schedule=linear --set train.warmup_steps=100 --set train.steps=6000 \
    --set train.ema_decay=0.995 --set train.checkpoint_every=250 --set sample.guidance_scale=2 \
    --set model.overrides.refine_channels=32 --set "model.warm_start=$RUNS/bundled-10/final/model" \
    --set "model.trainable=[refiner., decoder_pred., final_layer.]"
# 12 (CPU, ~31 min): the refiner reads the map (refine_map; a zero-initialised map convolution, so
# stage 11's predictions exactly at the start), half the samples with the map given clean as in the
# redraw. Transformer and map still frozen.
MAPREF=(--set sample.every=0 --set train.batch_size=32 --set train.lr=1e-3 --set train.lr_schedule=linear
    --set train.warmup_steps=100 --set train.steps=5000 --set train.ema_decay=0.995
    --set train.checkpoint_every=250 --set sample.guidance_scale=2 --set sample.redraw_image=true
    --set loss.p_clean_map=0.5 --set loss.p_clean_image=0.05 --set model.overrides.refine_map=true
    --set "model.trainable=[refiner., decoder_pred., final_layer.]")
train bundled-12 "${MAPREF[@]}" --set run.seed=2 --set model.overrides.refine_channels=32 \
    --set "model.warm_start=$RUNS/bundled-11/final/model"
# 13 (CPU, ~47 min): a fresh 64-channel map-reading refiner; decoder_pred and final_layer from 12
train bundled-13 "${MAPREF[@]}" --set run.seed=3 --set model.overrides.refine_channels=64 \
    --set "model.warm_start=$RUNS/bundled-12/final/model"
# 14 (CPU, ~41 min): a 32-channel pixel refiner after the map head too (map_refine_channels; zero
# output at the start, so stage 13's predictions exactly), trained with the map head's own two
# layers and everything else frozen, on the map loss alone (no clean-map samples).
MAPHEAD=(--set sample.every=0 --set train.batch_size=32 --set train.lr=1e-3 --set train.lr_schedule=linear
    --set train.warmup_steps=100 --set train.steps=5000 --set train.ema_decay=0.995
    --set train.checkpoint_every=250 --set sample.guidance_scale=2 --set sample.map_guidance_scale=0
    --set sample.redraw_image=true --set sample.one_piece_instances=true
    --set loss.p_clean_map=0.0 --set loss.p_clean_image=0.1 --set model.overrides.refine_channels=64
    --set model.overrides.refine_map=true --set model.overrides.map_refine_channels=32
    --set "model.trainable=[map_refiner., map_decoder_pred., map_final_layer.]")
train bundled-14 "${MAPHEAD[@]}" --set run.seed=4 --set "model.warm_start=$RUNS/bundled-13/final/model"
# 15 (CPU, ~47 min): the map refiner widened by residual dilated convolutions (map_refine_dilations
# 2, 4, 8: 35x35-pixel reach; each starts at zero, so stage 14's predictions exactly), trained as 14.
train bundled-15 "${MAPHEAD[@]}" --set run.seed=5 --set "model.overrides.map_refine_dilations=[2, 4, 8]" \
    --set "model.warm_start=$RUNS/bundled-14/final/model"
# 16 (CPU, ~41 min): the image refiner widened too (refine_dilations 2, 6: 23x23 pixels), trained as
# 12-13 (half the samples with the map given clean; image refiner and head only).
train bundled-16 "${MAPREF[@]}" --set run.seed=6 --set train.steps=3000 \
    --set sample.map_guidance_scale=0 --set sample.one_piece_instances=true \
    --set model.overrides.refine_channels=64 --set "model.overrides.refine_dilations=[2, 6]" \
    --set model.overrides.map_refine_channels=32 --set "model.overrides.map_refine_dilations=[2, 4, 8]" \
    --set "model.warm_start=$RUNS/bundled-15/final/model"
rm -rf "$RUNS/bundled" && cp -r "$RUNS/bundled-16/final" "$RUNS/bundled"
echo "bundled model: $RUNS/bundled (compare with src/pandiff/weights/world-s)"
