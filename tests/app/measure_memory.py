#!/usr/bin/env python3
"""Memory and CPU of the real Hum desktop app's whole process tree, idle and in a voice call.

  xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- python3 tests/app/measure_memory.py \
      --app target/release/hum-app --relay-bin target/debug/hum-relay --hum-bin target/debug/hum

Runs a real hum-relay, drives the app through tauri-driver + WebKitWebDriver (first run, relay
connected: "idle"; server + channel, a `hum voice join --tone` bot, the app joins: "call"; the camera
on with the test pattern as a 720p30 self-view; camera off and 4 pattern streams of 360p30 decoded in
4 tiles: what a 4-person call shows), then
starts the app again directly, without WebDriver, from the same data dir ("idle, no WebDriver": what
a user runs). For every process of the app's tree (hum-app, WebKitWebProcess, WebKitNetworkProcess,
a GPU process if any) it prints RSS, PSS and USS from /proc/PID/smaps_rollup, and the sums.

- RSS counts a shared library's resident pages in every process that maps it, so the RSS sum counts
  libwebkit2gtk, GTK, glib etc. three times; PSS divides shared pages between the processes mapping
  them (a page shared with anything outside the tree, e.g. another app, is split with it too); USS
  is what each process alone holds (private pages). The PSS sum is the honest "memory of the app".
- --top N prints each process's N largest mappings (by RSS), to see where memory goes.
- --floor also measures WebKitGTK's MiniBrowser showing about:blank with the app's WebKit settings
  (HUM_WEBVIEW_TUNING=0: WebKit's defaults): the floor any WebKitGTK app pays before loading a page.
- Environment variables given to this script reach the app (e.g. to compare WEBKIT_* settings).
Bounded: every wait has a timeout; the whole run is capped by --deadline."""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (process helpers and the relay/driver starters)
from webdriver import Session  # noqa: E402

MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"


def rollup(pid):
    """{field: KiB} from /proc/PID/smaps_rollup (Rss, Pss, Private_*, Anonymous, ...)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def mappings(pid):
    """{mapping name: (rss KiB, pss KiB)} from /proc/PID/smaps, anonymous mappings as [anon]."""
    out = {}
    name = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(maxsplit=1)[0]
                if "-" in first and not first.endswith(":"):
                    fields = line.split(maxsplit=5)
                    name = fields[5].strip() if len(fields) > 5 else "[anon]"
                    out.setdefault(name, [0, 0])
                elif first == "Rss:":
                    out[name][0] += int(line.split()[1])
                elif first == "Pss:":
                    out[name][1] += int(line.split()[1])
    except OSError:
        pass
    return out


def snapshot(root_pid, label, seconds, top):
    """Per-process RSS/PSS/USS of root_pid's tree and the tree's CPU over `seconds`."""
    tree = e2e.process_tree(root_pid)
    before = {p: e2e.cpu_ticks([p]) for p in tree}
    c0, t0 = e2e.cpu_ticks(tree), time.monotonic()
    time.sleep(seconds)
    tree = e2e.process_tree(root_pid)
    elapsed = time.monotonic() - t0
    pct = lambda ticks: ticks / os.sysconf("SC_CLK_TCK") / elapsed * 100
    cpu = pct(e2e.cpu_ticks(tree) - c0)
    rows = []
    for p in tree:
        r = rollup(p)
        if not r:
            continue
        uss = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        rows.append((e2e.comm(p), p, r.get("Rss", 0), r.get("Pss", 0), uss, r.get("Anonymous", 0),
                     pct(e2e.cpu_ticks([p]) - before.get(p, 0))))
    mib = lambda k: f"{k / 1024:7.1f}"
    print(f"\n== {label}: CPU {cpu:.2f}% of one core over {seconds:.0f}s")
    print(f"   {'process':<18} {'pid':>7} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8} {'anon MiB':>8} {'CPU %':>6}")
    for name, pid, rss, pss, uss, anon, pcpu in rows:
        print(f"   {name:<18} {pid:>7} {mib(rss)} {mib(pss)} {mib(uss)} {mib(anon)} {pcpu:6.1f}")
    tot = [sum(r[i] for r in rows) for i in (2, 3, 4, 5)]
    print(f"   {'total':<18} {'':>7} {mib(tot[0])} {mib(tot[1])} {mib(tot[2])} {mib(tot[3])}")
    if top:
        for name, pid, *_ in rows:
            maps = sorted(mappings(pid).items(), key=lambda kv: -kv[1][0])[:top]
            print(f"   {name} ({pid}) largest mappings, RSS/PSS MiB:")
            for path, (rss, pss) in maps:
                print(f"      {rss / 1024:6.1f} {pss / 1024:6.1f}  {path}")
    print(f"MEASURE {label}: rss={tot[0] / 1024:.1f} pss={tot[1] / 1024:.1f} uss={tot[2] / 1024:.1f} MiB "
          f"cpu={cpu:.2f}% " + " ".join(f"{n}={rss / 1024:.0f}/{pss / 1024:.0f}/{c:.1f}%"
                                         for n, _, rss, pss, _u, _a, c in rows))
    sys.stdout.flush()


def wait_tree(root_pid, names, timeout):
    """Waits until root_pid's tree has a process whose comm starts with each of `names`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        comms = [e2e.comm(p) for p in e2e.process_tree(root_pid)]
        if all(any(c.startswith(n) for c in comms) for n in names):
            return True
        time.sleep(0.2)
    return False


