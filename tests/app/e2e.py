#!/usr/bin/env python3
"""End-to-end test of the real, built Hum desktop app under Xvfb, driven through tauri-driver and
WebKitWebDriver.

  xvfb-run -a python3 tests/app/e2e.py --app target/debug/hum-app [--screenshots docs/screenshots]

Steps: first run (create identity, relay address of a real hum-relay started here), connect,
create a server and a voice channel, invite a headless `hum` bot that joins the channel playing a
tone, join it from the app and see the bot in the roster with a speaking indicator; the camera button
(no camera: a sentence; the test pattern picked in Settings -> Devices) shows my self-view decoded by
WebCodecs, the pattern's frame code read from the canvas pixels and advancing; a video call with
the bot (`hum call --video pattern --record-video`): its pattern shows in the app's tile and advances,
the app's camera turned on mid-call reaches the bot (decoded, codes in order); relay killed
and restarted: the app shows it and reconnects by itself; bandwidth settings changed and saved;
app restarted: identity, settings and relay connection come back; identity file is 0600.
Bounded: every wait has a timeout and the whole run is capped (--deadline)."""

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webdriver import Session, wait_for_port  # noqa: E402

# tauri-driver's defaults are 4444/4445; main() picks free ports so two runs on one machine
# (or another WebDriver) never collide.
DRIVER_PORT = 4444
NATIVE_PORT = 4445

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def process_tree(root_pid):
    """root_pid and all its descendants (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def app_pid(driver_pid):
    for p in process_tree(driver_pid):
        if comm(p).startswith("hum-app"):
            return p
    return None


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pss_kib(pids):
    """Proportional set size: shared library pages split between the processes mapping them."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(driver_pid, label, seconds):
    """Prints RSS of the app's whole process tree and its CPU use over `seconds`."""
    pid = app_pid(driver_pid)
    if pid is None:
        print(f"measure {label}: app process not found")
        return
    tree = process_tree(pid)
    names = sorted({comm(p) for p in tree})
    t0, c0 = time.monotonic(), cpu_ticks(tree)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks(process_tree(pid))
    hz = os.sysconf("SC_CLK_TCK")
    cpu = (c1 - c0) / hz / (t1 - t0) * 100
    tree = process_tree(pid)
    parts = ", ".join(f"{comm(p)}={rss_kib([p]) / 1024:.0f}" for p in tree)
    print(f"measure {label}: rss={rss_kib(tree) / 1024:.1f} MiB ({parts}) "
          f"pss={pss_kib(tree) / 1024:.1f} MiB cpu={cpu:.2f}% "
          f"over {seconds}s, processes={names}")


