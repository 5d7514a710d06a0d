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
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  if [ -n "${SWARMSECRETS_EXTRAS:-}" ]; then
    "$VENV/bin/pip" install -q -e "$ROOT[$SWARMSECRETS_EXTRAS]"
  else
    "$VENV/bin/pip" install -q -e "$ROOT"
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
