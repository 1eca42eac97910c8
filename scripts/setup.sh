#!/usr/bin/env bash
# Install what Cartwheel needs and is missing; skip what is already there at the right version.
# Sourced by `scripts/serve` and `scripts/test`; safe to run again (a second run takes seconds).
# Everything comes from the package registries (rustup's own targets, crates.io, npm, Debian apt).
set -euo pipefail

cartwheel_log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# `cargo install` a crate at an exact version unless `$3 --version` already reports it.
cartwheel_cargo_install() {
  local crate=$1 version=$2 probe=$3
  shift 3
  if command -v "$probe" >/dev/null 2>&1 && "$probe" --version 2>/dev/null | grep -q -- "$version"; then
    return
  fi
  cartwheel_log "installing $crate $version from crates.io (one-time)"
  cargo install "$crate" --version "$version" "$@"
}

# Install Debian packages (as root, or through sudo).
cartwheel_apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

cartwheel_setup_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    cartwheel_log "cargo is missing: install Rust with rustup first (https://rustup.rs)"
    exit 1
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cartwheel_log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

cartwheel_setup_test_tools() {
  # scripts/check-layers is a Python script (Debian ships python3 on most images; not on every minimal one).
  if ! command -v python3 >/dev/null 2>&1; then
    cartwheel_log "installing Debian's python3"
    cartwheel_apt_install python3
  fi
  # Any cargo-nextest ≥ 0.9 will do: keep the machine's if it has one.
  if ! cargo nextest --version >/dev/null 2>&1; then
    cartwheel_log "installing cargo-nextest from crates.io (one-time)"
    cargo install cargo-nextest --locked
  fi
}

# cargo-leptos builds the three bundles; it needs wasm-bindgen at exactly the lockfile's version and wasm-opt
# from npm's binaryen (Debian's is too old and silently breaks the output). See ../shared/TOOLCHAIN.md.
CARTWHEEL_CARGO_LEPTOS_VERSION=0.3.10

cartwheel_setup_leptos() {
  cartwheel_cargo_install cargo-leptos "$CARTWHEEL_CARGO_LEPTOS_VERSION" cargo-leptos --locked
  local bindgen
  bindgen=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
  # `--locked` fails for this crate on crates.io today (a pinned dependency is gone): install without it.
  cartwheel_cargo_install wasm-bindgen-cli "$bindgen" wasm-bindgen
  if ! [ -x node_modules/.bin/wasm-opt ] || ! node_modules/.bin/wasm-opt --version | grep -q "version $(node -p 'require("./package.json").devDependencies.binaryen.split(".")[0]')"; then
    cartwheel_log "installing binaryen (wasm-opt) from npm"
    npm ci --no-audit --no-fund
  fi
}

# End-to-end tests: Debian's Chromium (browsers cannot be downloaded here) and Playwright from npm.
cartwheel_setup_e2e() {
  if ! command -v chromium >/dev/null 2>&1; then
    cartwheel_log "installing Debian's chromium"
    cartwheel_apt_install chromium
  fi
  local wanted
  wanted=$(node -p 'require("./end2end/package.json").devDependencies["@playwright/test"]')
  local axe
  axe=$(node -p 'require("./end2end/package.json").devDependencies["@axe-core/playwright"]')
  if [ "$(node -p 'try { require("./end2end/node_modules/@playwright/test/package.json").version } catch { "" }')" != "$wanted" ] \
    || [ "$(node -p 'try { require("./end2end/node_modules/@axe-core/playwright/package.json").version } catch { "" }')" != "$axe" ]; then
    cartwheel_log "installing @playwright/test $wanted and @axe-core/playwright $axe from npm"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
}

# nginx, the load balancer in front of several instances (scripts/lb) and in the scale-out tests: Debian's.
cartwheel_setup_nginx() {
  if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ]; then
    cartwheel_log "installing Debian's nginx"
    # The package also tries to start a system nginx on port 80; where that fails (the port is taken), apt
    # reports an error although the binary we run ourselves is installed.
    cartwheel_apt_install nginx || [ -x /usr/sbin/nginx ]
  fi
}

# Redis for the multi-instance mode and its tests: Debian's redis-server (any 6.2 or newer runs our scripts).
cartwheel_setup_redis() {
  if ! command -v redis-server >/dev/null 2>&1 && ! [ -x /usr/bin/redis-server ]; then
    cartwheel_log "installing Debian's redis-server"
    cartwheel_apt_install redis-server
  fi
}