def tiles(session, streams):
    """Per video tile: frames drawn, drawImage time per frame, capture-to-draw latency of the last one."""
    for s in streams:
        v = session.js("const c = document.querySelector(`[data-testid='video-${arguments[0]}']`);"
                       "return c ? [c.dataset.frames, c.dataset.drawMs, c.dataset.latencyMs] : null;", s)
        if v:
            frames, draw, lat = int(v[0] or 0), float(v[1] or 0), v[2]
            print(f"TILE {s}: {frames} frames, drawImage {draw / max(frames, 1):.2f} ms/frame, "
                  f"capture-to-draw {lat} ms (last frame)")


def drive(args, data_dir, log, relay_url):
    """Idle, in-call and video measurements of the app driven through WebDriver."""
    os.environ.setdefault("HUM_VIDEO_SOURCE", "pattern")  # the camera: this machine has none
    driver = e2e.start_driver(data_dir, log)
    session = None
    bot = None
    try:
        session = e2e.ready_session(f"http://127.0.0.1:{e2e.DRIVER_PORT}", os.path.abspath(args.app))
        session.find("first-run")
        session.type("display-name", "measure")
        session.type("relay-url", relay_url)
        session.click("create-identity")
        session.wait_text("me", lambda t: "measure" in t)
        state_js = "return document.querySelector('[data-testid=relay-state]').dataset.state"
        session.wait_js(state_js, lambda v: v == "connected", 60, "relay connected")
        time.sleep(args.settle)
        snapshot(e2e.app_pid(driver.pid), "idle, connected (WebDriver)", args.seconds, args.top)

        session.click("add-server")  # the rail's "+" opens the add-a-server dialog
        session.type("new-server-name", "M")
        session.click("create-server")
        session.find("server-M")
        session.type("new-channel-name-M", "Lobby")
        session.type("new-channel-max-M", "8")
        session.click("create-channel-M")
        session.find("channel-Lobby")
        session.click("invite-M")
        code = session.wait_text("invite-code-M", lambda t: len(t) > 0)
        session.click("invite-dialog-close")
        env = dict(os.environ, HUM_RELAY=relay_url, HUM_IDENTITY=os.path.join(data_dir, "bot.json"))
        for cmd in (["identity", "create", "--name", "bot"], ["server", "join", code]):
            subprocess.run([args.hum_bin, *cmd], env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=60, check=True)
        bot = subprocess.Popen(
            [args.hum_bin, "voice", "join", "--server", "M", "--channel", "Lobby", "--tone", "440",
             "--duration", "600s"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        session.find("member-bot", timeout=30)
        session.click("join-Lobby")
        session.find("member-measure", timeout=30)
        session.wait_js("const m = document.querySelector('[data-testid=\"member-bot\"]');"
                        "return m ? m.dataset.speaking : null;", lambda v: v == "true", 30, "bot speaking")
        time.sleep(args.settle)
        snapshot(e2e.app_pid(driver.pid), "in a voice call with the bot (WebDriver)", args.seconds, args.top)
        # Video: my camera (the test pattern, HUM_VIDEO_SOURCE) as a 720p30 self-view; then 4 360p30
        # pattern streams decoded in 4 tiles (what a 4-person call receives; here hum-app also encodes
        # them, which a receiver does not: see docs/app.md for the split).
        session.click("camera")
        e2e.read_pattern(session, "video-self", 30)
        time.sleep(args.settle)
        snapshot(e2e.app_pid(driver.pid), "in a call, self-view 720p30 (WebDriver)", args.seconds, args.top)
        tiles(session, ["self"])
        session.click("camera")
        e2e.wait_gone(session, "video-self")
        session.js("window.__humVideoBench(4, 640, 360); return true;")
        for i in range(4):
            e2e.read_pattern(session, f"video-bench-{i}", 30)
        time.sleep(args.settle)
        snapshot(e2e.app_pid(driver.pid), "in a call, 4 x 360p30 streams decoded in 4 tiles (WebDriver)",
                 args.seconds, args.top)
        tiles(session, [f"bench-{i}" for i in range(4)])
        session.js("window.__humVideoBench(0); return true;")
        e2e.wait_gone(session, "video-bench-0")
        session.click("leave-Lobby")
        session.find("join-Lobby")
    finally:
        if session:
            session.quit()
        e2e.stop(bot)
        e2e.stop(driver)


def direct(args, data_dir, log):
    """The app started as a user starts it (no WebDriver), from the data dir `drive` left behind."""
    env = dict(os.environ, HUM_DATA_DIR=data_dir, HUM_NO_BINDINGS_EXPORT="1")
    app = subprocess.Popen([os.path.abspath(args.app)], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        if not wait_tree(app.pid, ["WebKitWebProces", "WebKitNetworkPr"], 30):
            print("app's web process did not start")
            return
        time.sleep(args.settle + 5)  # the page loads and connects to the relay
        snapshot(app.pid, "idle, connected (no WebDriver)", args.seconds, args.top)
    finally:
        e2e.stop(app)


def floor(args, log):
    """WebKitGTK's MiniBrowser on about:blank: the cost of any WebKitGTK window."""
    if not os.path.exists(MINIBROWSER):
        print(f"no {MINIBROWSER}; skipping the floor")
        return
    env = dict(os.environ)
    if env.get("HUM_WEBVIEW_TUNING") != "0":
        # What the app sets (no compositing through the DMA-BUF renderer); MiniBrowser has no
        # option for the hardware-acceleration policy, but without this renderer it paints on the CPU.
        env.setdefault("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
    proc = subprocess.Popen([MINIBROWSER, "about:blank"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        if not wait_tree(proc.pid, ["WebKitWebProces"], 30):
            print("MiniBrowser's web process did not start")
            return
        time.sleep(args.settle + 3)
        snapshot(proc.pid, "floor: MiniBrowser about:blank", args.seconds, args.top)
    finally:
        e2e.stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", required=True)
    ap.add_argument("--relay-bin", required=True)
    ap.add_argument("--hum-bin", required=True)
    ap.add_argument("--seconds", type=float, default=10, help="CPU sampling window per measurement")
    ap.add_argument("--settle", type=float, default=5, help="wait before each measurement")
    ap.add_argument("--top", type=int, default=0, help="print each process's N largest mappings")
    ap.add_argument("--floor", action="store_true", help="also measure MiniBrowser on about:blank")
    ap.add_argument("--no-direct", action="store_true", help="skip the run without WebDriver")
    ap.add_argument("--deadline", type=float, default=300)
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("measure deadline")))
    signal.alarm(int(args.deadline))

    # Free ports, not e2e.py's fixed 4444/4445: another e2e run on this machine must not collide.
    e2e.DRIVER_PORT, e2e.NATIVE_PORT = e2e.free_port(), e2e.free_port()
    data_dir = tempfile.mkdtemp(prefix="hum-measure-")
    log = open(os.path.join(data_dir, "log.txt"), "w")
    port = e2e.free_port()
    relay_data = os.path.join(data_dir, "relay")
    os.makedirs(relay_data)
    relay = None
    ok = False
    try:
        relay = e2e.start_relay(args.relay_bin, port, relay_data, log)
        drive(args, data_dir, log, f"ws://127.0.0.1:{port}/ws")
        if not args.no_direct:
            direct(args, data_dir, log)
        if args.floor:
            floor(args, log)
        ok = True
    except Exception as e:
        print(f"measurement failed: {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        e2e.stop(relay)
        log.close()
        if not ok:
            with open(os.path.join(data_dir, "log.txt")) as f:
                print("--- log (tail) ---\n" + "".join(f.readlines()[-30:]))
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
