# Shared helpers for scripts/run, scripts/test and scripts/bench. Source it; do not run it.
# Every step is idempotent: it checks first and only installs what is missing.

set -euo pipefail

HUM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HUM_ROOT

step() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install sudo or run as root)"; fi
}

# Debian packages the build and the tests need (see ../shared/PLATFORM.md).
HUM_APT_BUILD=(pkg-config clang libclang-dev cmake nasm libssl-dev libasound2-dev libvpx-dev)
HUM_APT_APP=(libwebkit2gtk-4.1-dev libxdo-dev libayatana-appindicator3-dev librsvg2-dev)
HUM_APT_TEST=(xvfb xauth webkit2gtk-driver chromium dbus-x11 at-spi2-core fonts-dejavu-core
  iproute2 sox espeak-ng imagemagick)

_apt_updated=0
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
  step "installing Debian packages: ${missing[*]}"
  if [ "$_apt_updated" -eq 0 ]; then as_root apt-get update -q >&2; _apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

ensure_rust() {
  command -v cargo >/dev/null || {
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  }
  command -v cargo >/dev/null || die "Rust is not installed: install it with rustup (https://rustup.rs), then run this again"
  note "$(cargo --version)"
}

ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null || ensure_apt nodejs npm
  # vite 7 and playwright-core need Node.js 20 or newer (Debian 12's own nodejs is 18).
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] || die "Node.js $(node --version) is too old: the UI build and the browser tests need Node.js 20 or newer"
}

# cargo install NAME@VERSION unless BIN is already on PATH.
ensure_cargo_tool() {
  local bin="$1" spec="$2"
  command -v "$bin" >/dev/null && return 0
  [ -x "$HOME/.cargo/bin/$bin" ] && return 0
  step "installing $spec (cargo install, once)"
  cargo install --locked "$spec" >&2
}

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"
