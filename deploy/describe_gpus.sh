#!/bin/bash
# `fineprep describe` on every GPU of one machine without a scheduler: one process per GPU, each
# pinned with CUDA_VISIBLE_DEVICES and working on its own shard i/N of the clips.
#
#   deploy/describe_gpus.sh STORE [N_GPUS] [MODEL]
#
# Each process writes its own Parquet parts; re-running skips clips already described.
set -euo pipefail

STORE="${1:?usage: deploy/describe_gpus.sh STORE [N_GPUS] [MODEL]}"
N="${2:-$(nvidia-smi --list-gpus | wc -l)}"
MODEL="${3:-llava}"
mkdir -p "$STORE/logs"

PIDS=()
for ((i = 0; i < N; i++)); do
    CUDA_VISIBLE_DEVICES="$i" fineprep describe --store "$STORE" --model "$MODEL" --engine vllm \
        --shard "$i/$N" > "$STORE/logs/describe-$i.log" 2>&1 &
    PIDS+=($!)
done
FAILED=0
for i in "${!PIDS[@]}"; do
    wait "${PIDS[$i]}" || { echo "shard $i/$N failed; see $STORE/logs/describe-$i.log" >&2; FAILED=1; }
done
exit "$FAILED"