def start_driver(data_dir, log):
    # XDG_CONFIG_HOME: the app's start-on-login entry goes under the test's directory.
    env = dict(os.environ, HUM_DATA_DIR=data_dir, HUM_NO_BINDINGS_EXPORT="1",
               XDG_CONFIG_HOME=os.path.join(data_dir, "config"))
    driver = shutil.which("tauri-driver") or os.path.expanduser("~/.cargo/bin/tauri-driver")
    proc = subprocess.Popen(
        [driver, "--port", str(DRIVER_PORT), "--native-port", str(NATIVE_PORT)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port("127.0.0.1", DRIVER_PORT, 30)
    return proc


def ready_session(base, app):
    """A new session; waits for WebKitWebDriver (the native port), which starts after tauri-driver."""
    wait_for_port("127.0.0.1", NATIVE_PORT, 30)
    return Session(base, app)


def stop(proc):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset(session, testid, key):
    """An element's data-* value (None when the element is absent)."""
    return session.js(
        "const el = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return el ? (el.dataset[arguments[1]] ?? null) : null;",
        testid,
        key,
    )


def wait_gone(session, testid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session.exists(testid):
            return True
        time.sleep(0.2)
    return False


# Reads hum-media's test-pattern code (docs/video.md, "The pattern code") from a canvas in the page:
# 72 bits in a 12 x 6 grid of square cells, one cell in from the top-left corner, cell side
# min(W, H*16/9)/40; the mean luma of each cell's middle half thresholded at 128; 24-bit frame
# number, 32-bit capture time (Unix ms), CRC-16/CCITT-FALSE of those 7 bytes.
PATTERN_READER_JS = """
const c = document.querySelector(`[data-testid='${arguments[0]}']`);
if (!c || !c.width) return {error: 'no canvas'};
const w = c.width, h = c.height, cell = Math.min(w, h * 16 / 9) / 40;
const px = c.getContext('2d').getImageData(0, 0, w, h).data;
const span = (i) => [Math.round(i * cell), Math.round((i + 1) * cell)];
const bytes = new Array(9).fill(0);
for (let bit = 0; bit < 72; bit++) {
  const [x0, x1] = span(1 + bit % 12), [y0, y1] = span(1 + Math.floor(bit / 12));
  const qx = Math.floor((x1 - x0) / 4), qy = Math.floor((y1 - y0) / 4);
  let sum = 0, n = 0;
  for (let y = y0 + qy; y < Math.max(y1 - qy, y0 + qy + 1); y++)
    for (let x = x0 + qx; x < Math.max(x1 - qx, x0 + qx + 1); x++) {
      const i = (y * w + x) * 4;
      sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2]; n++;
    }
  if (sum / n >= 128) bytes[bit >> 3] |= 0x80 >> (bit % 8);
}
let crc = 0xffff;
for (let i = 0; i < 7; i++) {
  crc ^= bytes[i] << 8;
  for (let k = 0; k < 8; k++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
}
const ok = crc === ((bytes[7] << 8) | bytes[8]);
return {ok, frame: (bytes[0] << 16) | (bytes[1] << 8) | bytes[2],
        capture_ms: ((bytes[3] << 24) | (bytes[4] << 16) | (bytes[5] << 8) | bytes[6]) >>> 0,
        width: w, height: h, frames: Number(c.dataset.frames), latency_ms: c.dataset.latencyMs ?? null};
"""


def read_pattern(session, testid, timeout=20):
    """The pattern code on a canvas, waiting until one reads with a good checksum."""
    return session.wait_js(PATTERN_READER_JS.replace("arguments[0]", repr(testid)),
                           lambda v: isinstance(v, dict) and v.get("ok"), timeout, f"pattern code on {testid}")


# The release the test relay announces (issue 19's update check): newer than any build of the app.
ANNOUNCED_RELEASE = {"version": "99.0.0", "url": "https://hum.example.org/download", "notes": "E2E release notes."}


def start_relay(binary, port, data, log):
    release = os.path.join(data, "client-release.json")
    with open(release, "w") as f:
        json.dump(ANNOUNCED_RELEASE, f)
    proc = subprocess.Popen(
        # A mesh of at most 2: a third member moves a channel onto the relay's SFU (the big-room
        # steps below use 3 members instead of 9).
        [binary, "--listen", f"127.0.0.1:{port}", "--data", data, "--mesh-limit", "2",
         "--client-release", release],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port("127.0.0.1", port, 30)
    return proc


def desktop_link_checks(session, args, app, data_dir, bot_env, log):
    """Issue 19: a second launch of the app with a hum:// link (what the desktop runs when a link is
    clicked: `hum-app %u`) hands the link to the running app and exits; the app asks before joining
    the invited server or sending the friend request. Plus my handle and friend link."""
    env2 = dict(bot_env, HUM_IDENTITY=os.path.join(data_dir, "linkbot.json"))
    run2 = lambda *a: subprocess.run([args.hum_bin, *a], env=env2, stdout=subprocess.PIPE,
                                     stderr=log, timeout=60, check=True, text=True).stdout.strip()
    run2("identity", "create", "--name", "e2e-linkbot")
    run2("handle", "set", "@linkbot")
    run2("server", "create", "Link Den")
    code = run2("server", "invite", "Link Den")

    def launch(link):
        env = dict(os.environ, HUM_DATA_DIR=data_dir, HUM_NO_BINDINGS_EXPORT="1")
        return subprocess.run([app, link], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=90, text=True)

    second = launch(f"hum://invite/{code}")
    check("a second launch with an invite link hands it over and exits 0",
          second.returncode == 0 and "already running" in second.stdout,
          f"rc={second.returncode} {second.stdout[-300:]!r}")
    what = session.wait_text("link-what", lambda t: code in t, 30)
    check("the running app asks before joining the invited server", code in what, what)
    session.click("link-accept")
    session.find("server-Link Den", timeout=30)
    check("accepting the invite link joins the server (it is on the rail)", wait_gone(session, "link-dialog"))
    session.find("channels-Link Den", timeout=30)
    check("the joined server is shown, watched (its channel list loads)",
          wait_gone(session, "channels-loading", 20))
    session.click("server-E2E Squad")
    session.find("channels-E2E Squad", timeout=30)

    second = launch("hum://friend/@linkbot")
    check("a second launch with a friend link hands it over", second.returncode == 0, f"rc={second.returncode}")
    what = session.wait_text("link-what", lambda t: "@linkbot" in t, 30)
    session.click("link-accept")
    check("accepting the friend link closes the dialog", wait_gone(session, "link-dialog"), what)
    session.click("nav-friends")
    app_key = session.wait_js("return document.querySelector('[data-testid=my-key]')?.textContent",
                              lambda v: v is not None and len(v) == 64, 20, "my key on the friends screen")
    link = session.wait_js("return document.querySelector('[data-testid=friend-link]').value",
                           lambda v: v.startswith("hum://"), 20, "my friend link")
    check("the friends screen shows my friend link with my key", link == f"hum://friend/{app_key}", link)
    accepted = subprocess.run([args.hum_bin, "friends", "accept", app_key], env=env2, stdout=log,
                              stderr=subprocess.STDOUT, timeout=60).returncode
    check("the friend request sent from the link reached @linkbot (who accepts it)", accepted == 0, str(accepted))
    session.find("friend-e2e-linkbot", timeout=30)
    session.type("my-handle", "e2e-alice")
    session.click("my-handle-save")
    status = session.wait_text("my-card-status", lambda t: "@e2e-alice" in t)
    check("I take a handle on the relay", "@e2e-alice" in status, status)
    found = json.loads(subprocess.run([args.hum_bin, "--json", "handle", "lookup", "@E2E-Alice"], env=env2,
                                      stdout=subprocess.PIPE, stderr=log, timeout=60, text=True).stdout or "{}")
    check("others find me by my handle", json.dumps(found).find(app_key) >= 0, json.dumps(found)[:200])
    session.click("nav-voice")


def notifications_monitor(data_dir):
    """Records desktop notifications sent on the session bus (the e2e runs under dbus-run-session;
    no notification daemon is needed to see the Notify calls)."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") or not shutil.which("dbus-monitor"):
        return None
    path = os.path.join(data_dir, "notifications.txt")
    proc = subprocess.Popen(["dbus-monitor", "--session", "interface='org.freedesktop.Notifications',member='Notify'"],
                            stdout=open(path, "w"), stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, path


def notification_check(session, monitor, text):
    """Issue 19: an incoming call notifies while the window is in the background (and only then)."""
    if monitor is None:
        check("desktop notifications observable (dbus-monitor on a session bus)", False, "no session bus")
        return
    focused = session.js("return document.hasFocus()")
    seen = lambda: text in open(monitor[1]).read()
    if focused:
        time.sleep(2)
        check("the window has the focus: no desktop notification for the call", not seen())
    else:
        deadline = time.monotonic() + 20
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.2)
        check(f"the window is in the background: the call is a desktop notification ({text!r})", seen())


def update_notice_checks(session):
    """Issue 19: after login the app asks the relay for the newest release and says a newer one
    exists (the test relay announces 99.0.0); "Not now" hides it for that version."""
    want = ANNOUNCED_RELEASE["version"]
    # 45 s: one retry (30 s after a check that got no answer) fits.
    text = session.wait_text("update-notice", lambda t: want in t, 45)
    check("a newer release announced by the relay is shown after login",
          f"Hum {want} is available" in text and ANNOUNCED_RELEASE["notes"] in text, text)
    url = session.prop("update-notice-url", "value")
    check("the notice shows the download page (Hum opens nothing itself)", url == ANNOUNCED_RELEASE["url"], url)
    session.click("update-dismiss")
    check("'Not now' hides the notice", wait_gone(session, "update-notice"))


def members_checks(session, hum_bin, relay_url, data_dir, code, log):
    """The server's members (issue 13, admin permissions): the owner makes the bot an admin and a
    member again, and kicks a guest after confirming; the guest is no longer in the server."""
    guest_env = dict(os.environ, HUM_RELAY=relay_url, HUM_IDENTITY=os.path.join(data_dir, "guest.json"))
    guest = lambda *a: subprocess.run([hum_bin, *a], env=guest_env, capture_output=True, text=True,
                                      timeout=60, check=True).stdout
    guest("identity", "create", "--name", "e2e-guest")
    guest("server", "join", code)
    session.click("members-open-E2E Squad")
    session.find("member-row-e2e-guest", timeout=20)
    count = session.wait_text("members-count", lambda t: t.startswith("3 members"), 20)
    check("the members dialog lists the owner, the bot and the guest", count.startswith("3 members"), count)
    role = lambda: session.js("const r = document.querySelector('[data-testid=\"member-row-e2e-bot\"]');"
                              "return r ? r.dataset.role : null;")
    session.click("member-role-e2e-bot")
    session.wait_js("const r = document.querySelector('[data-testid=\"member-row-e2e-bot\"]');"
                    "return r ? r.dataset.role : null;", lambda v: v == "admin", 20, "bot made admin")
    check("the owner makes the bot an admin", role() == "admin", str(role()))
    session.click("member-role-e2e-bot")
    session.wait_js("const r = document.querySelector('[data-testid=\"member-row-e2e-bot\"]');"
                    "return r ? r.dataset.role : null;", lambda v: v == "member", 20, "bot made member")
    check("and a member again", role() == "member", str(role()))
    session.click("member-kick-e2e-guest")
    check("kick asks once more", session.exists("member-confirm-e2e-guest"))
    session.click("member-confirm-e2e-guest")
    check("the kicked guest leaves the list", wait_gone(session, "member-row-e2e-guest", 20))
    servers = json.loads(guest("--json", "server", "list"))
    check("the kicked guest is no longer in the server", servers == [], str(servers))
    session.click("members-dialog-close")
    wait_gone(session, "members-dialog")


def server_admin_checks(session, hum_bin, relay_url, data_dir, code, log):
    """Server administration (issue 13): the owner bans the guest (Banned lists them, the invite
    no longer works), unbans them (they rejoin with it); renames the server (the guest's `hum
    server list` has the new name) and back; the app joins the guest's server, leaves it after
    confirming, joins again and sits in its channel: the guest deletes it and the app drops the
    server and the voice channel and says why; the owner deletes a throwaway server after typing
    its name, and the guest's list loses it. Runs after members_checks (the guest exists)."""
    guest_env = dict(os.environ, HUM_RELAY=relay_url, HUM_IDENTITY=os.path.join(data_dir, "guest.json"))
    guest_try = lambda *a: subprocess.run([hum_bin, *a], env=guest_env, capture_output=True, text=True, timeout=60)

    def guest(*a):
        r = guest_try(*a)
        if r.returncode != 0:
            raise RuntimeError(f"hum {a} failed: {r.stderr.strip()}")
        return r.stdout

    guest_servers = lambda: [s["name"] for s in json.loads(guest("--json", "server", "list"))]

    # --- ban, the ban list, unban --------------------------------------------------------------
    guest("server", "join", code)
    session.click("members-open-E2E Squad")
    session.find("member-row-e2e-guest", timeout=20)
    check("an owner sees the (empty) ban list", session.exists("bans-empty"))
    session.click("member-ban-e2e-guest")
    check("ban asks once more", session.exists("member-confirm-e2e-guest"))
    session.click("member-confirm-e2e-guest")
    session.find("ban-row-e2e-guest", timeout=20)
    check("the banned guest is listed under Banned, not as a member",
          not session.exists("member-row-e2e-guest") and session.exists("ban-row-e2e-guest"))
    refused = guest_try("server", "join", code)
    check("a banned guest cannot rejoin with the invite", refused.returncode != 0 and "banned" in refused.stderr,
          refused.stderr.strip())
    session.click("member-unban-e2e-guest")
    check("Unban takes them off the list", wait_gone(session, "ban-row-e2e-guest", 20))
    notice = session.wait_text("members-notice", lambda t: "no longer banned" in t, 10)
    check("and says they can rejoin with an invite", "rejoin with an invite" in notice, notice)
    guest("server", "join", code)
    check("unbanned, the guest rejoins with the same invite", "E2E Squad" in guest_servers())
    session.find("member-row-e2e-guest", timeout=20)
    check("the open members dialog shows them back (live: the relay's member_joined)", True)
    session.click("members-dialog-close")
    wait_gone(session, "members-dialog")

    # --- rename ---------------------------------------------------------------------------------
    session.click("server-settings-open-E2E Squad")
    session.set_value("server-rename-input", "   ")  # WebDriver typing may drop bare spaces
    session.click("server-rename-save")
    err = session.wait_text("server-settings-error", lambda t: len(t) > 0, 10)
    check("a blank server name is refused in words", err == "A server needs a name.", err)
    session.type("server-rename-input", "E2E Crew")
    session.click("server-rename-save")
    session.find("server-E2E Crew", timeout=20)
    check("the owner renames the server: the rail shows the new name", not session.exists("server-E2E Squad"))
    names = guest_servers()
    check("the guest's `hum server list` has the new name", names == ["E2E Crew"], str(names))
    session.wait_js("const b = document.querySelector('[data-testid=\"server-rename-save\"]'); return b && b.disabled;",
                    lambda v: v is True, 10, "rename done")
    session.type("server-rename-input", "E2E Squad")
    session.click("server-rename-save")
    session.find("server-E2E Squad", timeout=20)
    check("and back (the rest of this test uses the name)", not session.exists("server-E2E Crew"))
    session.click("server-settings-dialog-close")
    wait_gone(session, "server-settings-dialog")

    # --- a member leaves; the server deleted under a member in its channel -----------------------
    guest("server", "create", "Guest Den")
    guest("channel", "create", "--server", "Guest Den", "Den Room")
    den_code = guest("server", "invite", "Guest Den").strip()

    def app_joins_den():
        session.click("add-server")
        session.type("invite-code-input", den_code)
        session.click("invite-join")
        session.find("server-Guest Den", timeout=20)
        wait_gone(session, "add-server-dialog")
        session.find("server-settings-open-Guest Den", timeout=20)

    app_joins_den()
    session.click("server-settings-open-Guest Den")
    check("a member is offered Leave, not rename or delete",
          session.exists("server-leave") and not session.exists("server-rename-input")
          and not session.exists("server-delete"))
    session.click("server-leave")
    warning = session.text("server-leave-warning")
    check("leave asks once more", "new invite" in warning, warning)
    session.click("server-leave-confirm")
    check("after leaving, the server is off the rail", wait_gone(session, "server-Guest Den", 20))
    members = json.loads(guest("--json", "server", "info", "Guest Den"))["members"]
    check("and the relay no longer counts the app as a member", len(members) == 1, str(len(members)))
    app_joins_den()
    session.click("join-Den Room")
    session.find("control-leave", timeout=30)
    guest("server", "delete", "Guest Den")
    check("deleted by its owner, the server leaves the member's rail", wait_gone(session, "server-Guest Den", 20))
    check("and the member's voice in its channel stops", wait_gone(session, "control-leave", 20))
    told = session.wait_text("audio-notice", lambda t: "deleted" in t, 20)
    check("with a sentence saying why", "was deleted" in told, told)

    # --- the owner deletes a throwaway server -----------------------------------------------------
    session.click("add-server")
    session.type("new-server-name", "Throwaway")
    session.click("create-server")
    session.find("server-Throwaway", timeout=20)
    wait_gone(session, "add-server-dialog")
    session.click("invite-Throwaway")
    throw_code = session.wait_text("invite-code-Throwaway", lambda t: len(t) > 0)
    session.click("invite-dialog-close")
    guest("server", "join", throw_code)
    session.click("server-settings-open-Throwaway")
    warning = session.text("server-delete-warning")
    check("delete says it is for everyone", "for everyone" in warning and "cannot be undone" in warning, warning)
    session.click("server-delete")
    check("delete waits for the server's name", session.prop("server-delete-confirm", "disabled") is True)
    session.type("server-delete-confirm-input", "Throwaway")
    session.click("server-delete-confirm")
    check("the owner deletes the throwaway server: off the rail", wait_gone(session, "server-Throwaway", 20))
    check("the dialog closes and the first server shows", wait_gone(session, "server-settings-dialog", 10)
          and session.exists("channels-E2E Squad"))
    names = guest_servers()
    check("the guest's list loses the deleted server", names == ["E2E Squad"], str(names))
    guest("server", "leave", "E2E Squad")
    check("a member leaves with `hum server leave`", guest_servers() == [])


def desktop_settings_checks(session, data_dir):
    """Issue 19: Settings -> Desktop. Start on login writes the XDG autostart entry (hum-app
    --minimized) and removes it; close to tray is offered exactly when the app has a tray."""
    session.click("nav-settings")
    session.find("desktop-panel")
    entry = os.path.join(data_dir, "config", "autostart", "hum.desktop")
    session.click("start-on-login")
    session.wait_js("return document.querySelector('[data-testid=start-on-login]').checked", lambda v: v is True, 20,
                    "start on login checked")
    text = open(entry).read() if os.path.exists(entry) else ""
    execs = [l for l in text.splitlines() if l.startswith("Exec=")]
    check("start on login writes the autostart entry (hum-app --minimized)",
          len(execs) == 1 and "hum-app" in execs[0] and execs[0].endswith(" --minimized"), text[:300])
    session.click("start-on-login")
    session.wait_js("return document.querySelector('[data-testid=start-on-login]').checked", lambda v: v is False, 20,
                    "start on login unchecked")
    check("turning it off removes the entry", not os.path.exists(entry))
    import ctypes
    has_tray = False
    for lib in ("libayatana-appindicator3.so.1", "libappindicator3.so.1"):
        try:
            ctypes.CDLL(lib)
            has_tray = True
        except OSError:
            pass
    offered = session.prop("close-to-tray", "disabled") is False
    check("close to tray is offered exactly when there is a tray", offered == has_tray,
          f"tray={has_tray} offered={offered}")
    session.click("update-check")
    want = ANNOUNCED_RELEASE["version"]
    result = session.wait_text("update-result", lambda t: want in t, 30)
    check("Settings -> Desktop -> Check for updates names the newer release", f"Hum {want} is available" in result,
          result)
    session.click("nav-voice")


def livestream_checks(session, args, bot_env, log, shots):
    """Issue 14 in the app: go live with the pattern while a `hum watch` bot verifies chunks and
    the app counts it as a viewer; then the bot streams and the app's player decodes it (pattern
    codes advance on the canvas), shows its contribution panel, and the stream's end."""
    session.click("go-live-Lobby")
    session.find("go-live-dialog")
    session.type("go-live-title", "apptest")
    session.click("go-live-source-pattern")
    if session.js("return document.querySelector('[data-testid=go-live-mic]').checked"):
        session.click("go-live-mic")  # no microphone here: the tone
    session.click("go-live-record")
    session.click("go-live-start")
    check("go live from the app: the dialog closes and my stream shows",
          wait_gone(session, "go-live-dialog", 30) and session.exists("live-sending"))
    stream_id = dataset(session, "live-sending", "streamId")
    listed = session.wait_js("const s = document.querySelector('[data-testid=\"stream-apptest\"]');"
                             "return s ? s.dataset.streamId : null;", lambda v: v is not None, 20,
                             "my stream in the channel list")
    check("my stream is listed in its channel, marked REC", listed == stream_id and session.exists("stream-rec-apptest"),
          f"{listed} vs {stream_id}")
    watcher = subprocess.Popen([args.hum_bin, "--json", "watch", str(stream_id), "--duration", "120s",
                                "--relay-kbps", "0", "--bind", "127.0.0.1:0"],
                               env=bot_env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        viewers = session.wait_js("const s = document.querySelector('[data-testid=live-sending-viewers]');"
                                  "return s ? s.dataset.viewers : null;", lambda v: v == "1", 30, "one viewer")
        check("the bot watching shows as 1 viewer of my stream", viewers == "1", str(viewers))
        # Let the bot play a few seconds of chunks (it reports what it played when the stream ends).
        chunks_js = ("const s = document.querySelector('[data-testid=live-sending-chunks]');"
                     "return s ? Number(s.dataset.chunks) : 0;")
        at_join = session.js(chunks_js)
        # The counter sums every layer the app publishes (640x360, 320x180, audio): 60 is at least
        # 20 more chunks of the layer the bot watches.
        session.wait_js(chunks_js, lambda v: v >= at_join + 60, 90, "60 more chunks sent")
        if shots:
            session.screenshot(f"{shots}/live-sending.png")
        session.click("live-stop")
        check("ending my stream removes it", wait_gone(session, "live-sending", 20))
        out, _ = watcher.communicate(timeout=40)
    finally:
        stop(watcher)
    rep = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    v = rep.get("viewer", {})
    check("a hum CLI viewer of the app's stream played verified chunks, none corrupt, and saw the end",
          v.get("played_verified", 0) >= 8 and v.get("played_corrupt", 1) == 0 and rep.get("ended") == "stream ended",
          f"ended={rep.get('ended')} played={v.get('played')} verified={v.get('played_verified')} "
          f"corrupt={v.get('played_corrupt')} continuity={v.get('continuity')}")
    print(f"measured: CLI viewer of the app's stream: {v.get('played')} chunks played, continuity "
          f"{v.get('continuity')}, lag p50 {v.get('lag_ms_p50')} ms, startup {v.get('startup_ms')} ms")

    # Three layers (360p, 180p, audio only), as the app streams, for the player's quality menu.
    streamer = subprocess.Popen([args.hum_bin, "stream", "start", "--server", "E2E Squad", "--channel", "Lobby",
                                 "--title", "botcast", "--width", "640", "--height", "360", "--video-kbps", "600",
                                 "--layer", "low:320x180@200", "--layer", "audio",
                                 "--duration", "35s", "--bind", "127.0.0.1:0"],
                                env=bot_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        session.find("stream-watch-botcast", timeout=30)
        session.click("stream-watch-botcast")
        session.find("live-player", timeout=20)
        canvas = session.wait_js("const c = document.querySelector('[data-testid=live-player] canvas');"
                                 "return c ? c.dataset.testid : null;", lambda v: bool(v), 20, "the player's canvas")
        first = read_pattern(session, canvas, 30)
        second = session.wait_js(PATTERN_READER_JS.replace("arguments[0]", repr(canvas)),
                                 lambda v: isinstance(v, dict) and v.get("ok") and v["frame"] >= first["frame"] + 10,
                                 20, "the stream's pattern advancing in the player")
        check("the app plays the bot's stream: pattern codes read from the player's canvas and advance",
              (second["width"], second["height"]) == (640, 360) and second["frames"] > first["frames"],
              f"frames {first['frame']} -> {second['frame']}, {second['width']}x{second['height']}")
        stats = session.wait_js("const s = document.querySelector('[data-testid=live-player-stats]');"
                                "return s ? s.textContent : '';", lambda t: "behind live" in t, 20, "behind live")
        check("the player says how far behind live it is", "behind live" in stats, stats)
        budget = dataset(session, "live-contribution", "budget")
        check("the contribution panel shows my relay share from the bandwidth settings",
              budget is not None and (budget != "0" or session.exists("relay-off")), str(budget))
        print(f"measured: app player of the bot's stream: {stats}; relay budget {budget} bit/s, "
              f"relayed {dataset(session, 'live-contribution', 'relayed')} bytes; "
              f"capture-to-draw {second.get('latency_ms')} ms")
        if shots:
            session.screenshot(f"{shots}/live-player.png")
        # The quality menu: Auto (saying what it plays) and the stream's layers by name; picking
        # 180p switches without a gap and the player reports it, drawing the 320x180 layer.
        menu = session.wait_js("const s = document.querySelector('[data-testid=live-quality-select]');"
                               "return s ? [...s.options].map(o => o.value + '=' + o.textContent) : null;",
                               lambda v: bool(v), 10, "the quality menu")
        # Auto says what it plays (360p unless stalls already stepped it down).
        check("the player's quality menu lists Auto (with the layer it plays) and the stream's three layers",
              menu[0] in ("auto=Auto (360p)", "auto=Auto (180p)", "auto=Auto (Audio only)")
              and menu[1:] == ["high=360p", "low=180p", "audio=Audio only"], str(menu))
        session.set_value("live-quality-select", "low", event="change")
        picked_at = time.time()
        playing = session.wait_js("const q = document.querySelector('[data-testid=live-quality]');"
                                  "return q ? q.dataset.quality + '/' + q.dataset.playing : null;",
                                  lambda v: v == "low/low", 20, "the player on 180p")
        switched_s = time.time() - picked_at
        low = session.wait_js(PATTERN_READER_JS.replace("arguments[0]", repr(canvas)),
                              lambda v: isinstance(v, dict) and v.get("ok") and (v["width"], v["height"]) == (320, 180),
                              20, "the pattern at 320x180")
        stats = session.text("live-player-stats")
        check("picking 180p: the player reports the low layer and draws its 320x180 pattern",
              playing == "low/low" and (low["width"], low["height"]) == (320, 180), f"{playing} {low} {stats}")
        print(f"measured: quality pick 180p -> player on low after {switched_s:.1f} s (status polled every 0.2 s, "
              f"sent every 1 s); {stats}")
        if shots:
            session.screenshot(f"{shots}/live-player-quality.png")
        notice = session.wait_text("live-notice", lambda t: "ended" in t, 40)
        check("the stream's end is shown (the bot's stream ran out)", "ended" in notice and
              not session.exists("live-player"), notice)
        streamer.wait(timeout=30)
    finally:
        stop(streamer)


def privacy_checks(session, args, bot_envs, log, data_dir, shots):
    """Issue 16 in the app: Settings -> Privacy persists both switches; "Hide my IP" on a relay
    without TURN refuses the join with a sentence; end-to-end encryption in a channel on the SFU
    with two `hum voice join --e2ee` bots: the stage's lock counts both bots' keys, the bots got
    the app's key, the app decrypts their audio, and the safety-number screen shows 60 digits per
    member. Both switches are off again at the end (later steps join channels)."""
    def privacy_saved():
        try:
            with open(os.path.join(data_dir, "settings.json")) as f:
                return json.load(f).get("privacy")
        except (OSError, ValueError):
            return None

    def saved_as(want, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline and privacy_saved() != want:
            time.sleep(0.1)
        return privacy_saved()

    def toggle(testid, want):
        if not session.exists("privacy-panel"):  # nav-settings toggles the overlay
            session.click("nav-settings")
        session.find("privacy-panel")
        if session.prop(testid, "checked") != want:
            session.js(f"document.querySelector('[data-testid={testid}]').scrollIntoView()")
            session.click(testid)
        session.wait_js(f"return document.querySelector('[data-testid={testid}]').checked",
                        lambda v: v is want, 10, f"{testid} {want}")

    toggle("privacy-e2ee", True)
    toggle("privacy-hide-ip", True)
    saved = saved_as({"hide_ip": True, "e2ee": True})
    check("privacy switches saved to the settings file", saved == {"hide_ip": True, "e2ee": True}, str(saved))
    cost = session.text("privacy-hide-ip-cost")
    check("'Hide my IP' says what it costs (latency)", "latency" in cost, cost)
    app_key = session.wait_text("public-key", lambda t: len(t) == 64)
    if shots:
        session.js("document.querySelector('[data-testid=privacy-panel]').scrollIntoView()")
        session.screenshot(f"{shots}/settings-privacy.png")
    session.click("nav-voice")
    session.type("new-channel-name-E2E Squad", "Secret")
    session.type("new-channel-max-E2E Squad", "30")
    session.click("create-channel-E2E Squad")
    session.find("channel-Secret")
    outs = [os.path.join(data_dir, f"e2ee-bot{i}.jsonl") for i in range(len(bot_envs))]
    bots = []
    try:
        for env, tone, out in zip(bot_envs, ("440", "660"), outs):
            bots.append(subprocess.Popen(
                [args.hum_bin, "--json", "voice", "join", "--server", "E2E Squad", "--channel", "Secret",
                 "--tone", tone, "--duration", "120s", "--e2ee"],
                env=env, stdout=open(out, "w"), stderr=log, start_new_session=True))
        session.find("member-e2e-bot", timeout=30)
        session.find("member-e2e-bot2", timeout=30)
        # This relay has no TURN server: "Hide my IP" cannot work, and says so before joining.
        session.click("join-Secret")
        err = session.wait_text("voice-error", lambda t: "Hide my IP" in t, 20)
        check("'Hide my IP' without a TURN server refuses the join and says why",
              "TURN" in err and not session.exists("leave-Secret"), err)
        toggle("privacy-hide-ip", False)
        saved_as({"hide_ip": False, "e2ee": True})
        session.click("nav-voice")
        session.click("join-Secret")
        mode = session.wait_js("const s = document.querySelector('[data-testid=stage]');"
                               "return s ? s.dataset.mode : null;", lambda v: v == "sfu", 30, "stage on the SFU")
        check("three members: the E2EE channel runs on the SFU", mode == "sfu", str(mode))
        keys = session.wait_js(
            "const b = document.querySelector('[data-testid=stage-e2ee]');"
            "return b ? b.dataset.keys + '/' + b.dataset.members : null;", lambda v: v == "2/2", 30,
            "both bots' keys")
        check("the stage's lock shows keys from both bots", keys == "2/2", str(keys))

        def bot_has_app_key(out):
            try:
                with open(out) as f:
                    return any(json.loads(l).get("type") == "e2ee_key" and json.loads(l).get("user") == app_key
                               for l in f if l.startswith("{"))
            except OSError:
                return False
        deadline = time.time() + 20
        while time.time() < deadline and not all(bot_has_app_key(o) for o in outs):
            time.sleep(0.2)
        check("both bots received and opened the app's key", all(bot_has_app_key(o) for o in outs))
        session.click("stage-e2ee")
        session.find("safety-dialog")
        number = session.wait_text("safety-number-e2e-bot", lambda t: len(t.split()) == 12, 10)
        check("the safety-number screen shows 12 groups of 5 digits per member",
              all(len(g) == 5 and g.isdigit() for g in number.split()), number)
        state = session.text("safety-state-e2e-bot2")
        check("each bot shows as encrypted with its key", state.startswith("Encrypted"), state)
        decrypted = session.wait_js(
            "document.querySelector('[data-testid=e2ee-refresh]').click();"
            "return Number(document.querySelector('[data-testid=e2ee-frames]').dataset.decrypted);",
            lambda v: v and v > 50, 30, "frames decrypted")
        check("the app decrypts the bots' audio from the SFU", decrypted and decrypted > 50, str(decrypted))
        print(f"measured: app decrypted {decrypted} E2EE frames; safety number with e2e-bot {number}")
        if shots:
            session.screenshot(f"{shots}/e2ee-safety-numbers.png")
        session.click("safety-dialog-close")
        session.click("leave-Secret")
        session.find("join-Secret")
    finally:
        for b in bots:
            stop(b)
    toggle("privacy-e2ee", False)
    saved = saved_as({"hide_ip": False, "e2ee": False})
    check("privacy switches off again, saved", saved == {"hide_ip": False, "e2ee": False}, str(saved))
    session.click("nav-voice")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", required=True)
    ap.add_argument("--screenshots", default=None)
    ap.add_argument("--measure", type=float, default=0, help="seconds of idle CPU/RSS sampling")
    ap.add_argument("--deadline", type=float, default=420)
    ap.add_argument("--relay-bin", required=True, help="hum-relay binary")
    ap.add_argument("--hum-bin", required=True, help="hum CLI binary (the bot)")
    args = ap.parse_args()
    global DRIVER_PORT, NATIVE_PORT
    DRIVER_PORT, NATIVE_PORT = free_port(), free_port()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("e2e deadline")))
    signal.alarm(int(args.deadline))

    app = os.path.abspath(args.app)
    shots = os.path.abspath(args.screenshots) if args.screenshots else None
    if shots:
        os.makedirs(shots, exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="hum-e2e-")
    log = open(os.path.join(data_dir, "driver.log"), "w")
    driver = None
    session = None
    relay = None
    bot = None
    port = free_port()
    relay_url = f"ws://127.0.0.1:{port}/ws"
    relay_data = os.path.join(data_dir, "relay")
    os.makedirs(relay_data)
    try:
        relay = start_relay(args.relay_bin, port, relay_data, log)
        driver = start_driver(data_dir, log)
        base = f"http://127.0.0.1:{DRIVER_PORT}"

        # --- first run -------------------------------------------------------------------------
        session = ready_session(base, app)
        session.find("first-run")
        check("first run starts on the identity screen", session.exists("display-name"))
        default_relay = session.prop("relay-url", "value")
        check("relay address defaults to the local relay", default_relay == "ws://127.0.0.1:7700/ws", default_relay)
        if shots:
            session.screenshot(f"{shots}/first-run.png")
        session.click("create-identity")
        err = session.wait_text("first-run-error", lambda t: len(t) > 0)
        check("an empty display name is refused with a message", "empty" in err.lower(), err)
        session.type("display-name", "e2e-alice")
        session.type("relay-url", relay_url)
        session.click("create-identity")
        me = session.wait_text("me", lambda t: "e2e-alice" in t)
        check("identity created, main screen shown", "e2e-alice" in me, me)
        key_path = os.path.join(data_dir, "identity.json")
        mode = stat.S_IMODE(os.stat(key_path).st_mode) if os.path.exists(key_path) else None
        check("identity file is owner-only (0600)", mode == 0o600, oct(mode or 0))
        if shots:
            session.screenshot(f"{shots}/main.png")
        state = session.wait_js("return document.querySelector('[data-testid=relay-state]').dataset.state",
                                lambda v: v == "connected", 30, "relay connected")
        check("connects to the relay", state == "connected", state)
        update_notice_checks(session)
        if args.measure and driver:
            measure(driver.pid, "idle, connected", args.measure)

        # --- server, channel, bot in the roster ------------------------------------------------
        session.click("add-server")  # the rail's "+" opens the add-a-server dialog
        session.type("new-server-name", "E2E Squad")
        session.click("create-server")
        session.find("server-E2E Squad")
        check("the new server is on the rail and its dialog closed", wait_gone(session, "add-server-dialog"))
        session.type("new-channel-name-E2E Squad", "Lobby")
        session.type("new-channel-max-E2E Squad", "8")
        session.click("create-channel-E2E Squad")
        session.find("channel-Lobby")
        check("server and voice channel created", True)
        session.click("invite-E2E Squad")
        code = session.wait_text("invite-code-E2E Squad", lambda t: len(t) > 0)
        session.click("invite-dialog-close")
        bot_env = dict(os.environ, HUM_RELAY=relay_url, HUM_IDENTITY=os.path.join(data_dir, "bot.json"))
        run = lambda *a: subprocess.run([args.hum_bin, *a], env=bot_env, stdout=log,
                                        stderr=subprocess.STDOUT, timeout=60, check=True)
        run("identity", "create", "--name", "e2e-bot")
        run("server", "join", code)
        bot = subprocess.Popen(
            [args.hum_bin, "voice", "join", "--server", "E2E Squad", "--channel", "Lobby",
             "--tone", "440", "--duration", "120s"],
            env=bot_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        session.find("member-e2e-bot", timeout=30)
        check("the bot appears in the channel's roster", True)
        members_checks(session, args.hum_bin, relay_url, data_dir, code, log)
        server_admin_checks(session, args.hum_bin, relay_url, data_dir, code, log)
        session.click("join-Lobby")
        session.find("member-e2e-alice", timeout=30)
        check("joining puts me in the roster", session.exists("leave-Lobby"))
        speaking = session.wait_js(
            "const m = document.querySelector('[data-testid=\"member-e2e-bot\"]');"
            "return m ? m.dataset.speaking : null;", lambda v: v == "true", 30, "bot speaking")
        check("the bot shows a speaking indicator", speaking == "true", str(speaking))
        tile = session.wait_js(
            "const t = document.querySelector('[data-testid=\"tile-e2e-bot\"]');"
            "return t ? t.dataset.speaking : null;", lambda v: v == "true", 30, "bot's tile speaking")
        check("the stage shows the bot's tile with the speaking ring", tile == "true", str(tile))
        share = session.js("const b = document.querySelector('[data-testid=share]'); return b ? [b.disabled, b.title] : null;")
        check("share is enabled in a channel (opens the screen picker)", share and share[0] is False and "screen" in share[1], str(share))
        session.click("share")
        listed = session.wait_js(
            "const t = document.querySelector('[data-testid=\"share-target-pattern\"]');"
            "return t ? t.textContent : null;", lambda v: bool(v), 20, "the share picker's test pattern")
        check("the share picker lists the test pattern", bool(listed) and "Test pattern" in listed, str(listed))
        session.click("share-picker-close")
        if shots:
            session.screenshot(f"{shots}/voice-channel.png")
        if args.measure and driver:
            measure(driver.pid, "in a voice call with the bot", args.measure)

        # --- camera: self-view through VP8 -> ipc::Channel -> WebCodecs -> canvas ---------------
        session.click("camera")
        outcome = session.wait_js(
            "const e = document.querySelector('[data-testid=camera-error]');"
            "const v = document.querySelector('[data-testid=video-self]');"
            "return e ? 'error:' + e.textContent : (v ? 'video' : null);", lambda v: v is not None, 30,
            "camera on or explained")
        check("the camera starts, or says why not and what to do (no camera here)",
              outcome == "video" or ("camera" in outcome.lower() and "test pattern" in outcome), outcome)
        if outcome == "video":  # a machine with a camera: off again, then the pattern
            session.click("camera")
            wait_gone(session, "video-self")
        session.click("nav-settings")
        session.find("video-source")
        session.set_value("video-source", "pattern", event="change")
        saved = session.wait_text("video-status", lambda t: t.startswith("Saved"), 10)
        check("the camera source setting offers the test pattern and saves it", saved.startswith("Saved"), saved)
        session.click("nav-voice")
        session.click("camera")
        session.find("video-self", 30)
        first = read_pattern(session, "video-self", 30)
        time.sleep(1)
        second = read_pattern(session, "video-self", 20)
        check("the self-view decodes in the page: the pattern's frame code reads from the canvas",
              first["ok"] and (first["width"], first["height"]) == (1280, 720), str(first))
        check("the self-view moves: frame codes advance",
              second["frame"] > first["frame"] and second["frames"] > first["frames"], f"{first} -> {second}")
        print(f"measured: self-view frame {first['frame']} -> {second['frame']} in ~1 s, "
              f"{second['frames']} frames drawn, capture-to-draw {second['latency_ms']} ms")
        check("my tile shows video instead of my avatar",
              dataset(session, "tile-e2e-alice", "video") == "true" and not session.exists("avatar-e2e-alice"))
        if shots:
            session.screenshot(f"{shots}/video-self-view.png")
        if args.measure and driver:
            measure(driver.pid, "in a voice call, self-view 720p30 (pattern)", args.measure)
            session.js("window.__humVideoBench(4, 640, 360); return true;")
            for i in range(4):
                read_pattern(session, f"video-bench-{i}", 30)
            measure(driver.pid, "in a voice call, self-view 720p30 + 4 x 360p30 streams", args.measure)
            session.js("window.__humVideoBench(0); return true;")
            wait_gone(session, "video-bench-0")
        session.click("camera")
        check("turning the camera off brings my avatar back",
              wait_gone(session, "video-self") and session.exists("avatar-e2e-alice"))
        session.click("mute")
        muted = session.wait_js(
            "const m = document.querySelector('[data-testid=\"member-e2e-alice\"]');"
            "return m ? m.textContent : '';", lambda v: "muted" in v, 20, "muted badge")
        check("muting shows in my roster entry", "muted" in muted, muted)
        session.click("mute")
        rtt = session.wait_js(
            "const q = document.querySelector('[data-testid=\"quality-e2e-bot\"]');"
            "return q ? q.dataset.rtt : null;", lambda v: v not in (None, ""), 30, "bot link stats")
        check("link stats (RTT, loss, jitter) shown per participant", rtt not in (None, ""), str(rtt))
        print(f"measured: RTT to the bot over loopback {rtt} ms "
              f"({session.attr('quality-e2e-bot', 'title')})")
        live = session.wait_js(
            "const m = document.querySelector('[data-testid=level-meter]');"
            "return m ? m.dataset.live : null;", lambda v: v == "true", 20, "own level meter live")
        check("my input level meter is live in the channel", live == "true", str(live))

        # --- channel permissions (admin) -------------------------------------------------------
        session.click("channel-edit-Lobby")
        session.find("channel-settings-Lobby")
        session.click("perm-member-join")  # join off while speak stays on: refused
        session.click("perm-save")
        err = session.wait_text("perm-error", lambda t: len(t) > 0)
        check("permissions that cannot work are refused with a message", "may not join" in err, err)
        session.click("perm-member-join")  # join back on, speak off: members stay but are muted
        session.click("perm-member-speak")
        session.click("perm-save")
        check("permissions saved", wait_gone(session, "channel-settings-Lobby"))
        muted = session.wait_js(
            "const m = document.querySelector('[data-testid=\"member-e2e-bot\"]');"
            "return m ? m.textContent : '';", lambda v: "muted" in v, 20, "bot muted by the relay")
        check("members without speak are muted by the relay (the bot)", "muted" in muted, muted)
        session.click("channel-edit-Lobby")
        session.set_value("perm-max", "1001")
        session.click("perm-save")
        err = session.wait_text("perm-error", lambda t: len(t) > 0)
        check("an out-of-range participant limit is refused", "between 1 and 1000" in err, err)
        session.set_value("perm-max", "8")
        for right in ("join", "video", "stream"):
            session.click(f"perm-member-{right}")
        if shots:
            time.sleep(0.5)  # let the last click's re-render paint
            session.screenshot(f"{shots}/channel-permissions.png")
        session.click("perm-save")
        check("members without join are removed from the channel (the bot)",
              wait_gone(session, "member-e2e-bot", 20))
        check("the owner keeps every right", session.exists("member-e2e-alice"))
        session.click("channel-edit-Lobby")
        for right in ("join", "speak", "video", "stream"):
            session.click(f"perm-member-{right}")
        session.click("perm-save")
        check("permissions restored", wait_gone(session, "channel-settings-Lobby"))
        # The channel's mesh limit (issue 13): "always on the server" moves it to the SFU at once,
        # even with one member; the relay's default brings it back to a mesh.
        session.click("channel-edit-Lobby")
        check("the mesh limit starts at the relay's default", session.prop("perm-mesh-limit", "value") == "")
        session.set_value("perm-mesh-limit", "0", "change")
        session.click("perm-save")
        check("mesh limit saved", wait_gone(session, "channel-settings-Lobby"))
        badge = session.wait_text("channel-mode-Lobby", lambda t: t == "SFU", 30)
        check("'always on the server' moves the channel to the SFU at once", badge == "SFU", badge)
        session.click("channel-edit-Lobby")
        limit = session.prop("perm-mesh-limit", "value")
        check("the settings show the channel's limit", limit == "0", limit)
        session.set_value("perm-mesh-limit", "", "change")
        session.click("perm-save")
        check("mesh limit cleared", wait_gone(session, "channel-settings-Lobby"))
        session.click("channel-edit-Lobby")
        limit = session.prop("perm-mesh-limit", "value")
        check("back to the relay's default", limit == "", limit)
        session.click("perm-cancel")
        # One member stays on the SFU (back to a mesh at 2 fewer than the relay's limit of 2);
        # leaving empties it, and an empty channel is a mesh.
        session.click("leave-Lobby")
        session.find("join-Lobby")
        check("leaving the channel", not session.exists("member-e2e-alice"))
        check("the empty channel is a mesh again (no SFU badge)", wait_gone(session, "channel-mode-Lobby", 30))
        stop(bot)
        bot = None

        # --- a big room: past the mesh limit the channel moves to the SFU ------------------------
        session.type("new-channel-name-E2E Squad", "Big")
        session.type("new-channel-max-E2E Squad", "30")
        session.click("create-channel-E2E Squad")
        session.find("channel-Big")
        bot2_env = dict(bot_env, HUM_IDENTITY=os.path.join(data_dir, "bot2.json"))
        subprocess.run([args.hum_bin, "identity", "create", "--name", "e2e-bot2"], env=bot2_env, stdout=log,
                       stderr=subprocess.STDOUT, timeout=60, check=True)
        subprocess.run([args.hum_bin, "server", "join", code], env=bot2_env, stdout=log,
                       stderr=subprocess.STDOUT, timeout=60, check=True)
        big_bots = [
            subprocess.Popen(
                [args.hum_bin, "voice", "join", "--server", "E2E Squad", "--channel", "Big",
                 "--tone", tone, "--duration", "120s"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for env, tone in ((bot_env, "440"), (bot2_env, "660"))
        ]
        try:
            session.find("member-e2e-bot", timeout=30)
            session.find("member-e2e-bot2", timeout=30)
            check("a mesh at the limit has no SFU badge", not session.exists("channel-mode-Big"))
            session.click("join-Big")
            badge = session.wait_text("channel-mode-Big", lambda t: t == "SFU", 30)
            check("the third member moves the channel to the SFU: the channel list says so", badge == "SFU", badge)
            mode = session.wait_js("const s = document.querySelector('[data-testid=stage]');"
                                   "return s ? s.dataset.mode : null;", lambda v: v == "sfu", 20, "stage mode")
            check("the stage says the channel is on the SFU", mode == "sfu" and "SFU" in session.text("stage-mode"),
                  str(mode))
            # The spotlight follows the relay's sfu_speaker event (UI logic: vitest "big rooms"). Not
            # asserted here: the embedded SFU has not been seen to announce a dominant speaker for
            # these clients yet (docs/sfu.md: the audio-level path end to end is unchecked).
            try:
                spot = session.wait_js("const s = document.querySelector('[data-testid=stage]');"
                                       "return s ? s.dataset.spotlight : null;",
                                       lambda v: v in ("e2e-bot", "e2e-bot2"), 8, "dominant speaker spotlighted")
            except TimeoutError:
                spot = None
            print(f"noted: SFU dominant speaker spotlighted: {spot or 'none announced within 8 s'}")
            if shots:
                time.sleep(0.5)  # let the spotlight's re-render paint
                session.screenshot(f"{shots}/voice-channel-sfu.png")
            session.click("leave-Big")
            session.find("join-Big")
        finally:
            for b in big_bots:
                stop(b)
        check("an empty channel is a mesh again (badge gone)", wait_gone(session, "channel-mode-Big", 20))

        # --- privacy (issue 16): the switches, 'Hide my IP' without TURN, E2EE on the SFU ---------
        privacy_checks(session, args, (bot_env, bot2_env), log, data_dir, shots)

        # --- livestreams (issue 14): go live from the app, a CLI viewer; a CLI streamer, the app plays
        livestream_checks(session, args, bot_env, log, shots)

        # --- desktop links (issue 19): a second launch hands hum:// links to this app --------------
        desktop_link_checks(session, args, app, data_dir, bot_env, log)
        desktop_settings_checks(session, data_dir)

        # --- 1-on-1 calls with the bot -----------------------------------------------------------
        session.click("nav-settings")
        app_key = session.wait_text("public-key", lambda t: len(t) == 64)
        run("friends", "add", app_key)
        session.click("nav-friends")
        session.click("friend-accept-e2e-bot")
        session.find("friend-e2e-bot")
        check("friend request from the bot accepted", True)
        call_log = open(os.path.join(data_dir, "bot-call.jsonl"), "w")
        monitor = notifications_monitor(data_dir)
        bot = subprocess.Popen(
            [args.hum_bin, "--json", "call", app_key, "--tone", "440", "--duration", "8s", "--ring", "40s"],
            env=bot_env, stdout=call_log, stderr=log, start_new_session=True,
        )
        status = session.wait_text("call-status", lambda t: "calling you" in t, 30)
        check("an incoming call shows a prompt", status == "e2e-bot is calling you", status)
        notification_check(session, monitor, "e2e-bot is calling you")
        if monitor:
            stop(monitor[0])
        if shots:
            session.screenshot(f"{shots}/call-incoming.png")
        session.click("call-accept")
        phase = session.wait_js("const b = document.querySelector('[data-testid=call-bar]');"
                                "return b ? b.dataset.phase : null;", lambda v: v == "active", 30, "call active")
        check("accepting connects the call", phase == "active", str(phase))
        talking = session.wait_js(
            "const p = document.querySelector('[data-testid=call-peer]'); return p ? p.dataset.speaking : null;",
            lambda v: v == "true", 20, "bot talking in the call")
        check("the caller's voice shows as talking", talking == "true", str(talking))
        rtt = session.wait_js(
            "const q = document.querySelector('[data-testid=call-stats]'); return q ? q.dataset.rtt : null;",
            lambda v: v not in (None, ""), 20, "call stats")
        check("the call shows its link stats", rtt not in (None, ""), str(rtt))
        if shots:
            session.screenshot(f"{shots}/call-active.png")
        ended = session.wait_text("call-ended", lambda t: len(t) > 0, 30)
        check("the other side hanging up ends the call cleanly", ended == "e2e-bot hung up.", ended)
        try:
            rc = bot.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        check("the calling bot finished cleanly", rc == 0, str(rc))
        session.click("call-dismiss")
        bot = subprocess.Popen(
            [args.hum_bin, "call", app_key, "--tone", "440", "--ring", "40s"],
            env=bot_env, stdout=log, stderr=log, start_new_session=True,
        )
        session.wait_text("call-status", lambda t: "calling you" in t, 30)
        session.click("call-decline")
        try:
            rc = bot.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        check("declining ends the caller's attempt", rc not in (None, 0), str(rc))
        check("declining leaves no call bar", wait_gone(session, "call-bar", 10))
        bot = subprocess.Popen(
            [args.hum_bin, "--json", "call", "--answer", app_key, "--tone", "300", "--duration", "40s",
             "--ring", "40s"],
            env=bot_env, stdout=call_log, stderr=log, start_new_session=True,
        )
        session.wait_js("const b = document.querySelector('[data-testid=\"call-e2e-bot\"]');"
                        "return b ? b.disabled : null;", lambda v: v is False, 30, "bot online, call button enabled")
        session.click("call-e2e-bot")
        phase = session.wait_js("const b = document.querySelector('[data-testid=call-bar]');"
                                "return b ? b.dataset.phase : null;", lambda v: v == "active", 30, "outgoing call active")
        check("calling the bot from the friends screen connects", phase == "active", str(phase))
        session.click("call-hangup")
        ended = session.wait_text("call-ended", lambda t: len(t) > 0, 20)
        check("hanging up ends the call", ended == "You hung up.", ended)
        deadline = time.monotonic() + 15
        heard = False
        while time.monotonic() < deadline and not heard:
            with open(os.path.join(data_dir, "bot-call.jsonl")) as f:
                heard = any('"state":"ended"' in line for line in f)
            time.sleep(0.3)
        if not heard:
            with open(os.path.join(data_dir, "bot-call.jsonl")) as f:
                print("--- bot call output (tail) ---\n" + "".join(f.readlines()[-8:]))
        check("the bot sees the call end when the app hangs up", heard)
        stop(bot)
        bot = None
        call_log.close()
        session.click("call-dismiss")

        # --- video in a call: the bot's pattern camera shows in a tile, my camera reaches the bot ---
        rec_dir = os.path.join(data_dir, "bot-video")
        video_log_path = os.path.join(data_dir, "bot-video-call.jsonl")
        video_log = open(video_log_path, "w")
        bot = subprocess.Popen(
            [args.hum_bin, "--json", "call", app_key, "--tone", "440", "--ring", "40s",
             "--video", "pattern", "--video-size", "640x360", "--video-kbps", "500", "--record-video", rec_dir],
            env=bot_env, stdout=video_log, stderr=log, start_new_session=True,
        )
        session.wait_text("call-status", lambda t: "calling you" in t, 30)
        session.click("call-accept")
        session.wait_js("const b = document.querySelector('[data-testid=call-bar]');"
                        "return b ? b.dataset.phase : null;", lambda v: v == "active", 30, "video call active")
        remote_id = session.wait_js(
            "const c = document.querySelector('[data-testid=call-video-peer] canvas');"
            "return c ? c.dataset.testid : null;", lambda v: bool(v), 30, "the bot's video tile")
        check("the friend's camera shows in a tile under its stream id", remote_id.endswith("/camera"), str(remote_id))
        first = read_pattern(session, remote_id, 30)
        second = session.wait_js(PATTERN_READER_JS.replace("arguments[0]", repr(remote_id)),
                                 lambda v: isinstance(v, dict) and v.get("ok") and v["frame"] > first["frame"],
                                 20, "the bot's pattern advancing")
        check("the friend's pattern video decodes in the page: frame codes read from the canvas and advance",
              second["frame"] > first["frame"] and (second["width"], second["height"]) == (640, 360),
              f"frames {first['frame']} -> {second['frame']}, {second['width']}x{second['height']}, "
              f"{second['frames']} decoded")
        session.click("call-camera")
        mine = read_pattern(session, "video-self", 30)
        check("my camera turned on in the call shows beside theirs", mine.get("ok"), str(mine))

        def bot_decoded():
            best = 0
            with open(video_log_path) as f:
                for line in f:
                    try:
                        v = json.loads(line)
                    except ValueError:
                        continue
                    if v.get("type") == "video_stats":
                        best = max(best, int(v.get("decoded", 0)))
            return best

        deadline = time.monotonic() + 30
        decoded = bot_decoded()
        while time.monotonic() < deadline and decoded < 30:
            time.sleep(0.3)
            decoded = bot_decoded()
        check("the friend receives my camera (the bot decodes its frames)", decoded >= 30, f"{decoded} decoded")
        if shots:
            session.screenshot(f"{shots}/call-video.png")
        session.click("call-hangup")
        ended = session.wait_text("call-ended", lambda t: len(t) > 0, 20)
        check("hanging up the video call ends it", ended == "You hung up.", ended)
        try:
            rc = bot.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        check("the bot's video call finished cleanly", rc == 0, str(rc))
        bot = None
        video_log.close()
        codes = []
        for name in sorted(os.listdir(rec_dir)) if os.path.isdir(rec_dir) else []:
            if name.endswith(".jsonl"):
                with open(os.path.join(rec_dir, name)) as f:
                    codes += [json.loads(line).get("code") for line in f if line.strip()]
        readable = [c for c in codes if c is not None]
        in_order = all(b > a for a, b in zip(readable, readable[1:]))
        check("the bot's recording of my camera has readable pattern codes, in order",
              len(readable) >= 30 and in_order and len(readable) == len(codes),
              f"{len(readable)}/{len(codes)} readable, in order: {in_order}")
        print(f"measured: video call, the bot's 640x360 pattern read from the app's canvas "
              f"(frames {first['frame']}->{second['frame']}); the bot decoded {len(codes)} frames of my camera")
        check("ending the call turns my camera off", wait_gone(session, "video-self", 10))
        session.click("call-dismiss")

        # --- video in a voice channel (mesh): the bot's camera on its tile, mine reaches it, the
        # bot's "camera off" message turns its tile back into its avatar ---------------------------
        chan_rec = os.path.join(data_dir, "bot-channel-video")
        off_file = os.path.join(data_dir, "bot-camera-off")
        chan_log_path = os.path.join(data_dir, "bot-channel-video.jsonl")
        chan_log = open(chan_log_path, "w")
        bot = subprocess.Popen(
            [args.hum_bin, "--json", "voice", "join", "--server", "E2E Squad", "--channel", "Lobby",
             "--tone", "440", "--duration", "120s", "--video", "pattern", "--video-size", "640x360",
             "--video-kbps", "500", "--record-video", chan_rec, "--video-off-file", off_file],
            env=bot_env, stdout=chan_log, stderr=log, start_new_session=True,
        )
        session.click("nav-voice")
        session.find("member-e2e-bot", timeout=30)
        session.click("join-Lobby")
        session.find("member-e2e-alice", timeout=30)
        bot_canvas = session.wait_js(
            "const c = document.querySelector('[data-testid=\"tile-e2e-bot\"] canvas');"
            "return c ? c.dataset.testid : null;", lambda v: bool(v), 30, "the bot's camera on its tile")
        check("in a voice channel the bot's camera shows on its tile", bot_canvas.endswith("/camera"), str(bot_canvas))
        first = read_pattern(session, bot_canvas, 30)
        second = session.wait_js(PATTERN_READER_JS.replace("arguments[0]", repr(bot_canvas)),
                                 lambda v: isinstance(v, dict) and v.get("ok") and v["frame"] > first["frame"],
                                 20, "the bot's pattern advancing on its tile")
        check("the bot's channel video decodes on its tile: codes read from the canvas and advance",
              second["frame"] > first["frame"] and (second["width"], second["height"]) == (640, 360),
              f"frames {first['frame']} -> {second['frame']}, {second['width']}x{second['height']}")
        session.click("camera")
        read_pattern(session, "video-self", 30)

        def channel_codes():
            codes = []
            for name in sorted(os.listdir(chan_rec)) if os.path.isdir(chan_rec) else []:
                if name.endswith(".jsonl"):
                    with open(os.path.join(chan_rec, name)) as f:
                        for line in f:
                            try:
                                codes.append(json.loads(line).get("code"))
                            except ValueError:
                                pass  # a line being written
            return codes

        deadline = time.monotonic() + 30
        codes = channel_codes()
        while time.monotonic() < deadline and len([c for c in codes if c is not None]) < 30:
            time.sleep(0.3)
            codes = channel_codes()
        readable = [c for c in codes if c is not None]
        check("my camera reaches the bot in the channel: readable codes, in order",
              len(readable) >= 30 and all(b > a for a, b in zip(readable, readable[1:])),
              f"{len(readable)}/{len(codes)} readable")
        if shots:
            session.screenshot(f"{shots}/voice-channel-video.png")
        with open(off_file, "w"):
            pass  # the bot turns its camera off (and says so)
        camera_state = session.wait_js(
            "const t = document.querySelector('[data-testid=\"tile-e2e-bot\"]');"
            "return t ? t.dataset.camera : null;", lambda v: v == "off", 20, "the bot's tile says camera off")
        check("the bot's camera off: its tile shows its avatar (told, not timed out), no frozen picture",
              camera_state == "off" and session.exists("avatar-e2e-bot")
              and not session.js("return !!document.querySelector('[data-testid=\"tile-e2e-bot\"] canvas');"),
              str(camera_state))
        os.remove(off_file)  # on again: the tile comes back
        back = session.wait_js(
            "const t = document.querySelector('[data-testid=\"tile-e2e-bot\"]');"
            "return t ? t.dataset.camera : null;", lambda v: v == "on", 30, "the bot's camera back on")
        check("the bot's camera on again shows on its tile", back == "on", str(back))
        session.click("camera")
        session.click("leave-Lobby")
        session.find("join-Lobby")
        stop(bot)
        bot = None
        chan_log.close()

        # --- devices: test sound, live input meter ---------------------------------------------
        session.click("nav-settings")
        session.find("devices-panel")
        session.click("test-sound-default")
        result = session.wait_text("test-result-default", lambda t: t and not t.startswith("Playing"), 20)
        check("test sound plays or says clearly why not",
              result.startswith("Played") or "speaker" in result.lower(), result)
        meter = session.wait_js(
            "const e = document.querySelector('[data-testid=meter-error]');"
            "const m = document.querySelector('[data-testid=level-meter]');"
            "return e ? 'error:' + e.textContent : (m && m.dataset.live === 'true' ? 'live' : null);",
            lambda v: v is not None, 20, "meter live or explained")
        check("the sensitivity meter is live, or says the microphone is missing",
              meter == "live" or "microphone" in meter.lower(), str(meter))
        if shots:
            session.js("document.querySelector('[data-testid=devices-panel]').scrollIntoView({block: 'start'})")
            time.sleep(0.5)
            session.screenshot(f"{shots}/settings-devices.png")
        session.click("nav-voice")

        # --- relay down and back ---------------------------------------------------------------
        stop(relay)
        down = session.wait_js("return document.querySelector('[data-testid=relay-state]').dataset.state",
                               lambda v: v in ("disconnected", "connecting"), 30, "relay down shown")
        check("relay down is shown", down in ("disconnected", "connecting"), down)
        if shots:
            session.screenshot(f"{shots}/relay-down.png")
        relay = start_relay(args.relay_bin, port, relay_data, log)
        back = session.wait_js("return document.querySelector('[data-testid=relay-state]').dataset.state",
                               lambda v: v == "connected", 40, "reconnected")
        check("reconnects by itself when the relay is back", back == "connected", back)

        # --- bandwidth settings ----------------------------------------------------------------
        session.click("nav-settings")
        session.find("bandwidth-panel")
        pub = session.text("public-key")
        check("settings show the 64-hex public key", len(pub) == 64, pub)
        try:
            detected = session.wait_text("total-detected-rate", lambda t: t.endswith("bps"), 40)
        except TimeoutError:
            why = session.js("const m = document.querySelector('[data-testid=budget-message]');"
                             "return m ? m.textContent : 'no message';")
            raise TimeoutError(f"no measured upload shown ({why})")
        check("auto-detect shows the measured upload", detected.endswith("bps") and not detected.startswith("0 "),
              detected)
        print(f"measured: auto-detected upload to the local relay {detected}")
        before = session.text("total-detected")
        session.click("measure-upload")
        again = session.wait_text("total-detected", lambda t: t != before, 30)
        check("measure again runs a new test", again != before, again)
        print(f"measured: again {session.text('total-detected-rate')}")
        if shots:
            session.screenshot(f"{shots}/settings-bandwidth-detected.png")
        session.click("total-manual")
        # A controlled number input: set it in one step (typing key by key races its re-renders).
        session.set_value("total-mbps", "20")
        session.click("reserved-auto")  # unticking auto makes the slider manual
        session.wait_js("return document.querySelector('[data-testid=reserved-slider]').disabled",
                        lambda v: v is False, 10, "slider enabled")
        # Drive the slider with the keyboard, as a user would: Home (0), then 40 steps of 1% of 20 Mbps.
        session.type("reserved-slider", "\ue011" + "\ue014" * 40, clear=False)
        session.wait_text("reserved-value", lambda t: t == "8 Mbps", timeout=10)
        check("the reservation slider sets a manual value", session.text("reserved-value") == "8 Mbps",
              session.text("reserved-value"))
        session.set_value("total-mbps", "5")  # now less than the reservation
        err = session.wait_text("error-reserved", lambda t: len(t) > 0)
        check("reserving more than the total is refused with a message", "Reserved for other apps" in err, err)
        disabled = session.prop("bandwidth-save", "disabled")
        check("save is disabled while settings are invalid", disabled is True, str(disabled))
        session.set_value("total-mbps", "20")
        avail = session.wait_text("available", lambda t: t == "12 Mbps")
        check("available is total minus reserved", avail == "12 Mbps", avail)
        session.click("relay-medium")
        rate = session.wait_text("relay-rate", lambda t: t == "3 Mbps")
        check("medium relay is 25% of available", rate == "3 Mbps", rate)
        session.set_value("download-quality", "720p", event="change")
        session.click("bandwidth-save")
        saved = session.wait_text("bandwidth-status", lambda t: t == "Saved.")
        check("bandwidth settings saved", saved == "Saved.", saved)
        guard = session.wait_text("throttle-state", lambda t: "relay allowed" in t, 20)
        check("with relaying on, the throttler's relay cap is shown", "relay allowed" in guard, guard)
        if shots:
            session.screenshot(f"{shots}/settings-bandwidth.png")
            session.js("document.querySelector('[data-testid=voice-panel]').scrollIntoView()")
            session.screenshot(f"{shots}/settings-voice.png")

        # --- restart ---------------------------------------------------------------------------
        session.quit()
        session = None
        time.sleep(1)
        session = ready_session(base, app)
        me = session.wait_text("me", lambda t: "e2e-alice" in t)
        check("identity survives a restart", "e2e-alice" in me, me)
        session.click("nav-settings")
        session.find("bandwidth-panel")
        check("manual total survives a restart", session.prop("total-mbps", "value") == "20")
        check("reserved survives a restart", session.text("reserved-value") == "8 Mbps", session.text("reserved-value"))
        check("relay level survives a restart", session.prop("relay-medium", "checked") is True)
        check("download quality survives a restart", session.prop("download-quality", "value") == "720p")
        check("available recalculated after restart", session.text("available") == "12 Mbps")
        state = session.wait_js("return document.querySelector('[data-testid=relay-state]').dataset.state",
                                lambda v: v == "connected", 30, "relay connected after restart")
        check("reconnects to the saved relay after a restart", state == "connected", state)
        session.click("nav-voice")
        session.find("server-E2E Squad")
        check("servers listed after a restart", True)
        if args.measure and driver:
            # Steady state: the upload is measured already, so no bandwidth test runs now.
            time.sleep(3)
            measure(driver.pid, "idle after a restart (budget service running, no test due)", args.measure)
    except Exception as e:  # a crash is a failure with its reason, not a traceback without a summary
        check("e2e ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        if session:
            session.quit()
        stop(bot)
        stop(driver)
        stop(relay)
        log.close()
        if failed:
            with open(os.path.join(data_dir, "driver.log")) as f:
                print("--- tauri-driver log (tail) ---")
                print("".join(f.readlines()[-40:]))
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"app e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
