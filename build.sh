#!/usr/bin/env bash
# memseg build script. Run `./build.sh help` for the subcommands.
# Every subcommand installs what it lacks (and says so), so a fresh clone needs only rustup, cargo, node and npm.
set -euo pipefail
cd "$(dirname "$0")"

WASM_TARGET=wasm32-unknown-unknown
CRATE=memseg
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# --- installers -------------------------------------------------------------------------------------------

need_wasm_target() {
  rustup target list --installed | grep -qx "$WASM_TARGET" && return
  say "installing the Rust target $WASM_TARGET"
  rustup target add "$WASM_TARGET"
}

# wasm-bindgen's CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
need_wasm_bindgen() {
  local want have
  want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, "", $0); print; exit}' Cargo.lock)
  [ -n "$want" ] || die "cannot find the wasm-bindgen version in Cargo.lock"
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  [ "$have" = "$want" ] && return
  say "installing wasm-bindgen-cli $want (Cargo.lock's version; found '${have:-none}'; takes a few minutes)"
  cargo install wasm-bindgen-cli --version "$want"
}

apt_install() {
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || die "could not install $* (needs root or sudo)"
}

need_chromium() {
  [ -x /usr/bin/chromium ] || apt_install chromium
}

# lavapipe: a Vulkan driver on the CPU, so the native wgpu tests run on machines without a GPU.
need_vulkan() {
  ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && return
  apt_install mesa-vulkan-drivers || true
}

need_npm_packages() {
  [ -d tests/e2e/node_modules/playwright-core ] && return
  say "installing the browser tests' npm packages (tests/e2e)"
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
}

# --- builds -----------------------------------------------------------------------------------------------

# build_wasm PROFILE OUT_DIR: the core compiled to wasm, bound for the browser with wasm-bindgen.
build_wasm() {
  local profile=$1 out=$2
  need_wasm_target
  need_wasm_bindgen
  say "building the wasm core (profile $profile)"
  cargo build --lib --locked --target "$WASM_TARGET" --profile "$profile"
  wasm-bindgen --target web --no-typescript --out-dir "$out" "target/$WASM_TARGET/$profile/$CRATE.wasm"
  say "wasm core: $(du -h "$out/${CRATE}_bg.wasm" | cut -f1) ($(gzip -9c "$out/${CRATE}_bg.wasm" | wc -c | awk '{printf "%.1f MB", $1/1e6}') gzipped) in $out"
}

cmd_serve() {
  build_wasm dist www/pkg
  say "serving www/ at http://127.0.0.1:${PORT:-8080}/"
  exec node scripts/serve.mjs --port "${PORT:-8080}"
}

cmd_test() {
  need_chromium
  need_vulkan
  need_npm_packages
  say "native tests (cargo test --release)"
  cargo test --release --locked
  say "native CLI for the browser tests"
  cargo build --release --locked --bin memseg
  build_wasm wasm-test target/wasm-test-pkg
  say "browser tests (headless Chromium, WebGPU through SwiftShader)"
  MEMSEG_PKG=target/wasm-test-pkg MEMSEG_BIN=target/release/memseg \
    node --test --test-concurrency=1 tests/e2e/
}

cmd_help() {
  cat <<'USAGE'
usage: ./build.sh <command>
  serve   build the wasm core (release, full LTO) into www/pkg and serve www/ on http://127.0.0.1:8080
          (PORT=... to change the port)
  test    every test: cargo tests, the wasm build, and the browser tests in headless Chromium
  wasm    build the wasm core into www/pkg without serving it
  help    this text
USAGE
}

case "${1:-help}" in
  serve) cmd_serve ;;
  test) cmd_test ;;
  wasm) build_wasm dist www/pkg ;;
  help|-h|--help) cmd_help ;;
  *) cmd_help; die "unknown command '$1'" ;;
esac
