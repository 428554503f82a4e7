# Sourced by the launch scripts in tools/ (dist_*.sh, slurm_*.sh): picks the interpreter.
# PYTHON: $PYTHON when set; else the checkout's .venv/bin/python (what `make install`
# creates); else python3 from PATH (an activated environment, or where m3i_mm is installed).
# Run from a checkout, the checkout goes first on PYTHONPATH, so its m3i_mm is imported.
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(dirname "$TOOLS_DIR")
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$CHECKOUT/.venv/bin/python" ]; then
        PYTHON="$CHECKOUT/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        PYTHON=python3
    else
        echo "error: no Python interpreter found (no \$PYTHON, no $CHECKOUT/.venv, no python3" \
             "on PATH): set PYTHON=/path/to/python, or run make install" >&2
        exit 2
    fi
fi
if [ -d "$CHECKOUT/m3i_mm" ]; then
    export PYTHONPATH="$CHECKOUT${PYTHONPATH:+:$PYTHONPATH}"
fi
