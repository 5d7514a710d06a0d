# Sourced by scripts/run and scripts/test: create .venv if missing and install the project.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON3:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-${SWARMSECRETS_EXTRAS:-base}"
if [ ! -f "$stamp" ]; then
  echo "Installing swarmsecrets into $VENV (log: $VENV/install.log)..." >&2
  target="$ROOT"
  [ -n "${SWARMSECRETS_EXTRAS:-}" ] && target="$ROOT[$SWARMSECRETS_EXTRAS]"
  if ! { "$VENV/bin/pip" install --upgrade pip && "$VENV/bin/pip" install -e "$target"; } >"$VENV/install.log" 2>&1; then
    tail -n 30 "$VENV/install.log" >&2
    echo "pip install failed; see $VENV/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
