# Shared by scripts/test, scripts/demo and scripts/bench (sourced, not run): the virtual environment
# with the project installed, and Node.js for the interop checks. Expects to run from the repo root.

setup_log() { printf '%s: %s\n' "${SETUP_NAME:-setup}" "$*" >&2; }

# ensure_venv [EXTRAS]: .venv with the project installed (extras e.g. "test" or "test,bench").
# Installs only when pyproject.toml changed or an extra is missing since the last install; the stamp
# records the extras installed, so scripts asking for fewer extras do not reinstall.
ensure_venv() {
  local wanted=${1:-test} python=${PYTHON:-python3}
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { setup_log "Python >= 3.11 is needed (found $("$python" --version 2>&1))"; return 1; }
  local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16) have="" extra missing=""
  [[ -f $stamp ]] && have=$(<"$stamp")
  for extra in ${wanted//,/ }; do
    [[ ,$have, == *,$extra,* ]] || missing=1
  done
  if [[ -n $missing ]]; then
    local extras=$wanted
    [[ -n $have ]] && extras=$have,$wanted
    setup_log "installing the project into .venv ($extras)"
    [[ -x .venv/bin/python ]] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$extras]"
    rm -f .venv/.installed-* && printf '%s' "$extras" > "$stamp"
  fi
}

ensure_node() {
  if ! command -v node >/dev/null; then
    setup_log "installing Node.js (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
  fi
}

# ensure_services [ARGS...]: scripts/services up, and its RINGRIFT_* exports in this shell.
ensure_services() {
  local exports
  exports=$(scripts/services up "$@") || { setup_log "the services did not start (see above)"; return 1; }
  eval "$exports"
  export RINGRIFT_REDIS_URL RINGRIFT_KAFKA_BOOTSTRAP
}
