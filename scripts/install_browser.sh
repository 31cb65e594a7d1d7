#!/usr/bin/env bash
# Installs Debian's `chromium` for the dashboard's end-to-end tests (tests/e2e), if it is missing.
# Playwright drives this system browser through executable_path=/usr/bin/chromium: we never let
# Playwright download a browser build of its own (no network besides the package registries).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium present: $(chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2; exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-liberation: readable text in screenshots (Debian's chromium pulls only a minimal font set).
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
echo "chromium installed: $(chromium --version 2>/dev/null || echo unknown version)"
