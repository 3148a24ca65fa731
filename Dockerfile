# syntax=docker/dockerfile:1
# Images for running fineclip on machines and clusters (docs/cluster.md).
#
#   docker build --target pipeline -t fineclip-pipeline .   fineprep + dask (scheduler, workers, extract,
#                                                           describe against an OpenAI endpoint); no torch
#   docker build --target trainer  -t fineclip-trainer  .   finetrain (torch, open_clip); CUDA wheels
#
# `docker compose build` builds both. Build arguments:
#   PYTHON_IMAGE     the Python 3.11 base image
#   PIPELINE_TORCH   1 adds torch to the pipeline image, for `fineprep describe --engine hf`
#   TORCH_INDEX_URL  an extra package index for torch (for example the PyTorch CPU index, for a
#                    smaller image); empty means PyPI's default CUDA build
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# base: Python 3.11, a virtual environment, a non-root user and the mount points.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=1 \
    FINECLIP_CACHE=/cache/fineclip
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv "$VIRTUAL_ENV" \
 && useradd --create-home --uid 1000 fineclip \
 && mkdir -p /data /stores /runs /cache/huggingface /cache/fineclip \
 && chown -R fineclip /stores /runs /cache
WORKDIR /opt/fineclip
ENTRYPOINT ["tini", "--"]

# ---------------------------------------------------------------------------------------------
# wheel: the project built once into a wheel; the targets below install it with their extras.
FROM base AS wheel
COPY pyproject.toml constraints.txt README.md* ./
COPY schemas schemas
COPY prompts prompts
COPY pipeline pipeline
COPY trainer trainer
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && cp constraints.txt /wheels/constraints.txt

# ---------------------------------------------------------------------------------------------
# pipeline: `fineprep` with the pipeline and describe extras, plus bokeh for the Dask dashboard.
# The same image runs the scheduler, the workers and the client, so every process shares one
# environment (Dask ships functions by reference to installed modules).
FROM base AS pipeline
# opencv-contrib (pulled in by mediapipe) links libGL and glib even when no window is opened.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libegl1 libgles2 \
 && rm -rf /var/lib/apt/lists/*
ARG PIPELINE_TORCH=0
ARG TORCH_INDEX_URL=
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install -c /wheels/constraints.txt "$(ls /wheels/fineclip-*.whl)[pipeline,describe]" "bokeh>=3.1" \
 && if [ "$PIPELINE_TORCH" = "1" ]; then \
      pip install -c /wheels/constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} torch; \
    fi \
 && fineprep --help > /dev/null
USER fineclip
CMD ["fineprep", "--help"]

# ---------------------------------------------------------------------------------------------
# trainer: `finetrain` with torch, torchvision and open_clip; needs neither mediapipe nor Dask.
FROM base AS trainer
ARG TORCH_INDEX_URL=
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install -c /wheels/constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        "$(ls /wheels/fineclip-*.whl)[trainer]" \
 && finetrain --help > /dev/null
USER fineclip
CMD ["finetrain", "--help"]
