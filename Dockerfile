# Images for running fineclip on machines and clusters (docs/cluster.md).
#
#   docker build --target pipeline -t fineclip-pipeline .   fineprep + dask (scheduler, workers, extract,
#                                                           describe against an OpenAI endpoint); no torch
#   docker build --target trainer  -t fineclip-trainer  .   finetrain (torch, open_clip); CUDA wheels
#
# `docker compose build` builds both. Build arguments:
#   PYTHON_IMAGE     the Python 3.11 base image (any Debian-based one with python3 and apt-get)
#   PIPELINE_TORCH   1 adds torch and torchvision to the pipeline image, for `fineprep describe --engine hf`
#   TORCH_INDEX_URL  an extra package index for torch (for example the PyTorch CPU index, for a
#                    smaller image); empty means PyPI's default CUDA build
#   WHEELHOUSE       a folder inside the build context holding every wheel the images need
#                    (`pip download` fills it): pip then installs with --no-index from it, for
#                    machines without a usable package index (air-gapped clusters); empty: the index
#
# No `# syntax=` line: the Dockerfile frontend built into the Docker engine is used, so a build
# needs no image registry. Layers are ordered so that a change to the sources rebuilds only the
# small layer that installs the project's wheel; the dependency layers (torch: gigabytes) stay cached.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG PIPELINE_TORCH=0
ARG WHEELHOUSE=

# ---------------------------------------------------------------------------------------------
# wheelhouse: the WHEELHOUSE folder, mounted by every pip step. Without one it holds only
# constraints.txt (a placeholder nothing reads: pip then uses the index).
FROM scratch AS wheelhouse
ARG WHEELHOUSE
COPY ${WHEELHOUSE:-constraints.txt} /wheelhouse/

# ---------------------------------------------------------------------------------------------
# base: Python 3.11, a virtual environment, a non-root user and the mount points.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=1 \
    FINECLIP_CACHE=/cache/fineclip \
    MPLCONFIGDIR=/tmp/matplotlib
# python3, not python: Debian's own Python (a debootstrap root) has no `python` command.
# The cache folders are writable by any user: compose runs the containers as FINECLIP_UID, which
# need not be the image's user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV" \
 && useradd --create-home --uid 1000 fineclip \
 && mkdir -p /data /stores /runs /cache/huggingface /cache/fineclip \
 && chown -R fineclip /stores /runs /cache \
 && chmod 1777 /cache/huggingface /cache/fineclip
WORKDIR /opt/fineclip
ENTRYPOINT ["tini", "--"]

# ---------------------------------------------------------------------------------------------
# wheel: the project built once into a wheel; the targets below install it with their extras.
FROM base AS wheel
ARG WHEELHOUSE
COPY pyproject.toml constraints.txt README.md* ./
COPY schemas schemas
COPY prompts prompts
COPY pipeline pipeline
COPY trainer trainer
RUN --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip wheel --no-deps ${WHEELHOUSE:+--no-index --find-links /wheelhouse} --wheel-dir /wheels . \
 && cp constraints.txt /wheels/constraints.txt

# ---------------------------------------------------------------------------------------------
# requirements: each target's dependency list, read from pyproject.toml. The targets copy only these
# lists, so an edit elsewhere in pyproject.toml (a tool setting) keeps their dependency layers cached.
FROM base AS requirements
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py pyproject.toml pipeline describe > pipeline.txt \
 && python requirements.py pyproject.toml trainer > trainer.txt

# ---------------------------------------------------------------------------------------------
# torch-0 / torch-1: the base without and with torch (and torchvision, which transformers' image
# processors use). The trainer and (with PIPELINE_TORCH=1) the pipeline image start from torch-1, so
# both share its layer instead of installing torch twice.
FROM base AS torch-0

FROM base AS torch-1
ARG WHEELHOUSE
ARG TORCH_INDEX_URL=
COPY constraints.txt /opt/fineclip/
RUN --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip install -c /opt/fineclip/constraints.txt ${WHEELHOUSE:+--no-index --find-links /wheelhouse} \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} torch torchvision

# ---------------------------------------------------------------------------------------------
# pipeline: `fineprep` with the pipeline and describe extras, plus bokeh for the Dask dashboard.
# The same image runs the scheduler, the workers and the client, so every process shares one
# environment (Dask ships functions by reference to installed modules).
FROM torch-${PIPELINE_TORCH} AS pipeline
ARG WHEELHOUSE
# opencv-contrib (pulled in by mediapipe) links libGL and glib even when no window is opened.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libegl1 libgles2 \
 && rm -rf /var/lib/apt/lists/*
COPY constraints.txt /opt/fineclip/
COPY --from=requirements /opt/fineclip/pipeline.txt /opt/fineclip/requirements.txt
RUN --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip install -c /opt/fineclip/constraints.txt ${WHEELHOUSE:+--no-index --find-links /wheelhouse} \
        -r /opt/fineclip/requirements.txt "bokeh>=3.1"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip install -c /wheels/constraints.txt ${WHEELHOUSE:+--no-index --find-links /wheelhouse} \
        "$(ls /wheels/fineclip-*.whl)[pipeline,describe]" \
 && fineprep --help > /dev/null
USER fineclip
CMD ["fineprep", "--help"]

# ---------------------------------------------------------------------------------------------
# trainer: `finetrain` with torch, torchvision and open_clip; needs neither mediapipe nor Dask.
FROM torch-1 AS trainer
ARG WHEELHOUSE
ARG TORCH_INDEX_URL=
COPY constraints.txt /opt/fineclip/
COPY --from=requirements /opt/fineclip/trainer.txt /opt/fineclip/requirements.txt
RUN --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip install -c /opt/fineclip/constraints.txt ${WHEELHOUSE:+--no-index --find-links /wheelhouse} \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /opt/fineclip/requirements.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheelhouse,source=/wheelhouse,target=/wheelhouse \
    pip install -c /wheels/constraints.txt ${WHEELHOUSE:+--no-index --find-links /wheelhouse} \
        "$(ls /wheels/fineclip-*.whl)[trainer]" \
 && finetrain --help > /dev/null
USER fineclip
CMD ["finetrain", "--help"]
