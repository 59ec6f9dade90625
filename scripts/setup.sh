#!/usr/bin/env bash
# Set genforge up on a fresh machine: PyTorch (the CPU build where there is no NVIDIA GPU,
# never a multi-GB CUDA build by accident), then genforge itself with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check)
TORCH=2.13.0

if "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH' else 1)" 2>/dev/null; then
    echo "setup: torch $TORCH already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the CUDA build of torch $TORCH"
    "${PIP[@]}" "torch==$TORCH"
else
    # The CPU wheel: from a local wheelhouse when pip knows one, else PyTorch's CPU index.
    echo "setup: no GPU, installing the CPU build of torch $TORCH"
    "${PIP[@]}" "torch==$TORCH+cpu" 2>/dev/null \
        || "${PIP[@]}" "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu \
                                         --extra-index-url https://pypi.org/simple
fi
# The studio's browser tests drive Debian's chromium (never a browser build downloaded by playwright).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium for the studio's browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || echo "setup: chromium could not be installed; the browser tests will skip"
fi
"${PIP[@]}" -e ".[dev,web]"
echo "setup: done. Try: genforge train mnist-vae --minutes 2"
