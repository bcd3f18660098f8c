#!/usr/bin/env bash
# Create .venv-bench with LiteLLM's proxy, the anchor of benchmarks/proxy_overhead.py. It lives
# apart from .venv because litellm[proxy] pins versions (fastapi, uvicorn, openai, ...) that clash
# with the project's lock.
set -euo pipefail
venv=${1:-.venv-bench}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
spec=${LITELLM_SPEC:-"litellm[proxy]==1.106.2"}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec"
# Offline here: use the cost map bundled in the wheel instead of fetching it from GitHub.
export LITELLM_LOCAL_MODEL_COST_MAP=True
version=$("$venv/bin/litellm" --version 2>/dev/null | grep -m1 -oE '[0-9]+(\.[0-9]+)+')
echo "bench venv ready in $venv: LiteLLM $version"
