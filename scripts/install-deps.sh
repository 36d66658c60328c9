#!/usr/bin/env bash
# Installs what quatre needs to build and test on Debian 12: Debian packages and the npm packages of
# package.json. Idempotent: it installs only what is missing and never upgrades what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libcpp-httplib-dev
  libssl-dev  # cpp-httplib's https client (remote image URLs); its header includes OpenSSL's
  libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev python3
  clang libclang-rt-14-dev
  libpng-dev libjpeg62-turbo-dev libwebp-dev libgif-dev
  chromium  # the web chat page's browser tests (tests/web, Playwright drives it)
)
# Node.js and npm from Debian, unless a Node.js is already installed (e.g. NodeSource's, which bundles npm
# and conflicts with Debian's npm package).
command -v node >/dev/null && command -v npm >/dev/null || debian_packages+=(nodejs npm)

missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages (test references and, later, the web page's build): reinstalled only when the lock changes.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
