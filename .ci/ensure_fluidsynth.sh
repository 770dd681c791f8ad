#!/usr/bin/env bash
# Make sure the FluidSynth shared library (needed by pyfluidsynth to render mini-IRMAS) is installed,
# and the second General-MIDI sample library, FluidR3_GM (Debian's fluid-soundfont-gm, 148 MB).
# Usage: ensure_fluidsynth.sh [PYTHON]   (PYTHON: the project's interpreter, .venv/bin/python by default)
# A missing FluidSynth stops the caller (exit 1); a missing FluidR3_GM only warns: mini-IRMAS is then
# rendered from pretty_midi's TimGM6mb alone, and `irmas synth` says so loudly.
set -euo pipefail
python="${1:-.venv/bin/python}"
here="$(dirname "$0")"

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

have_fluidr3() {
    # the places irmas_lib.libraries.FLUIDR3_PATHS looks in (Debian/Ubuntu; Fedora and Arch)
    [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || [ -f /usr/share/soundfonts/FluidR3_GM.sf2 ]
}

missing=()
have_fluidsynth || missing+=(libfluidsynth3)
have_fluidr3 || missing+=(fluid-soundfont-gm)
[ ${#missing[@]} -eq 0 ] && exit 0
# one apt-get run for both; if that fails (no FluidR3 package on this system), FluidSynth alone
bash "$here/apt_install.sh" "${missing[@]}" || have_fluidsynth || bash "$here/apt_install.sh" libfluidsynth3 || true

if ! have_fluidr3; then
    cat >&2 <<'MSG'
WARNING: the sample library FluidR3_GM is not installed, so mini-IRMAS will be rendered from TimGM6mb
alone and the course's models will hear one sample library only. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install fluid-soundfont-gm
  Fedora:         sudo dnf install fluid-soundfont-gm
  Arch:           sudo pacman -S soundfont-fluid
then run the make target again (mini-IRMAS is rendered again when its libraries change).
MSG
fi
have_fluidsynth && exit 0
cat >&2 <<'MSG'
The FluidSynth library is missing; mini-IRMAS cannot be rendered without it. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install libfluidsynth3
  conda:          conda install -c conda-forge fluidsynth
  Homebrew:       brew install fluid-synth
then run the make target again.
MSG
exit 1
