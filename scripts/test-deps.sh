#!/usr/bin/env bash
# Installs what the tests need beside the Rust toolchain, when it is missing (Debian packages):
#   redis-server                         the fleet tests start their own on loopback ports
#   chromium, chromium-driver, fonts     the status page's browser test (headless, over WebDriver)
# Idempotent: does nothing when everything is there. Needs root (or sudo) only to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "test-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
