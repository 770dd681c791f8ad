#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through passwordless sudo; exit 1 (quietly) when
# neither is possible or apt fails, so the caller can print its own advice.
# Usage: apt_install.sh PACKAGE...
set -euo pipefail
command -v apt-get >/dev/null 2>&1 || exit 1
if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else exit 1; fi
echo "Installing the Debian package(s) $* ..."
"${sudo[@]}" apt-get update -qq || exit 1
# env: sudo would drop DEBIAN_FRONTEND from the environment
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || exit 1
