#!/usr/bin/env bash
# Debian's chromium, for the test that opens a timeline page in a real headless browser
# (tests/integration/browser.rs): installed where it is missing, a no-op where it is there.
# Needs root (apt-get) and Debian's package archive. Waits for another apt or dpkg to finish
# instead of failing on its lock.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium
command -v chromium >/dev/null 2>&1
