#!/usr/bin/env bash
# Installs what tests/browser.rs drives: Debian's Chromium and its ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver). Does nothing when both are
# there, so CI calls it on every run; installing needs root.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
PACKAGES=(chromium chromium-driver)

installed() { [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; }

if installed; then
  log "chromium and chromedriver are installed"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 \
  || die "$CHROMIUM or $CHROMEDRIVER is missing and there is no apt-get: install Chromium and its ChromeDriver at those paths"
[ "$(id -u)" -eq 0 ] \
  || die "$CHROMIUM or $CHROMEDRIVER is missing; installing them needs root: sudo $0 (or: sudo apt-get install -y ${PACKAGES[*]})"

log "installing ${PACKAGES[*]}"
apt_install "${PACKAGES[@]}"
installed || die "apt-get installed ${PACKAGES[*]} but $CHROMIUM or $CHROMEDRIVER is still missing"
log "installed: $("$CHROMEDRIVER" --version)"
