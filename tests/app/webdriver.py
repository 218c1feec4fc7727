"""A minimal W3C WebDriver client over plain HTTP (no third-party packages), enough to drive the
Hum app through tauri-driver: sessions, finding elements, clicking, typing, running JS, screenshots."""

import base64
import http.client
import json
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriverError(Exception):
    pass


def _request(method, url, body=None, timeout=60, retries=3):
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise WebDriverError(f"{method} {url} -> {e.code}: {detail[:500]}") from None
        except TimeoutError:
            raise TimeoutError(f"{method} {url}: no answer after {timeout}s") from None
        except (http.client.RemoteDisconnected, ConnectionResetError):
            # tauri-driver drops the connection when it could not reach WebKitWebDriver: the
            # command never ran, so sending it again is safe.
            if attempt == retries:
                raise
            time.sleep(0.5)


def wait_for_port(host, port, timeout):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Session:
    def __init__(self, base, application, timeout=60):
        self.base = base
        caps = {"capabilities": {"alwaysMatch": {"tauri:options": {"application": application}}}}
        value = _request("POST", f"{base}/session", caps, timeout=timeout)
        self.id = value["sessionId"]
        self.url = f"{base}/session/{self.id}"

    def cmd(self, method, path, body=None):
        return _request(method, f"{self.url}{path}", body)

    def quit(self):
        try:
            self.cmd("DELETE", "")
        except Exception:
            pass

    def find(self, testid, timeout=20):
        """The element with data-testid=testid, waiting until it exists."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                el = self.cmd("POST", "/element", {"using": "css selector", "value": f'[data-testid="{testid}"]'})
                return el[ELEMENT]
            except WebDriverError as e:
                last = e
                time.sleep(0.2)
        raise TimeoutError(f"no element {testid!r} after {timeout}s ({last})")

    def exists(self, testid):
        els = self.cmd("POST", "/elements", {"using": "css selector", "value": f'[data-testid="{testid}"]'})
        return len(els) > 0

    def click(self, testid):
        self.cmd("POST", f"/element/{self.find(testid)}/click", {})

    def text(self, testid):
        return self.cmd("GET", f"/element/{self.find(testid)}/text")

    def type(self, testid, text, clear=True):
        el = self.find(testid)
        if clear:
            self.cmd("POST", f"/element/{el}/clear", {})
        self.cmd("POST", f"/element/{el}/value", {"text": text})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def set_value(self, testid, value, event="input"):
        """Sets an input's value as a user would (range sliders, selects) and fires the event."""
        self.find(testid)
        return self.js(
            "const el = document.querySelector(`[data-testid='${arguments[0]}']`);"
            "el.value = arguments[1]; el.dispatchEvent(new Event(arguments[2], {bubbles: true}));"
            "return el.value;",
            testid,
            str(value),
            event,
        )

    def prop(self, testid, name):
        return self.cmd("GET", f"/element/{self.find(testid)}/property/{name}")

    def wait_text(self, testid, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.text(testid)
                if predicate(last):
                    return last
            except (WebDriverError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{testid!r} text never matched; last was {last!r}")

    def wait_js(self, script, predicate, timeout=20, what="condition"):
        """Polls a JS expression (`return ...`) until predicate(value) holds; returns the value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.js(script)
                if predicate(last):
                    return last
            except WebDriverError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{what} never held; last value {last!r}")

    def attr(self, testid, name):
        return self.js(
            "const el = document.querySelector(`[data-testid='${arguments[0]}']`);"
            "return el ? el.getAttribute(arguments[1]) : null;",
            testid,
            name,
        )

    def screenshot(self, path):
        # WebKit answers a screenshot after the page's next paint; with accelerated compositing off
        # (the app's default, docs/app.md "Memory") an idle page never paints. A single scheduled
        # paint races the request (under load it can land before WebKit starts waiting, and the
        # screenshot then waits forever), so keep repainting until the screenshot has been taken.
        self.js("if (!window.__humPaint) { let on = false; window.__humPaint = setInterval(() =>"
                " { on = !on; document.body.style.outline = on ? '1px solid transparent' : ''; }, 50); }")
        try:
            png = base64.b64decode(self.cmd("GET", "/screenshot"))
        finally:
            self.js("clearInterval(window.__humPaint); window.__humPaint = null;"
                    " document.body.style.outline = '';")
        with open(path, "wb") as f:
            f.write(png)
