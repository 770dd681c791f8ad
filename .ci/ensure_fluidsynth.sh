#!/usr/bin/env bash
# Make sure the FluidSynth shared library (needed by pyfluidsynth to render mini-IRMAS) is installed.
# Usage: ensure_fluidsynth.sh [PYTHON]   (PYTHON: the project's interpreter, .venv/bin/python by default)
set -euo pipefail
python="${1:-.venv/bin/python}"

have_fluidsynth() {
    # The real question: can pyfluidsynth load the library? (Works for conda, Homebrew and non-root users.)
    if [ -x "$python" ] && "$python" -c "import fluidsynth" >/dev/null 2>&1; then
        return 0
    fi
    # Before the venv exists: the dynamic linker's cache (ldconfig lives in /sbin, off a user's PATH).
    local cache
    cache="$( { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null || true)"
    grep -q 'libfluidsynth\.so' <<<"$cache"
}

have_fluidsynth && exit 0

if bash "$(dirname "$0")/apt_install.sh" libfluidsynth3 && have_fluidsynth; then
    exit 0
fi
cat >&2 <<'MSG'
The FluidSynth library is missing; mini-IRMAS cannot be rendered without it. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install libfluidsynth3
  conda:          conda install -c conda-forge fluidsynth
  Homebrew:       brew install fluid-synth
then run the make target again.
MSG
exit 1
