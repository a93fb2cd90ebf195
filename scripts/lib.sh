#!/usr/bin/env bash
# Shared by scripts/quickstart and scripts/test: install exactly the Debian packages that are
# missing, then configure and build a preset.
set -euo pipefail

BERTH_PACKAGES=(
  g++ cmake ninja-build ccache pkg-config git
  libcaf-dev libnats-dev nats-server libgit2-dev librocksdb-dev libsimdjson-dev libspdlog-dev
  libgtest-dev libgmock-dev libboost-dev libtomlplusplus-dev libcli11-dev libssl-dev zlib1g-dev
  libseccomp-dev bubblewrap lighttpd
)

# What only the tests need: the tool chains the setup tests run in the sandbox (Python venvs,
# the go command, cargo) and the browser the console's tests drive (chromium); installed by
# scripts/test, not by scripts/quickstart; and what scripts/lint runs (clang-format,
# clang-tidy, python3).
BERTH_TEST_PACKAGES=(python3-venv golang-go cargo chromium clang-format clang-tidy python3)

berth_missing_packages() {
  local missing=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  echo "${missing[@]:-}"
}

berth_install_packages() {
  local missing wanted=("${BERTH_PACKAGES[@]}")
  if [ "${1:-}" = "--with-tests" ]; then wanted+=("${BERTH_TEST_PACKAGES[@]}"); fi
  missing=$(berth_missing_packages "${wanted[@]}")
  if [ -z "$missing" ]; then
    echo "==> all ${#wanted[@]} Debian packages are installed"
    return 0
  fi
  if [ "$(id -u)" != "0" ]; then
    echo "error: these Debian packages are missing: $missing" >&2
    echo "       run this script as root, or install them: sudo apt-get install -y $missing" >&2
    exit 1
  fi
  echo "==> installing missing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
}

# The example agents (examples/agents, used by the e2e tests and `berth demo`) are node.js with
# the npm `nats` client: node from the machine or Debian's nodejs + npm, the client from the npm
# registry, pinned by examples/agents/package-lock.json.
berth_install_agent_deps() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if ! command -v node >/dev/null 2>&1; then
    if [ "$(id -u)" != "0" ]; then
      echo "error: node.js is missing; run as root or: sudo apt-get install -y nodejs npm" >&2
      exit 1
    fi
    echo "==> installing node.js (Debian: nodejs npm)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: node.js is installed without npm; install npm (Debian: apt-get install npm)" >&2
    exit 1
  fi
  local agents="$root/examples/agents"
  if [ ! -f "$agents/node_modules/nats/package.json" ] ||
     [ "$agents/package-lock.json" -nt "$agents/node_modules/.package-lock.json" ]; then
    echo "==> installing the example agents' npm packages (npm ci --prefix examples/agents)"
    npm ci --prefix "$agents" --no-audit --no-fund --loglevel=error
  fi
}

# The console's browser tests drive Debian's chromium with npm playwright-core (no browser
# download: playwright-core only), pinned by tests/browser/package-lock.json.
berth_install_browser_test_deps() {
  local root dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$root/tests/browser"
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "==> installing the browser tests' npm packages (npm ci --prefix tests/browser)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
}

berth_build() {
  local preset=$1
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  echo "==> configuring ($preset)"
  cmake --preset "$preset" >/dev/null
  echo "==> building ($preset, $(nproc) jobs)"
  cmake --build --preset "$preset" -j "$(nproc)"
}
