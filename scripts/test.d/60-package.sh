#!/usr/bin/env bash
# The installers (scripts/package), checked: only when HUM_PACKAGE=1, because building them is a
# release build of the app (many minutes on 2 cores). HUM_PACKAGE_SKIP_BUILD=1 checks the
# packages already in target/packages (or HUM_PACKAGE_OUT) without rebuilding them.
#
# Checks: each .deb's control fields (name, version, architecture, Depends covering what
# dpkg-shlibdeps finds in its binaries), its files (binaries, the app's desktop entry and icons,
# the relay's unit and conffile), `systemd-analyze verify` of the relay's unit against the
# unpacked package, then `apt install` of the relay and CLI packages: the installed hum-relay
# serves the installed hum CLI (an account is created and logs in), and removing the packages
# leaves no hum-relay process.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

if [ "${HUM_PACKAGE:-0}" != 1 ]; then
  note "packages: skipped (HUM_PACKAGE=1 builds and checks the .deb files; slow)"
  exit 0
fi
OUT="${HUM_PACKAGE_OUT:-$HUM_ROOT/target/packages}"
export HUM_PACKAGE_OUT="$OUT"
if [ "${HUM_PACKAGE_SKIP_BUILD:-0}" != 1 ]; then
  "$HUM_ROOT/scripts/package"
fi
ensure_apt "${HUM_APT_PACKAGE[@]}"

