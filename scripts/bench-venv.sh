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
"$venv/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null
echo "bench venv ready: $("$venv/bin/litellm" --version 2>/dev/null | tail -n 1 || echo "$spec")"
