#!/usr/bin/env bash
# Schemathesis (PyPI), the property-based API tester that checks `flujo serve` against its own OpenAPI
# document (crates/flujo-cli/tests/api_schema.rs).
#
#   scripts/schemathesis.sh install   # install if needed; print the path of the `schemathesis` executable
#   scripts/schemathesis.sh path      # print that path if installed (exit 1 otherwise), never install
#
# It is installed, when missing, into a virtualenv at `FLUJO_SCHEMATHESIS_VENV` (default
# /opt/flujo-schemathesis-venv: about 40 MB, a few seconds from PyPI) at the version pinned below, which the
# test's command-line flags are written for. Installs are serialized by a lock, so concurrent test runs share
# one venv. Any failure (no PyPI, no python3 venv module) exits non-zero with the reason on stderr.
set -euo pipefail

cmd="${1:-}"
venv="${FLUJO_SCHEMATHESIS_VENV:-/opt/flujo-schemathesis-venv}"
schemathesis_version="4.32.5"

installed() {
    [[ -x "$venv/bin/schemathesis" ]] &&
        [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$schemathesis_version" ]]
}

ensure_installed() {
    if installed; then
        echo "$venv/bin/schemathesis"
        return
    fi
    mkdir -p "$(dirname "$venv")"
    (
        flock 9
        if ! installed; then
            echo "schemathesis.sh: installing schemathesis==$schemathesis_version into $venv" >&2
            rm -rf "$venv"
            if ! python3 -m venv "$venv" >&2; then
                # Debian's python3 needs its venv package; install it when we may.
                if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                    rm -rf "$venv"
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2 \
                        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2; }
                fi
                python3 -m venv "$venv" >&2 || { echo "schemathesis.sh: python3 -m venv $venv failed" >&2; exit 1; }
            fi
            "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "schemathesis==$schemathesis_version" >&2 \
                || { echo "schemathesis.sh: pip install schemathesis==$schemathesis_version failed (is PyPI reachable?)" >&2; exit 1; }
        fi
    ) 9>"$venv.lock" || exit 1
    installed || { echo "schemathesis.sh: $venv has no schemathesis $schemathesis_version after the install" >&2; exit 1; }
    echo "$venv/bin/schemathesis"
}

case "$cmd" in
install)
    ensure_installed
    ;;
path)
    installed || exit 1
    echo "$venv/bin/schemathesis"
    ;;
*)
    echo "usage: $0 install|path" >&2
    exit 2
    ;;
esac
