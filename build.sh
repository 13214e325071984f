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

# tests/e2e's npm packages (pinned in its package-lock.json): playwright-core for the browser tests, binaryen
# (wasm-opt) for the dist build, onnxruntime-web for the bench page (www/bench.html).
need_npm_packages() {
  local p missing=
  for p in playwright-core binaryen onnxruntime-web; do
    [ -d "tests/e2e/node_modules/$p" ] || missing=1
  done
  [ -z "$missing" ] && return
  say "installing the npm packages of tests/e2e (browser tests, wasm-opt, the bench page's onnxruntime-web)"
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
}

# --- builds -----------------------------------------------------------------------------------------------

# build_wasm PROFILE OUT_DIR: the core compiled to wasm, bound for the browser with wasm-bindgen. SIMD128 is on
# for wasm32 (.cargo/config.toml; burn's `simd` feature in Cargo.toml): Flex, the CPU fallback, needs it to be
# fast, and every current browser has it. The dist build then goes through wasm-opt.
build_wasm() {
  local profile=$1 out=$2
  need_wasm_target
  need_wasm_bindgen
  say "building the wasm core (profile $profile)"
  cargo build --lib --locked --target "$WASM_TARGET" --profile "$profile"
  wasm-bindgen --target web --no-typescript --out-dir "$out" "target/$WASM_TARGET/$profile/$CRATE.wasm"
  if [ "$profile" = dist ]; then optimize_wasm "$out/${CRATE}_bg.wasm"; fi
  say "wasm core: $(wasm_size "$out/${CRATE}_bg.wasm") in $out"
}

wasm_size() {
  printf '%s bytes, %s gzip -9' "$(wc -c <"$1")" "$(gzip -9c "$1" | wc -c)"
}

# wasm-opt (binaryen, pinned in tests/e2e/package.json) on wasm-bindgen's output, in place. WASM_OPT=-Oz (or
# any wasm-opt level, or "none") overrides the level. Measured on the SIMD dist build (full tiny encoder at 512, CPU
# fallback): -O3 4.67 MB gzipped and as fast as no wasm-opt; -Oz 1% smaller (4.62 MB) but ~30% slower.
# The --enable flags are the features rustc's wasm32 output uses (SIMD128 from .cargo/config.toml).
optimize_wasm() {
  local wasm=$1 level=${WASM_OPT:--O3}
  [ "$level" = none ] && return
  need_npm_packages
  say "wasm-opt $level ($(wasm_size "$wasm") before; takes a few minutes)"
  node tests/e2e/node_modules/binaryen/bin/wasm-opt "$level" --enable-simd --enable-bulk-memory \
    --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals --enable-reference-types \
    --enable-multivalue "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
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
  # The `tests` profile: release code with the GPU compiler stack unoptimised (Cargo.toml says why).
  say "native tests (cargo test --profile tests)"
  cargo test --profile tests --locked
  say "native CLI for the browser tests"
  cargo build --profile tests --locked --bin memseg
  build_wasm wasm-test target/wasm-test-pkg
  say "browser tests (headless Chromium, WebGPU through SwiftShader)"
  MEMSEG_PKG=target/wasm-test-pkg MEMSEG_BIN=target/tests/memseg \
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
