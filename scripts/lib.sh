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
HUM_APT_BUILD=(pkg-config clang libclang-dev cmake nasm libssl-dev libasound2-dev libvpx-dev libpipewire-0.3-dev libspa-0.2-dev libgbm-dev)
HUM_APT_APP=(libwebkit2gtk-4.1-dev libxdo-dev libayatana-appindicator3-dev librsvg2-dev)
# scripts/package: dpkg-shlibdeps (dpkg-dev) computes the packages' library dependencies.
HUM_APT_PACKAGE=(dpkg-dev)
HUM_APT_TEST=(xvfb xauth webkit2gtk-driver chromium dbus-x11 at-spi2-core fonts-dejavu-core
  iproute2 sox espeak-ng imagemagick coturn
  # hum bench sfu --sfu janus (tests/tests/voice_sfu.rs): Janus's VideoRoom beside Hum's SFU.
  janus
  # hum-relay's PostgreSQL store and Redis cluster membership: their tests start throwaway
  # servers (initdb/pg_ctl, redis-server) on Unix sockets (docs/cluster.md).
  postgresql redis-server)

# A build cache kept between runs (CARGO_TARGET_DIR outside the clone) grows with every change:
# each new dependency hash leaves old test binaries behind, and incremental state doubles the
# rest. The disk here fills well before df's size says (a link then dies with SIGBUS or ENOSPC),
# so before a build make sure there is room. Below HUM_MIN_FREE_GB free, drop incremental state
# and artefacts nothing has rebuilt for a day; a warm cache then needs room only for what
# changed, so the whole cache goes (a fresh machine's cold build, ~25 GB) only if that still
# leaves less than HUM_WIPE_FREE_GB.
HUM_MIN_FREE_GB="${HUM_MIN_FREE_GB:-25}"
HUM_WIPE_FREE_GB="${HUM_WIPE_FREE_GB:-15}"
free_gb() { df -P -BG "$1" | awk 'NR==2 {sub("G","",$4); print $4}'; }
ensure_build_space() {
  local dir="${CARGO_TARGET_DIR:-$HUM_ROOT/target}" free
  mkdir -p "$dir"
  free=$(free_gb "$dir")
  [ "$free" -ge "$HUM_MIN_FREE_GB" ] && return 0
  step "only ${free} GB free under $dir: pruning the build cache"
  rm -rf "$dir"/*/incremental "$dir"/fuzz/*/*/incremental
  find "$dir" -path '*/deps/*' -maxdepth 4 -type f -mmin +1440 -delete 2>/dev/null || true
  free=$(free_gb "$dir")
  if [ "$free" -lt "$HUM_WIPE_FREE_GB" ]; then
    note "still ${free} GB free: removing the whole build cache $dir"
    rm -rf "${dir:?}"/debug "${dir:?}"/release "${dir:?}"/fuzz
    free=$(free_gb "$dir")
  fi
  note "${free} GB free"
  [ "$free" -ge 8 ] || die "only ${free} GB free under $dir: a build needs about ${HUM_MIN_FREE_GB} GB"
}

_apt_updated=0
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
  step "installing Debian packages: ${missing[*]}"
  if [ "$_apt_updated" -eq 0 ]; then as_root apt-get -o DPkg::Lock::Timeout=600 update -q >&2; _apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2
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

# Tools the scripts install with cargo live in a root the scripts own, one folder per exact spec, and
# are never taken from PATH: a machine with a hand-installed or older copy still runs, the first time it
# meets a spec, the very install a new machine runs, so a broken spec fails on every machine, not only on
# new ones. HUM_TOOLS picks the root (default /var/tmp/hum-tools, kept between runs like the build cache);
# HUM_FRESH=1 starts from an empty temporary root and an empty npm cache, i.e. installs every tool and
# package as a new machine would (scripts/test --fresh sets it).
if [ -n "${HUM_FRESH:-}" ] && [ -z "${HUM_FRESH_ROOT:-}" ]; then
  HUM_FRESH_ROOT="$(mktemp -d /var/tmp/hum-fresh.XXXXXX)"
  export HUM_FRESH_ROOT
