#!/usr/bin/env bash
# Check the Python that will hold .venv: version 3.11 or 3.12, able to create a virtual environment.
# Debian's own Python ships `venv` without ensurepip (package python3.X-venv): install it when missing.
# Usage: ensure_venv_module.sh PYTHON
set -euo pipefail
python="${1:-}"
if [ -z "$python" ] || ! command -v "$python" >/dev/null 2>&1; then
    echo "No Python 3.11 or 3.12 found (looked for python3.11, python3.12, python3): install one," \
         "e.g. sudo apt-get install python3, and run the make target again (or: make PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "$version" in
    3.11|3.12) ;;
    *) echo "$python is Python $version; the course is tested with 3.11 and 3.12 (PyTorch 2.9.1):" \
            "run the make target with PYTHON=/path/to/python3.11" >&2
       exit 1 ;;
esac
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 && exit 0

if bash "$(dirname "$0")/apt_install.sh" "python${version}-venv" &&
   "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
    exit 0
fi
echo "Python $version ($python) cannot create virtual environments: install python${version}-venv" \
     "(Debian/Ubuntu: sudo apt-get install python${version}-venv) and run the make target again." >&2
exit 1