fail() { die "package check: $*"; }
field() { dpkg-deb -f "$1" "$2"; }
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$HUM_ROOT/Cargo.toml")"
ARCH="$(dpkg --print-architecture)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check_deb() { # FILE PACKAGE PATH... : fields and files
  local f="$1" pkg="$2"
  shift 2
  [ -f "$f" ] || fail "$f is missing"
  [ "$(field "$f" Package)" = "$pkg" ] || fail "$f: Package is $(field "$f" Package)"
  [ "$(field "$f" Version)" = "$VERSION" ] || fail "$f: Version is $(field "$f" Version)"
  [ "$(field "$f" Architecture)" = "$ARCH" ] || fail "$f: Architecture is $(field "$f" Architecture)"
  local contents
  contents="$(dpkg-deb -c "$f" | awk '{print $6}' | sed 's|^\./|/|')"
  local p
  for p in "$@"; do
    grep -qx "$p" <<<"$contents" || fail "$f does not contain $p"
  done
  # Every library package the binaries need is declared.
  rm -rf "$work/x" && mkdir -p "$work/x" && dpkg-deb -x "$f" "$work/x"
  local bins=() need dep
  mapfile -t bins < <(find "$work/x/usr/bin" -type f)
  mkdir -p "$work/x/debian"
  printf 'Source: x\n\nPackage: x\nArchitecture: any\n' >"$work/x/debian/control"
  need="$(cd "$work/x" && dpkg-shlibdeps -O "${bins[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
  local declared
  declared="$(field "$f" Depends)"
  for dep in $(tr ',' '\n' <<<"$need" | awk '{print $1}'); do
    grep -Eq "(^|[ ,])$dep( |,|$)" <<<"$declared" || fail "$f: Depends ($declared) lacks $dep"
  done
  note "$(basename "$f"): $(stat -c %s "$f") bytes, Installed-Size $(field "$f" Installed-Size) KiB, Depends: $declared"
}

step "checking the packages in $OUT"
app_deb="$OUT/hum_${VERSION}_${ARCH}.deb"
relay_deb="$OUT/hum-relay_${VERSION}_${ARCH}.deb"
cli_deb="$OUT/hum-cli_${VERSION}_${ARCH}.deb"
if [ -f "$app_deb" ]; then
  check_deb "$app_deb" hum /usr/bin/hum-app /usr/share/applications/Hum.desktop \
    /usr/share/icons/hicolor/32x32/apps/hum-app.png /usr/share/icons/hicolor/128x128/apps/hum-app.png
  field "$app_deb" Depends | grep -q libwebkit2gtk-4.1-0 || fail "the app does not depend on WebKitGTK"
  field "$app_deb" Recommends | grep -q libayatana-appindicator3-1 ||
    fail "the app does not recommend libayatana-appindicator3-1 (its tray is loaded at run time)"
  # hum:// links open in the app (`hum-app %u`; a second launch hands the link to the running one).
  dpkg-deb --fsys-tarfile "$app_deb" | tar -xO ./usr/share/applications/Hum.desktop >"$work/Hum.desktop"
  grep -qx 'MimeType=x-scheme-handler/hum;' "$work/Hum.desktop" || fail "the desktop entry does not claim hum:// links"
  grep -q '^Exec=hum-app %u$' "$work/Hum.desktop" || fail "the desktop entry does not pass the link (Exec=hum-app %u)"
  if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$work/Hum.desktop" || fail "desktop-file-validate refuses Hum.desktop"
  fi
else
  note "no app package ($app_deb): the app check is skipped"
fi
check_deb "$relay_deb" hum-relay /usr/bin/hum-relay /lib/systemd/system/hum-relay.service \
  /etc/hum-relay/relay.conf
dpkg-deb -I "$relay_deb" conffiles | grep -qx /etc/hum-relay/relay.conf || fail "relay.conf is not a conffile"
check_deb "$cli_deb" hum-cli /usr/bin/hum

step "systemd-analyze verify of the relay's unit (unpacked package as root)"
rm -rf "$work/root" && mkdir -p "$work/root" && dpkg-deb -x "$relay_deb" "$work/root"
# The unit's dependencies (sysinit.target, network-online.target, ...) from the host.
cp /lib/systemd/system/*.target "$work/root/lib/systemd/system/"
systemd-analyze verify --root="$work/root" /lib/systemd/system/hum-relay.service >&2 ||
  fail "systemd-analyze verify refused hum-relay.service"

step "installing hum-relay and hum-cli with apt"
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
  --no-install-recommends "$relay_deb" "$cli_deb" >&2
[ -x /usr/bin/hum-relay ] && [ -x /usr/bin/hum ] || fail "the binaries were not installed"
# No systemd here to start the unit: run the installed binary as the unit would, config from the
# installed file with the address overridden to a free port.
data="$work/relay-data"
(
  set -a
  # shellcheck disable=SC1091
  . /etc/hum-relay/relay.conf
  set +a
  exec /usr/bin/hum-relay --data "$data" --listen 127.0.0.1:0 $HUM_RELAY_ARGS
) >"$work/relay.out" 2>"$work/relay.err" &
relay_pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/relay.out" && break; sleep 0.1; done
addr="$(sed -n 's/^listening on //p' "$work/relay.out" | head -1)"
[ -n "$addr" ] || { cat "$work/relay.err" >&2; fail "the installed hum-relay did not start"; }
/usr/bin/hum --relay "ws://$addr/ws" --identity "$work/id.json" identity create --name Packaged >/dev/null
who="$(/usr/bin/hum --relay "ws://$addr/ws" --identity "$work/id.json" --json whoami)"
grep -q '"new_account": true' <<<"$who" || fail "the installed hum could not log in to the installed relay: $who"
kill "$relay_pid" && wait "$relay_pid" || true

step "removing the packages"
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q hum-relay hum-cli >&2
[ ! -e /usr/bin/hum-relay ] || fail "/usr/bin/hum-relay is still there after purge"
[ ! -e /etc/hum-relay/relay.conf ] || fail "/etc/hum-relay/relay.conf is still there after purge"
if pgrep -x hum-relay >/dev/null && pgrep -x hum-relay | xargs -r ps -o args= -p | grep -q '^/usr/bin/hum-relay'; then
  fail "an installed hum-relay is still running"
fi
note "packages: ok"