fi
if [ -n "${HUM_FRESH_ROOT:-}" ]; then HUM_TOOLS="$HUM_FRESH_ROOT/tools"; fi
HUM_TOOLS="${HUM_TOOLS:-/var/tmp/hum-tools}"
export HUM_TOOLS

# ensure_cargo_tool BIN NAME@X.Y.Z: installs the exact version into $HUM_TOOLS/cargo/NAME@X.Y.Z once and
# puts its bin/ first on PATH.
ensure_cargo_tool() {
  local bin="$1" spec="$2"
  [[ "$spec" =~ ^[A-Za-z0-9_-]+@[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "cargo tool spec '$spec' must pin an exact version (name@X.Y.Z)"
  local root="$HUM_TOOLS/cargo/$spec"
  if [ ! -x "$root/bin/$bin" ]; then
    step "installing $spec into $root (cargo install, once per machine and version)"
    # Its own build folder: the workspace's CARGO_TARGET_DIR is left alone.
    CARGO_TARGET_DIR="$HUM_TOOLS/cargo/build" cargo install --locked --root "$root" "$spec" >&2
    [ -x "$root/bin/$bin" ] || die "cargo install $spec did not produce $bin"
  fi
  export PATH="$root/bin:$PATH"
}

# ensure_npm_tool BIN PACKAGE@X.Y.Z: installs the exact npm package version into
# $HUM_TOOLS/npm/PACKAGE@X.Y.Z once (as ensure_cargo_tool does for cargo tools) and puts its
# node_modules/.bin first on PATH. The Tauri CLI ships a prebuilt binary this way (seconds, where
# `cargo install tauri-cli` takes ~10 minutes on 2 cores).
ensure_npm_tool() {
  local bin="$1" spec="$2"
  [[ "$spec" =~ ^(@[a-z0-9-]+/)?[a-z0-9-]+@[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "npm tool spec '$spec' must pin an exact version (name@X.Y.Z)"
  local root="$HUM_TOOLS/npm/${spec//\//+}"
  if [ ! -x "$root/node_modules/.bin/$bin" ]; then
    step "installing $spec into $root (npm, once per machine and version)"
    mkdir -p "$root"
    local args=(--no-audit --no-fund --loglevel=error --no-save --prefix "$root")
    if [ -n "${HUM_FRESH_ROOT:-}" ]; then args+=(--cache "$HUM_FRESH_ROOT/npm-cache" --prefer-online); fi
    timeout 600 npm install "${args[@]}" "$spec" >&2
    [ -x "$root/node_modules/.bin/$bin" ] || die "npm install $spec did not produce $bin"
  fi
  export PATH="$root/node_modules/.bin:$PATH"
}

# npm_ci [DIR]: npm ci from the lockfile; under HUM_FRESH with an empty cache, so every package is fetched.
npm_ci() {
  local args=(--no-audit --no-fund --loglevel=error)
  if [ -n "${HUM_FRESH_ROOT:-}" ]; then args+=(--cache "$HUM_FRESH_ROOT/npm-cache" --prefer-online); fi
  (cd "${1:-.}" && timeout 600 npm ci "${args[@]}")
}

# Under HUM_FRESH, check that every Debian package the scripts name exists in the archive (a renamed or
# misspelt package fails here even on a machine that has its files from elsewhere).
check_apt_names() {
  [ -n "${HUM_FRESH_ROOT:-}" ] || return 0
  command -v apt-cache >/dev/null || return 0
  if [ "$_apt_updated" -eq 0 ]; then as_root apt-get -o DPkg::Lock::Timeout=600 update -q >&2; _apt_updated=1; fi
  local p bad=()
  for p in "$@"; do apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || bad+=("$p"); done
  [ ${#bad[@]} -eq 0 ] || die "Debian packages named by the scripts are not in the archive: ${bad[*]}"
}

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"
