#!/usr/bin/env bash
# The installers (scripts/package), checked: only when HUM_PACKAGE=1, because building them is a
# release build of the app (many minutes on 2 cores). HUM_PACKAGE_SKIP_BUILD=1 checks the
# packages already in target/packages (or HUM_PACKAGE_OUT) without rebuilding them.
#
# Checks: each .deb's control fields (name, version, architecture, Depends covering what
# dpkg-shlibdeps finds in its binaries), its files (binaries, the app's desktop entry and icons,
# the relay's unit and conffile), `systemd-analyze verify` of the relay's unit against the
# unpacked package and once installed, then `apt install` of the packages: the installed
# hum-relay serves the installed hum CLI (an account is created and logs in); the installed app
# (/usr/bin/hum-app) is started under Xvfb, timed from exec to first paint, closed, then driven
# through WebDriver (first run, connected to the installed relay, its release notice, a
# hum://invite link opened with xdg-open through the installed desktop entry:
# tests/app/installed.py); `apt purge` removes every file checked and leaves none of the
# packages' binaries running. HUM_PACKAGE_STARTS sets the number of timed starts (5 cold, 5 warm).
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
# desktop-file-validate checks the app's desktop entry.
ensure_apt desktop-file-utils

check_deb() { # FILE PACKAGE PATH... : fields and files
  local f="$1" pkg="$2"
  shift 2
  [ -f "$f" ] || fail "$f is missing"
  [ "$(field "$f" Package)" = "$pkg" ] || fail "$f: Package is $(field "$f" Package)"
  [ "$(field "$f" Version)" = "$VERSION" ] || fail "$f: Version is $(field "$f" Version)"
  [ "$(field "$f" Architecture)" = "$ARCH" ] || fail "$f: Architecture is $(field "$f" Architecture)"
  local contents
  contents="$(dpkg-deb -c "$f" | awk '{print $6}' | sed -E 's|^\.?/?|/|')" # dpkg-deb's ./usr/...; the Tauri bundler's usr/...
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
  local declared dups
  declared="$(field "$f" Depends)"
  dups="$(tr ',' '\n' <<<"$declared" | awk '{print $1}' | sort | uniq -d | xargs)"
  [ -z "$dups" ] || fail "$f: Depends names $dups more than once"
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
  # An icon at each size desktops ask for (menus 16-24, launchers 48-64, docks and stores 128+).
  icons=()
  for size in 16 24 32 48 64 128 256 512; do
    icons+=("/usr/share/icons/hicolor/${size}x${size}/apps/hum-app.png")
  done
  check_deb "$app_deb" hum /usr/bin/hum-app /usr/share/applications/Hum.desktop "${icons[@]}"
  field "$app_deb" Depends | grep -q libwebkit2gtk-4.1-0 || fail "the app does not depend on WebKitGTK"
  field "$app_deb" Recommends | grep -q libayatana-appindicator3-1 ||
    fail "the app does not recommend libayatana-appindicator3-1 (its tray is loaded at run time)"
  ! field "$app_deb" Depends | grep -q libayatana-appindicator3-1 ||
    fail "the app depends on libayatana-appindicator3-1 (it runs without a tray when it is missing)"
  # hum:// links open in the app (`hum-app %u`; a second launch hands the link to the running one).
  dpkg-deb --fsys-tarfile "$app_deb" | tar -xO --wildcards '*usr/share/applications/Hum.desktop' >"$work/Hum.desktop"
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

step "installing the packages with apt"
# What the stage installs is purged again, also when a check fails half way.
installed=()
relay_pid=
cleanup() {
  [ -z "$relay_pid" ] || kill "$relay_pid" 2>/dev/null || true
  if [ ${#installed[@]} -gt 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q "${installed[@]}" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
installed=(hum-relay hum-cli)
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
  --no-install-recommends "$relay_deb" "$cli_deb" >&2
[ -x /usr/bin/hum-relay ] && [ -x /usr/bin/hum ] || fail "the binaries were not installed"
# The unit as installed (the check above verified it unpacked under another root).
systemd-analyze verify /lib/systemd/system/hum-relay.service >&2 ||
  fail "systemd-analyze verify refused the installed hum-relay.service"
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
relay_pid=

if [ -f "$app_deb" ]; then
  step "installing the app package with apt (as a user would: its Recommends too)"
  installed+=(hum)
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "$app_deb" >&2
  [ -x /usr/bin/hum-app ] || fail "/usr/bin/hum-app was not installed"
  note "installed: $(dpkg-query -W -f='${Package} ${Version}, Installed-Size ${Installed-Size} KiB' hum)," \
    "on disk $(dpkg -L hum | while read -r f; do [ -f "$f" ] && echo "$f"; done | xargs du -ck | tail -1 | cut -f1) KiB"
  step "the installed app under Xvfb: cold start to first paint, then first run and connect through WebDriver"
  ensure_apt xvfb xauth webkit2gtk-driver dbus-x11 fonts-dejavu-core
  ensure_rust
  ensure_cargo_tool tauri-driver tauri-driver@2.1.0
  # tauri-driver is given the installed binary; the relay is the installed one too.
  timeout 600 xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- \
    python3 "$HUM_ROOT/tests/app/installed.py" --app /usr/bin/hum-app --relay-bin /usr/bin/hum-relay --hum-bin /usr/bin/hum \
    --starts "${HUM_PACKAGE_STARTS:-5}" --deadline 540 ||
    fail "the installed app's check failed (tests/app/installed.py above)"
fi

step "removing the packages"
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q "${installed[@]}" >&2
installed=()
[ ! -e /usr/bin/hum-relay ] || fail "/usr/bin/hum-relay is still there after purge"
[ ! -e /etc/hum-relay/relay.conf ] || fail "/etc/hum-relay/relay.conf is still there after purge"
[ ! -e /usr/bin/hum ] || fail "/usr/bin/hum is still there after purge"
[ ! -e /usr/bin/hum-app ] || fail "/usr/bin/hum-app is still there after purge"
[ ! -e /usr/share/applications/Hum.desktop ] || fail "the desktop entry is still there after purge"
# Nothing installed keeps running: no process whose executable is (or was, before the purge
# deleted it) one of the packages' binaries.
for b in /usr/bin/hum-relay /usr/bin/hum /usr/bin/hum-app; do
  for exe in /proc/[0-9]*/exe; do
    case "$(readlink "$exe" 2>/dev/null)" in
      "$b" | "$b (deleted)") fail "$b is still running after purge (pid $(basename "$(dirname "$exe")"))" ;;
    esac
  done
done
note "packages: ok"
