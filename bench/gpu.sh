#!/usr/bin/env bash
# One script for a bare GPU machine (Python 3.12 and torch with CUDA, nothing else, no internet): measures
# clips/s, peak memory and MFU of a dfew-b16 training step with and without gradient checkpointing and
# torch.compile (bench/gpu_step.py), and writes OUT/gpu_step.json and OUT/gpu_step.md. At most 8 minutes.
#
#   bench/gpu.sh --prepare            here, with internet: small wheels for the bare machine -> bench/wheelhouse/
#   bench/gpu.sh OUT [gpu_step args]  there: install what is missing from bench/wheelhouse/, then measure
#   bench/gpu.sh --smoke OUT          anywhere: the CPU smoke run (tiny config), in the current Python
#
# bench/wheelhouse/ is git-ignored; carry it to the GPU machine with the tree. PYTHON picks the interpreter
# (default python3); TORCH_VERSION (default: the local torch) picks the matching torchvision wheel.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WHEELS="$HERE/wheelhouse"
PYTHON="${PYTHON:-python3}"
# open_clip's imports other than torch, resolved with their own dependencies; PyYAML and numpy for ours
RESOLVED="ftfy regex tqdm huggingface_hub safetensors pyyaml numpy"
# these three depend on torch, which must not be downloaded: taken without dependencies
NODEPS="open_clip_torch==3.3.0 timm"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS"
  torch_version="${TORCH_VERSION:-$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')}"
  # torchvision X.Y pairs with torch 2.(Y-15): 0.24 <-> 2.9, 0.25 <-> 2.10, ...
  tv="0.$(( $(echo "$torch_version" | cut -d. -f2) + 15 )).*"
  common=(--dest "$WHEELS" --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
  # shellcheck disable=SC2086
  "$PYTHON" -m pip download "${common[@]}" $RESOLVED
  # shellcheck disable=SC2086
  "$PYTHON" -m pip download "${common[@]}" --no-deps $NODEPS "torchvision==$tv"
  du -sh "$WHEELS"
  exit 0
fi

if [ "${1:-}" = "--smoke" ]; then
  out="${2:?usage: bench/gpu.sh --smoke OUT}"
  exec "$PYTHON" "$HERE/gpu_step.py" --smoke --out "$out"
fi

out="${1:?usage: bench/gpu.sh OUT [gpu_step.py options] | --prepare | --smoke OUT}"
shift
mkdir -p "$out"
venv="${TMPDIR:-/tmp}/fineclip-gpu-venv"
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$venv"  # torch comes from the machine
fi
missing=$("$venv/bin/python" - <<'PY'
import importlib.util
need = {"open_clip": "open_clip_torch", "torchvision": "torchvision", "yaml": "pyyaml", "numpy": "numpy",
        "ftfy": "ftfy", "regex": "regex", "timm": "timm", "huggingface_hub": "huggingface_hub",
        "safetensors": "safetensors", "tqdm": "tqdm"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
  [ -d "$WHEELS" ] || { echo "bench/gpu.sh: missing $missing and no $WHEELS; run bench/gpu.sh --prepare where there is internet" >&2; exit 2; }
  # the wheelhouse without resolving (the machine's torch must not be replaced); its torchvision if none
  wheels=()
  for w in "$WHEELS"/*.whl; do
    case "$(basename "$w")" in torchvision-*) [[ " $missing " == *" torchvision "* ]] || continue ;; esac
    wheels+=("$w")
  done
  "$venv/bin/python" -m pip install --quiet --no-index --no-deps "${wheels[@]}"
fi
"$venv/bin/python" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
PY
# 8 minutes in all: plain and checkpointing take well under a minute each, compile the rest
timeout --signal=INT 470 "$venv/bin/python" "$HERE/gpu_step.py" --out "$out" "$@" || echo "gpu_step exited $?"
cat "$out/gpu_step.md"
