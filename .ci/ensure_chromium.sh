#!/usr/bin/env bash
# Make sure a Chromium browser is installed for tests/test_browser_demo.py (notebook 07's widgets in a
# real browser, driven by Playwright for Python). Debian's `chromium` package, installed with apt-get
# when missing; Playwright's own browser download is never used (it cannot work offline or behind a
# registry-only network).
# Usage: ensure_chromium.sh
# Never fails: without Chromium the browser test skips and says why.
set -uo pipefail
here="$(dirname "$0")"

have_chromium() {
    # the names tests/test_browser_demo.py looks for (or $IRMAS_CHROMIUM, a path of the user's choice)
    [ -n "${IRMAS_CHROMIUM:-}" ] && [ -x "${IRMAS_CHROMIUM}" ] && return 0
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

have_chromium && exit 0
bash "$here/apt_install.sh" chromium && have_chromium && exit 0
cat >&2 <<'MSG'
NOTE: Chromium is not installed, so the browser test of notebook 07's demo (tests/test_browser_demo.py)
will be skipped. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install chromium   (Ubuntu: chromium-browser)
  Fedora:         sudo dnf install chromium
or point IRMAS_CHROMIUM at a Chromium/Chrome binary.
MSG
exit 0
