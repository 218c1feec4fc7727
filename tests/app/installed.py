#!/usr/bin/env python3
"""The installed Hum app (the .deb from scripts/package), started and driven under Xvfb: what
scripts/test.d/60-package.sh runs after `apt install ./hum_*.deb` (docs/packaging.md).

  xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- python3 tests/app/installed.py \
      --app /usr/bin/hum-app --relay-bin /usr/bin/hum-relay --starts 5

1. Cold start to first paint, without WebDriver (the app as a user starts it): --starts launches of
   the app, each with a new data directory (the first-run screen every new user sees first) and,
   before each, the app binary and WebKitGTK's libraries and helper processes dropped from the page
   cache (posix_fadvise DONTNEED: read from the disk again; pages some running process maps stay).
   The X screen is read (XGetImage through libX11) every few milliseconds from just before the
   exec:
     window  the first frame that differs from the empty screen (the window mapped, painted with
             its background),
     paint   the first frame in which the screen shows more than PAINT_COLOURS colours (text and
             controls drawn: the first-run card, not an empty background),
     settled the last change of more than SETTLE_PIXELS sampled pixels before the screen stays
             otherwise unchanged for SETTLE seconds (the focused field's blinking cursor is less).
   The screen is read about every 15 ms (a read takes a few; the pause leaves the 2 cores to the
   app), so each time is late by up to one read.
   Each launch is then closed as a user closes it (WM_DELETE_WINDOW to its window; there is no
   window manager under Xvfb, so the message is sent directly) and must exit 0 with its WebKit
   processes gone. The same again with the pages left in the cache ("warm").
2. WebDriver (tauri-driver + WebKitWebDriver; the application is the installed binary: WebKit
   automation is switched on by tauri-driver's TAURI_WEBVIEW_AUTOMATION at run time, any build
   allows it): first run (identity created with the address of the hum-relay started here), the
   relay connected, the relay's release notice shown (the update check); with --hum-bin, a hum CLI
   user's invite opened through `xdg-open hum://invite/CODE` (the installed desktop entry) reaches
   the running app, which asks, and joins on the click.
3. Afterwards no process runs the installed binary.
Bounded: every wait has a timeout and the whole run is capped (--deadline)."""

import argparse
import ctypes
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (checks, process helpers, the relay and driver starters)

