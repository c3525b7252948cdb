#!/usr/bin/env bash
# Set up dsocr on a fresh machine, in a virtual environment, and say what was done.
#   bash scripts/setup.sh            -> .venv/ with torch and dsocr[all,test]; then use .venv/bin/python
# - The environment: an active one ($VIRTUAL_ENV) is used (linked as .venv); else .venv/ is created with python3
#   (no system pip: works where the system Python is externally managed, PEP 668).
# - torch: an installed build is kept (e.g. your CUDA build). Otherwise, with an NVIDIA GPU (nvidia-smi),
#   pip's default torch (a CUDA build); without one, the CPU build from PyTorch's CPU index, falling back to
#   the default index when that is unreachable. $DSOCR_TORCH_SPEC overrides the version (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'dsocr setup: %s\n' "$*"; }

if [ ! -e .venv ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        ln -s "$VIRTUAL_ENV" .venv
        say "using the active virtual environment $VIRTUAL_ENV (linked as .venv)"
    else
        python3 -m venv .venv
        say "created the virtual environment .venv with $(python3 --version)"
    fi
fi
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

TORCH_SPEC="${DSOCR_TORCH_SPEC:-torch==2.13.0}"
if "$PY" -c "import torch" >/dev/null 2>&1; then
    say "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "NVIDIA GPU found: installing $TORCH_SPEC (CUDA build)"
    "$PY" -m pip install -q "$TORCH_SPEC"
else
    say "no NVIDIA GPU: installing the CPU build of $TORCH_SPEC"
    "$PY" -m pip install -q --timeout 15 --retries 0 --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC" \
        2>/dev/null || "$PY" -m pip install -q "$TORCH_SPEC"
fi
"$PY" -m pip install -q -e ".[all,test]"
say "installed dsocr $("$PY" -c 'import dsocr_loaders; print(dsocr_loaders.__version__)') with torch \
$("$PY" -c 'import torch; print(torch.__version__, "(CUDA " + str(torch.version.cuda) + ")" if torch.version.cuda else "(CPU)")')"
say "run commands with .venv/bin/python, or activate it first: source .venv/bin/activate"
