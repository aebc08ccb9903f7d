"""The report in a real browser: headless Chromium driven over the DevTools protocol (stdlib only).

Chromium's ``--remote-debugging-pipe`` speaks the protocol on file descriptors 3 (commands in) and 4
(replies and events out), one JSON message per NUL-terminated chunk; no websocket client is needed.
The page must load every image, raise no console error or uncaught exception, open no dialog (the
fixture's ``<script>alert(1)</script>.png`` must stay text) and show the fixture's methods in its tables.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.report import build_report
from report_fixtures import HOSTILE_ID, HOSTILE_REASON, METHODS, build_fixture_store


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (/usr/bin/chromium or `chromium` on PATH); "
           "on Debian: apt-get install -y chromium")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe")
TIMEOUT = 30.0


class DevToolsPipe:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, executable: str, profile_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # runs in the child between fork and exec
            # Move both ends above 10 first so neither lands on 3/4 before it is copied there.
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=child_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.events: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._drain_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)
        with self._cond:
            self._cond.notify_all()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no reply to {method}; chromium stderr:\n{''.join(self.stderr)[-3000:]}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
        """Wait for ``method``; every event read meanwhile is appended to ``seen``."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event; chromium stderr:\n{''.join(self.stderr)[-3000:]}")
            try:
                event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            seen.append(event)
            if event.get("method") == method:
                return event

    def drain(self, seen: list[dict[str, Any]]) -> None:
        while True:
            try:
                seen.append(self.events.get_nowait())
            except queue.Empty:
                return

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # only the process this test started
            self.proc.wait()
        os.close(self._to_chrome)
        for t in self._threads:  # both end at EOF now that chromium has exited
            t.join(timeout=5)
        os.close(self._from_chrome)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


PAGE_PROBE = """(() => {
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                              src: i.src.slice(0, 30)}));
  const tables = [...document.querySelectorAll('table.metrics')].map(t => ({id: t.id, text: t.innerText}));
  const view = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > view + 1)
    .map(e => (e.id || e.tagName) + ':' + Math.round(e.getBoundingClientRect().right)).slice(0, 10);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return JSON.stringify({imgs, tables, scripts: document.scripts.length, text: document.body.innerText,
                         height: document.documentElement.scrollHeight,
                         width: document.documentElement.scrollWidth, view, wide, ids});
})()"""


def render(html: Path, screenshot: Path) -> dict[str, Any]:
    """Open ``html`` in headless Chromium; return what the page holds and every event it raised."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        browser = DevToolsPipe(CHROMIUM, Path(profile))
        events: list[dict[str, Any]] = []
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            browser.send("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
            browser.wait_event("Page.loadEventFired", events)
            probe = json.loads(browser.send("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True},
                                            session=session)["result"]["value"])
            height = min(int(probe["height"]), 16000)
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}}, session=session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.2)  # late console messages
            browser.drain(events)
        finally:
            browser.close()
    probe["events"] = events
    return probe


def _problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"uncaught exception: {p.get('exceptionDetails', {}).get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p.get('type')}: {[a.get('value') for a in p.get('args', [])]}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            out.append(f"dialog opened: {p.get('message')}")
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser-results")
    build_fixture_store(root, hostile=True)
    html = build_report(root)
    shot = root / "report.png"
    probe = render(html, shot)
    probe["screenshot"] = shot
    return probe


def test_report_renders_in_chromium_with_every_image_loaded(rendered: dict[str, Any]) -> None:
    imgs = rendered["imgs"]
    assert len(imgs) > 20  # figures, grid tiles, strips
    broken = [i for i in imgs if not i["complete"] or i["width"] <= 0]
    assert not broken, f"broken images: {broken}"


def test_report_raises_no_console_error_exception_or_dialog(rendered: dict[str, Any]) -> None:
    assert _problems(rendered["events"]) == []


def test_report_tables_show_every_method(rendered: dict[str, Any]) -> None:
    table1 = next(t for t in rendered["tables"] if t["id"].endswith("-t1"))
    for method in METHODS:
        assert method in table1["text"]
    assert "optim-w" not in table1["text"]  # the killed run is only mentioned in the note


def test_hostile_file_name_shows_as_text_and_runs_nothing(rendered: dict[str, Any]) -> None:
    assert rendered["scripts"] == 0
    assert HOSTILE_ID in rendered["text"]
    assert HOSTILE_REASON in rendered["text"]


def test_screenshot_is_a_nonblank_page(rendered: dict[str, Any]) -> None:
    with Image.open(rendered["screenshot"]) as shot:
        assert shot.width == 1280 and shot.height > 900
        lo, hi = shot.convert("L").getextrema()
        assert hi - lo > 100


def test_the_page_does_not_scroll_sideways_at_1280_px(rendered: dict[str, Any]) -> None:
    """Issue 27: the claims table ran 160 px past the right edge at 1,280 px."""
    assert rendered["width"] <= rendered["view"] == 1280, f"wider than the window: {rendered['wide']}"


def test_a_verdict_block_precedes_table_1(rendered: dict[str, Any]) -> None:
    ids = rendered["ids"]
    verdicts = next(i for i in ids if i.endswith("-verdicts"))
    assert ids.index(verdicts) < ids.index(next(i for i in ids if i.endswith("-t1")))
    text = rendered["text"]
    assert text.index("Verdicts") < text.index("Table 1: inversion quality and speed")
    block = text[text.index("Verdicts"):text.index("Table 1: inversion quality and speed")]
    assert "holds: the domain-guided encoder reconstructs better" in block
    assert "95% interval of the difference" in block
