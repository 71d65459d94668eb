#!/usr/bin/env bash
# The model card's probe results: maeast-small vs the fbank baseline vs its own random
# initialisation, on two seeded generated datasets (5-fold linear probes, every layer, layer
# chosen on the validation folds).
#   bash recipes/maeast_small/evaluate.sh [WORK_DIR] [MODEL]
set -euo pipefail
work=${1:-runs/maeast-small-eval}
model=${2:-maeast-small}
mkdir -p "$work"

# 8 sound classes (tones, chirps, noises, impulses, AM), 40 x 2 s clips each, SNR 0-20 dB
[ -d "$work/sounds" ] || python -m probes.synthetic "$work/sounds" --layout esc50 --classes 8 \
    --per-class 40 --seconds 2 --seed 11 --snr 0,20
# 10 spoken words (espeak-ng, random speed and pitch), 40 x 1.5 s clips each, SNR 5-30 dB
[ -d "$work/words" ] || python -m probes.synthetic "$work/words" --layout esc50 --no-sounds \
    --classes 10 --words yes,no,up,down,left,right,on,off,stop,go --per-class 40 --seconds 1.5 \
    --seed 12 --snr 5,30

# default features (the 8 frequency tokens of a step concatenated), then frequency-averaged
# tokens (a probe can no longer read the spectral layout off a random projection)
for task in sounds words; do
    for freq_pool in concat mean; do
        echo "== $task, --freq-pool $freq_pool"
        maeast-embed probe "$work/$task" -m "$model" -m fbank -m random --layer all \
            --freq-pool "$freq_pool" -o "$work/report-$task-$freq_pool" -q
    done
done