PAINT_COLOURS = 24  # an empty window is one or two colours; the first-run card has hundreds
SETTLE = 2.0
SETTLE_PIXELS = 50  # of the sample: a blinking text cursor changes fewer
WEBKIT_FILES = [
    "/usr/lib/x86_64-linux-gnu/libwebkit2gtk-4.1.so.0*",
    "/usr/lib/x86_64-linux-gnu/libjavascriptcoregtk-4.1.so.0*",
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/WebKit*Process",
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/injected-bundle/*.so",
]


class XImage(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
                ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int),
                ("bitmap_pad", ctypes.c_int), ("depth", ctypes.c_int),
                ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]


class XClientMessageEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                ("message_type", ctypes.c_ulong), ("format", ctypes.c_int),
                ("l", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]  # XEvent is 24 longs


class Screen:
    """The X display's root window, read through libX11 (no toolkit, no extra package)."""

    def __init__(self):
        x = ctypes.CDLL("libX11.so.6")
        x.XOpenDisplay.restype = ctypes.c_void_p
        x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x.XDefaultRootWindow.restype = ctypes.c_ulong
        x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        for f in ("XDisplayWidth", "XDisplayHeight"):
            getattr(x, f).argtypes = [ctypes.c_void_p, ctypes.c_int]
        x.XGetImage.restype = ctypes.POINTER(XImage)
        x.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                                ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
        x.XFree.argtypes = [ctypes.c_void_p]
        x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                                 ctypes.POINTER(ctypes.c_uint)]
        x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
        x.XInternAtom.restype = ctypes.c_ulong
        x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                                 ctypes.c_void_p]
        x.XFlush.argtypes = [ctypes.c_void_p]
        self.x = x
        self.dpy = x.XOpenDisplay(None)
        if not self.dpy:
            raise RuntimeError(f"cannot open the X display {os.environ.get('DISPLAY')!r}")
        self.root = x.XDefaultRootWindow(self.dpy)
        self.w, self.h = x.XDisplayWidth(self.dpy, 0), x.XDisplayHeight(self.dpy, 0)

    def grab(self):
        """The whole screen's pixels (ZPixmap bytes)."""
        img = self.x.XGetImage(self.dpy, self.root, 0, 0, self.w, self.h, 0xFFFFFFFF, 2)
        if not img:
            raise RuntimeError("XGetImage failed")
        data = ctypes.string_at(img.contents.data, img.contents.bytes_per_line * img.contents.height)
        self.x.XFree(img.contents.data)
        self.x.XFree(img)
        return data

    def windows(self, name):
        """Top-level windows titled `name`."""
        root, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children, n = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
        self.x.XQueryTree(self.dpy, self.root, ctypes.byref(root), ctypes.byref(parent),
                          ctypes.byref(children), ctypes.byref(n))
        out = []
        for i in range(n.value):
            title = ctypes.c_char_p()
            if self.x.XFetchName(self.dpy, children[i], ctypes.byref(title)) and title.value:
                if title.value.decode(errors="replace") == name:
                    out.append(children[i])
        if children:
            self.x.XFree(children)
        return out

    def close(self, window):
        """What a window manager sends when the user clicks the close button."""
        ev = XClientMessageEvent()
        ev.type = 33  # ClientMessage
        ev.window = window
        ev.message_type = self.x.XInternAtom(self.dpy, b"WM_PROTOCOLS", 0)
        ev.format = 32
        ev.l[0] = self.x.XInternAtom(self.dpy, b"WM_DELETE_WINDOW", 0)
        ev.l[1] = 0  # CurrentTime
        self.x.XSendEvent(self.dpy, window, 0, 0, ctypes.byref(ev))
        self.x.XFlush(self.dpy)


def colours(frame):
    """How many colours a sample of the frame (every 7th pixel) shows."""
    px = memoryview(frame).cast("I")
    return len(set(px[::7]))


def save_ppm(frame, w, h, path):
    """A screen frame (32-bit BGRX, Xvfb's 24-bit visual) as a PPM picture, to see what was timed."""
    rgb = bytearray(w * h * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = frame[2::4], frame[1::4], frame[0::4]
    with open(path, "wb") as f:
        f.write(b"P6 %d %d 255\n" % (w, h) + bytes(rgb))


def changed(a, b):
    """How many pixels of a sample (every 7th) differ between two frames."""
    return sum(x != y for x, y in zip(memoryview(a).cast("I")[::7], memoryview(b).cast("I")[::7]))


def evict(paths):
    """Drops the files' pages from the page cache; returns how many files it touched."""
    n = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def resident(path):
    """fincore's RES column for `path` (how much of it is in the page cache), for the log."""
    r = subprocess.run(["fincore", "-n", "-o", "RES", path], stdout=subprocess.PIPE, text=True)
    return r.stdout.strip() or "?"


def wait_exit(pid_tree, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pid_tree if os.path.exists(f"/proc/{p}") and e2e.comm(p)]:
            return True
        time.sleep(0.1)
    return False


def launch(app, screen, timeout, shots):
    """One start of the app in a new data directory: (window, paint, settled) in seconds from the
    exec, the exit code after the window is closed, and whether its whole process tree ended."""
    data = tempfile.mkdtemp(prefix="hum-installed-")
    env = dict(os.environ, HUM_DATA_DIR=data, HUM_NO_BINDINGS_EXPORT="1",
               XDG_CONFIG_HOME=os.path.join(data, "config"))
    log = open(os.path.join(data, "app.log"), "w")
    blank = screen.grab()
    t0 = time.monotonic()
    proc = subprocess.Popen([app], env=env, stdout=log, stderr=subprocess.STDOUT)
    window = paint = settled = None
    last, last_change, frames = blank, t0, 0
    try:
        while time.monotonic() - t0 < timeout:
            frame = screen.grab()
            now = time.monotonic()
            frames += 1
            if frame != last:
                if window is None:
                    window = now - t0
                    shots["window"] = frame
                if paint is None and colours(frame) > PAINT_COLOURS:
                    paint = now - t0
                    shots["paint"] = frame
                if changed(last, frame) > SETTLE_PIXELS:
                    last_change = now
                    shots["settled"] = frame
                last = frame
            if paint is not None and now - last_change >= SETTLE:
                settled = last_change - t0
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        tree = e2e.process_tree(proc.pid)
        wins = screen.windows("Hum")
        for w in wins:
            screen.close(w)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        gone = wait_exit(tree, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    with open(os.path.join(data, "app.log")) as f:
        tail = f.read()[-600:]
    shutil.rmtree(data, ignore_errors=True)
    return {"window": window, "paint": paint, "settled": settled, "rc": rc, "gone": gone,
            "windows": len(wins), "frames": frames, "log": tail}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ms(x):
    return "-" if x is None else f"{x * 1000:.0f}"


def startup_series(args, screen, label, cold):
    runs = []
    for i in range(args.starts):
        if cold:
            evict([args.app] + [p for g in WEBKIT_FILES for p in glob.glob(g)])
        before = resident(args.app)
        shots = {}
        r = launch(args.app, screen, args.timeout, shots)
        runs.append(r)
        if args.screenshots and i == 0:
            for what, frame in shots.items():
                save_ppm(frame, screen.w, screen.h, os.path.join(args.screenshots, f"{label}-{what}.ppm"))
        print(f"start {label} {i + 1}: window {ms(r['window'])} ms, first paint {ms(r['paint'])} ms, "
              f"settled {ms(r['settled'])} ms ({r['frames']} screen reads; {args.app} in the page cache "
              f"before: {before}); closed -> exit {r['rc']}, processes gone: {r['gone']}")
        e2e.check(f"{label} start {i + 1}: the installed app paints its window (text drawn), then settles",
                  r["paint"] is not None and r["settled"] is not None, r["log"])
        e2e.check(f"{label} start {i + 1}: closing its window exits 0 and ends its WebKit processes",
                  r["windows"] == 1 and r["rc"] == 0 and r["gone"],
                  f"windows={r['windows']} rc={r['rc']} gone={r['gone']} {r['log']}")
        time.sleep(0.5)
    print(f"STARTUP {label} ({len(runs)} starts, median): window {ms(median(r['window'] for r in runs))} ms, "
          f"first paint {ms(median(r['paint'] for r in runs))} ms, "
          f"settled {ms(median(r['settled'] for r in runs))} ms; "
          f"first paint min {ms(min((r['paint'] for r in runs if r['paint']), default=None))} "
          f"max {ms(max((r['paint'] for r in runs if r['paint']), default=None))} ms")
    sys.stdout.flush()


def link_check(session, args, relay_url, data_dir, work, log):
    """A hum:// invite opened the way the desktop opens a clicked link: `xdg-open` finds the
    installed desktop entry claiming x-scheme-handler/hum (mimeinfo.cache, written by
    desktop-file-utils' trigger when the package is installed) and runs its `hum-app %u`, which
    hands the link to the running app; the app asks before joining."""
    env = dict(os.environ, HUM_RELAY=relay_url, HUM_IDENTITY=os.path.join(work, "bot.json"))
    run = lambda *a: subprocess.run([args.hum_bin, *a], env=env, stdout=subprocess.PIPE, stderr=log,
                                    timeout=60, check=True, text=True).stdout.strip()
    run("identity", "create", "--name", "packaged-bot")
    run("server", "create", "Packaged Den")
    code = run("server", "invite", "Packaged Den")
    handler = subprocess.run(["xdg-mime", "query", "default", "x-scheme-handler/hum"],
                             stdout=subprocess.PIPE, text=True).stdout.strip()
    e2e.check("the installed desktop entry is the handler of hum:// links", handler == "Hum.desktop", handler)
    # The second launch must reach the app under test: same data directory. BROWSER=false: if no
    # handler were found, xdg-open would fall back to a web browser.
    opened = subprocess.run(["xdg-open", f"hum://invite/{code}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=90,
                            env=dict(os.environ, HUM_DATA_DIR=data_dir, BROWSER="false"))
    e2e.check("xdg-open hum://invite/CODE runs the installed app, which hands the link over",
              opened.returncode == 0 and "already running" in opened.stdout,
              f"rc={opened.returncode} {opened.stdout[-300:]!r}")
    what = session.wait_text("link-what", lambda t: code in t, 30)
    e2e.check("the running app asks before joining the invited server", code in what, what)
    session.click("link-accept")
    session.find("server-Packaged Den", timeout=30)
    e2e.check("accepting joins the server (it is on the rail)", e2e.wait_gone(session, "link-dialog"))


def webdriver_check(args, work):
    """First run and connect, through WebDriver, against the installed binary."""
    e2e.DRIVER_PORT, e2e.NATIVE_PORT = e2e.free_port(), e2e.free_port()
    data_dir = os.path.join(work, "app")
    os.makedirs(data_dir)
    log = open(os.path.join(work, "driver.log"), "w")
    relay = driver = session = None
    port = e2e.free_port()
    relay_url = f"ws://127.0.0.1:{port}/ws"
    relay_data = os.path.join(work, "relay")
    os.makedirs(relay_data)
    try:
        relay = e2e.start_relay(args.relay_bin, port, relay_data, log)
        driver = e2e.start_driver(data_dir, log)
        session = e2e.ready_session(f"http://127.0.0.1:{e2e.DRIVER_PORT}", args.app)
        pid = e2e.app_pid(driver.pid)
        exe = os.readlink(f"/proc/{pid}/exe") if pid else None
        e2e.check("WebDriver drives the installed binary", exe == args.app, str(exe))
        session.find("first-run")
        e2e.check("first run starts on the identity screen", session.exists("display-name"))
        session.type("display-name", "packaged-alice")
        session.type("relay-url", relay_url)
        session.click("create-identity")
        me = session.wait_text("me", lambda t: "packaged-alice" in t)
        e2e.check("identity created, main screen shown", "packaged-alice" in me, me)
        state = session.wait_js("return document.querySelector('[data-testid=relay-state]').dataset.state",
                                lambda v: v == "connected", 30, "relay connected")
        e2e.check("the installed app connects to the relay", state == "connected", state)
        e2e.update_notice_checks(session)
        if args.hum_bin:
            link_check(session, args, relay_url, data_dir, work, log)
        session.quit()
        session = None
        if pid:
            e2e.check("the app ends with its WebDriver session", wait_exit(e2e.process_tree(pid), 15))
    except Exception as e:
        e2e.check("the WebDriver check ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        if session:
            session.quit()
        e2e.stop(driver)
        e2e.stop(relay)
        log.close()
        if e2e.failed:
            with open(os.path.join(work, "driver.log")) as f:
                print("--- tauri-driver and relay log (tail) ---")
                print("".join(f.readlines()[-40:]))


def running(app):
    """Processes whose executable is `app` (also after the file was deleted)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                exe = os.readlink(f"/proc/{d}/exe")
            except OSError:
                continue
            if exe in (app, f"{app} (deleted)"):
                out.append(int(d))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", default="/usr/bin/hum-app")
    ap.add_argument("--relay-bin", required=True)
    ap.add_argument("--hum-bin", default=None, help="hum CLI: with it, a hum:// invite is opened through xdg-open")
    ap.add_argument("--starts", type=int, default=5, help="launches per start-up series")
    ap.add_argument("--timeout", type=float, default=60, help="seconds one launch may take to paint")
    ap.add_argument("--deadline", type=float, default=480)
    ap.add_argument("--screenshots", default=None, help="save the first start's 'window', 'paint' and 'settled' frames here (PPM)")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("deadline")))
    signal.alarm(int(args.deadline))
    work = tempfile.mkdtemp(prefix="hum-installed-")
    try:
        screen = Screen()
        print(f"screen {screen.w}x{screen.h}, {colours(screen.grab())} colours when empty")
        startup_series(args, screen, "cold", cold=True)
        startup_series(args, screen, "warm", cold=False)
        webdriver_check(args, work)
    except Exception as e:
        e2e.check("installed-app check ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        shutil.rmtree(work, ignore_errors=True)
    left = running(args.app)
    e2e.check(f"no process runs {args.app} afterwards", not left, str(left))
    print(f"installed app: {e2e.passed} passed, {e2e.failed} failed")
    return 1 if e2e.failed else 0


if __name__ == "__main__":
    sys.exit(main())
