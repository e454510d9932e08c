"""report.html and the running dashboard rendered in headless Chromium (Debian ``chromium``, see .ci/run).

The browser is driven through the Chrome DevTools Protocol (``websocket-client``): every page is checked
for rendered charts in the DOM, console errors, uncaught exceptions and requests leaving the page, and
a screenshot is saved (in ``$SONGHPO_SCREENSHOTS`` when set, else in the test's temporary directory).
``songhpo report --png`` is checked in the same run (kaleido drives the same Chromium).
Under CI (``CI`` set) a missing Chromium or websocket-client fails these tests instead of skipping them.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dashboards.launch import BUCKETS_GRAPH_ID, PARETO_GRAPH_ID, SIDE_EFFECTS_GRAPH_ID
from dashboards.pareto import FRONT
from hpo.trials import feasible_pareto_front
from tests.conftest import SharedStudy, run_cli
from tests.test_dashboards import free_port, start_dashboard, stop, wait_for

CHROMIUM = os.environ.get("SONGHPO_CHROMIUM", "/usr/bin/chromium")
REPORT_FIGURES = ("pareto", "pareto-3d", "buckets", "history", "hypervolume", "importances", "parallel")


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI installs it: see .ci/run and the test extras)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    if importlib.util.find_spec("websocket") is None:
        _unavailable("websocket-client is not installed")
    return CHROMIUM


class Browser:
    """Headless Chromium with one DevTools websocket; pages are flattened sessions on it."""

    def __init__(self, binary: str, profile: Path) -> None:
        import websocket

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + 60
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            self.process.kill()
            raise AssertionError(f"{binary} did not start its DevTools endpoint")
        # Keep draining Chromium's log: a full stderr pipe would block the browser mid-test.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        self.socket = websocket.create_connection(url, timeout=60)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, session: str, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(session, expression)
            except AssertionError as exc:  # e.g. no document.body yet while the page loads
                last = f" (last error: {exc})"
                value = None
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}{last}")

    def settle(self, session: str) -> None:
        """Return once the page has rendered two more frames (an event, not a delay).

        Whatever the last action triggered (a scroll's relayout, a console error) has then run, and
        DevTools delivers its events before this call's reply, so :meth:`problems` sees them.
        """
        result = self.call("Runtime.evaluate", {
            "expression": "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))",
            "awaitPromise": True, "returnByValue": True}, session=session)
        assert result["result"].get("value") is True, result

    def screenshot(self, session: str, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": 1400, "height": min(int(size["height"]), 12_000), "scale": 1})
        data = self.call("Page.captureScreenshot", params, session=session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen on ``session``."""
        found = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = (str(a.get("value", a.get("description"))) for a in params.get("args", []))
                found.append("console.error: " + " ".join(args))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log error: {params['entry'].get('text')} ({params['entry'].get('url')})")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"failed load: {params.get('errorText')}")
        return found

    def requests(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("sessionId") == session and e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.socket.close()


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Browser:
    instance = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()


def _shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("SONGHPO_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_report_renders_in_chromium(browser: Browser, evaluated_study: SharedStudy, tmp_path: Path) -> None:
    study, storage = evaluated_study.study, evaluated_study.storage
    out = tmp_path / "report.html"
    # One command writes the HTML and, through kaleido and the same Chromium, every figure as PNG.
    with_png = importlib.util.find_spec("kaleido") is not None
    if not with_png and os.environ.get("CI"):
        pytest.fail("kaleido is not installed (it is a dependency)")
    png = ["--png", str(tmp_path / "png")] if with_png else []
    result = run_cli("report", "tiny", "--storage", storage, "--out", str(out), *png)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["snapshot"] == 1
    if with_png:
        _check_pngs(payload["png"], tmp_path / "png")
    session = browser.open(out.as_uri())
    ids = json.dumps([f"figure-{name}" for name in REPORT_FIGURES])
    browser.wait(session, f"document.readyState === 'complete' && {ids}.every(id => {{"
                          "const el = document.getElementById(id); "
                          "return el && el._fullLayout && el.querySelector('.main-svg'); })")
    # The figures hold the study's data once rendered: the Pareto chart's front is the feasible front,
    # the bucket chart has error bars (test snapshot), and the SVG charts drew their points.
    front = browser.evaluate(session, "document.getElementById('figure-pareto').data"
                                      f".find(t => t.name === {json.dumps(FRONT)}).customdata")
    assert sorted(front) == [t.number for t in feasible_pareto_front(study)]
    assert browser.evaluate(session, "document.getElementById('figure-buckets').querySelectorAll('g.errorbar').length") > 0
    assert browser.evaluate(session, "document.getElementById('figure-history').querySelectorAll('path.point').length") >= 8
    assert browser.evaluate(session, "document.querySelectorAll('table.side-effects td[data-verdict]').length") > 0
    assert browser.problems(session) == []
    outside = [u for u in browser.requests(session) if not u.startswith(("file:", "data:", "blob:"))]
    assert outside == [], "the report must not load anything from the network"
    shot = browser.screenshot(session, _shots(tmp_path) / "report.png", full_page=True)
    width, height = _png_size(shot)
    assert width == 1400 and height > 3000 and shot.stat().st_size > 100_000


def test_dashboard_renders_in_chromium(browser: Browser, evaluated_study: SharedStudy, tmp_path: Path) -> None:
    study, storage = evaluated_study.study, evaluated_study.storage
    port = free_port()
    process = start_dashboard(storage, port)
    try:
        studies = json.loads(wait_for(f"http://127.0.0.1:{port}/api/studies", process))
        study_id = studies["study_summaries"][0]["study_id"]
        session = browser.open(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}")
        ids = json.dumps([f"user-defined-plot:{g}" for g in (PARETO_GRAPH_ID, BUCKETS_GRAPH_ID, SIDE_EFFECTS_GRAPH_ID)])
        browser.wait(session, f"{ids}.every(id => {{ const el = document.getElementById(id); "
                              "return el && el.querySelector('.main-svg'); })")
        front = browser.evaluate(session, f"document.getElementById('user-defined-plot:{PARETO_GRAPH_ID}').data"
                                          f".find(t => t.name === {json.dumps(FRONT)}).customdata")
        assert sorted(front) == [t.number for t in feasible_pareto_front(study)]
        browser.evaluate(session, f"document.getElementById('user-defined-plot:{PARETO_GRAPH_ID}').scrollIntoView()")
        browser.settle(session)
        assert browser.problems(session) == []
        shot = browser.screenshot(session, _shots(tmp_path) / "dashboard.png")
        # The saved note, with the test snapshot of the real evaluation, on the study's note page.
        note = browser.open(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/note")
        browser.wait(note, "document.body && document.body.innerText.includes('songhpo summary: tiny')")
        assert browser.evaluate(note, "document.body.innerText.includes('Test snapshot #1')")
        assert browser.evaluate(note, "document.querySelectorAll('table').length") >= 2  # Markdown tables rendered
        assert browser.problems(note) == []
        browser.screenshot(note, _shots(tmp_path) / "dashboard-note.png")
    finally:
        out, err = stop(process)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert _png_size(shot) == (1400, 1000) and shot.stat().st_size > 30_000


def _check_pngs(written: list[str] | None, directory: Path) -> None:
    names = [*REPORT_FIGURES, "side-effects"]
    assert written is not None and [Path(p).name for p in written] == [f"{n}.png" for n in names]
    for path in map(Path, written):
        width, height = _png_size(path)
        assert width == 1200 and height >= 400 and path.stat().st_size > 15_000
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{n}.png" for n in names)
