#!/usr/bin/env bash
# Multi-node SeCo training with torchrun (DDP: NCCL on GPUs, Gloo on CPUs).
# Run this same script once on every node; the nodes meet at MASTER_ADDR:MASTER_PORT.
#
#   NNODES=2 NPROC_PER_NODE=8 MASTER_ADDR=node0 RUN_ID=voc-1 DATA=/shared/VOC2012 \
#       OUT=/shared/runs/voc-1 deploy/torchrun/train-multinode.sh --preset voc
#
# Arguments go to `seco train` (e.g. --preset coco --set train.iters=80000 --resume).
# Inside a Slurm allocation with one task per node (deploy/slurm/train-multinode.sbatch) the
# node count, the run id and the first node as MASTER_ADDR come from Slurm.
# Environment (defaults in brackets):
#   DATA            dataset root, the same path on every node       (required)
#   OUT             run folder on a shared filesystem               [runs/RUN_ID]
#   NNODES          number of nodes                                 [SLURM_NNODES or 1]
#   NPROC_PER_NODE  processes per node: a number, gpu, cpu or auto  [SLURM_GPUS_ON_NODE or gpu]
#   MASTER_ADDR     host name of the rendezvous node                [first node of the Slurm job]
#   MASTER_PORT     its port                                        [29500]
#   RUN_ID          rendezvous id, the same on every node           [SLURM_JOB_ID or seco-train]
#   MAX_RESTARTS    worker group restarts before giving up          [0]
#   TORCHRUN        how to run torchrun, split on spaces            [torchrun]
#                   e.g. TORCHRUN="docker run --rm --gpus all --network host --ipc host
#                   -v /shared:/shared --entrypoint torchrun seco-deploy:gpu"
#   SECO_DRY_RUN=1  print the command instead of running it
set -euo pipefail

: "${DATA:?is not set: the dataset root, the same path on every node}"
nnodes="${NNODES:-${SLURM_NNODES:-1}}"
nproc_per_node="${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-gpu}}"
run_id="${RUN_ID:-${SLURM_JOB_ID:-seco-train}}"
master_port="${MASTER_PORT:-29500}"
master_addr="${MASTER_ADDR:-}"
if [[ -z "$master_addr" && -n "${SLURM_JOB_NODELIST:-}" ]]; then
    # The first line, without a pipe into head (which would end scontrol with SIGPIPE).
    master_addr="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"
    master_addr="${master_addr%%$'\n'*}"
fi
if [[ -z "$master_addr" ]]; then
    if [[ "$nnodes" != "1" ]]; then
        echo "error: MASTER_ADDR is not set: name the node that hosts the rendezvous" \
            "(the same on every node)" >&2
        exit 2
    fi
    master_addr=localhost
fi

read -r -a launcher <<< "${TORCHRUN:-torchrun}"
cmd=(
    "${launcher[@]}"
    --nnodes "$nnodes"
    --nproc-per-node "$nproc_per_node"
    --rdzv-backend c10d
    --rdzv-endpoint "${master_addr}:${master_port}"
    --rdzv-id "$run_id"
    --max-restarts "${MAX_RESTARTS:-0}"
    --module seco_deploy.cli
    train --data "$DATA" --out "${OUT:-runs/${run_id}}"
    "$@"
)
if [[ -n "${SECO_DRY_RUN:-}" ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
echo "seco-train: node $(hostname), ${nnodes} node(s) x ${nproc_per_node}," \
    "rendezvous ${master_addr}:${master_port} id ${run_id}" >&2
exec "${cmd[@]}"
