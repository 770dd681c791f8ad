#!/usr/bin/env bash
# Debian's own Python ships `venv` without ensurepip (package python3.X-venv): install it when missing.
# Usage: ensure_venv_module.sh PYTHON
set -euo pipefail
python="$1"
version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 && exit 0

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
    if [ "$sudo" != none ]; then
        echo "Installing Python's venv module (Debian package python${version}-venv) ..."
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python${version}-venv" >/dev/null
        "$python" -c "import ensurepip, venv" >/dev/null 2>&1 && exit 0
    fi
fi
echo "Python $version ($python) cannot create virtual environments: install python${version}-venv" \
     "(Debian/Ubuntu: sudo apt-get install python${version}-venv) and run the make target again." >&2
exit 1
