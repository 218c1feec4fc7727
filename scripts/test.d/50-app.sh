#!/usr/bin/env bash
# The desktop app: UI type check + unit tests (vitest with Tauri's mockIPC), the UI build, then the
# real built app end to end under Xvfb, driven through tauri-driver and WebKitWebDriver.
# Bounded: each step has a timeout; the e2e caps itself (tests/app/e2e.py --deadline).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

ensure_apt "${HUM_APT_APP[@]}" xvfb xauth webkit2gtk-driver dbus-x11 fonts-dejavu-core
ensure_node
ensure_rust
cd "$HUM_ROOT/ui"

step "app: npm ci"
npm_ci .
step "app: type check and UI unit tests (vitest)"
timeout 180 npx tsc --noEmit
timeout 300 npx vitest run
step "app: UI build (ui/dist)"
timeout 180 npx vite build --logLevel warn
step "app: the browser client's build (ui/dist-web, docs/browser.md)"
timeout 180 npx vite build --mode web --logLevel warn
note "web client: $(cat dist-web/assets/*.js dist-web/assets/*.css | gzip -c | wc -c) bytes of JS + CSS gzip (target 250 KB)"

cd "$HUM_ROOT"
step "app: building hum-app (debug, UI embedded), hum-relay and the hum CLI (the e2e bot)"
# The same build as scripts/test (same feature set), so only hum-app recompiles for the new ui/dist.
timeout 1800 cargo build --workspace --bins --locked
TARGET="${CARGO_TARGET_DIR:-$HUM_ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$HUM_ROOT/$TARGET" ;; esac

ensure_cargo_tool tauri-driver tauri-driver@2.1.0

step "app: end to end under Xvfb (tauri-driver + WebKitWebDriver)"
mkdir -p "$HUM_ROOT/tests/artifacts/app"
timeout 540 xvfb-run -a -s "-screen 0 1280x800x24" \
  dbus-run-session -- python3 "$HUM_ROOT/tests/app/e2e.py" \
  --app "$TARGET/debug/hum-app" --relay-bin "$TARGET/debug/hum-relay" --hum-bin "$TARGET/debug/hum" \
  --screenshots "$HUM_ROOT/tests/artifacts/app" --deadline 480
