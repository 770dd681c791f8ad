#!/usr/bin/env bash
# Make sure the FluidSynth shared library (needed by pyfluidsynth to render mini-IRMAS) is installed.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so'; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing the FluidSynth library (Debian package libfluidsynth3) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfluidsynth3 >/dev/null
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
