#!/usr/bin/env bash
# Set up dsocr on a fresh machine. torch is pinned first so pip keeps the build already present
# (the CPU wheel on CI) instead of pulling a CUDA build; on a GPU box install your CUDA torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[all,test]"
