"""The aggregator's HTML status page in a real browser (Debian's chromium, headless, driven by
Playwright): the live devices and their states, frames answered, the live set; the page
reloads itself and shows what changed. /status and /metrics from the same server."""

from __future__ import annotations

import json
import shutil
import urllib.request

import numpy as np
import pytest
from aggregator_support import load_fleet

from slimedge.runtime.aggregator import Aggregator
from slimedge.runtime.status_http import REFRESH_S, StatusBoard, StatusServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
T0 = 1_800_000_000 * 1_000_000_000


@pytest.fixture(scope="module")
def fleet(tiny_deployment):
    return load_fleet(tiny_deployment)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_status_page_shows_the_live_devices(fleet, browser):
    agg = Aggregator(fleet.dep, fleet.head, now_ns=T0, labels=fleet.ev.labels)
    for v in range(12):
        if v != 5:
            agg.handle(fleet.topic(v, "heartbeat"), fleet.heartbeat(f"cam{v:02d}", 0), T0)
    agg.handle(fleet.topic(5, "status"), b"offline", T0)
    for frame in range(3):
        for v in range(12):
            if v != 5:
                agg.handle(fleet.topic(v), fleet.payload(frame, v, T0), T0 + 1000)
    board = StatusBoard()
    board.publish(agg.status(T0 + 10**9))
    server = StatusServer(board)
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        assert page.title() == "SlimEdge aggregator"
        rows = page.locator("tr.device")
        assert rows.count() == 12
        states = {rows.nth(i).get_attribute("data-device"):
                  rows.nth(i).locator("td.state").inner_text() for i in range(12)}
        assert states == {f"cam{v:02d}": ("dead" if v == 5 else "alive") for v in range(12)}
        assert page.locator("tr.dead td.state").first.inner_text() == "dead"
        assert page.locator("#answered").inner_text() == "3"
        assert page.locator("#live-set").inner_text() == str([v for v in range(12) if v != 5])
        want = fleet.dep.pooling.for_dead_mask(1 << 5).predicted_accuracy
        assert page.locator("#predicted").inner_text() == f"{want:.1%}"
        acc = np.mean([fleet.expected(f, np.arange(12) != 5)[0] == fleet.ev.labels[f]
                       for f in range(3)])
        assert page.locator("#accuracy").inner_text().startswith(f"{acc:.1%}")

        # the page reloads itself: cam05 comes back, the browser shows it without a click
        agg.handle(fleet.topic(5, "heartbeat"), fleet.heartbeat("cam05", 1), T0 + 2 * 10**9)
        board.publish(agg.status(T0 + 2 * 10**9))
        page.wait_for_function(
            "document.querySelector(\"tr[data-device='cam05'] td.state\").innerText == 'alive'",
            timeout=(REFRESH_S + 5) * 1000)

        status = json.loads(urllib.request.urlopen(server.url + "/status").read())
        assert status["frames_answered"] == 3 and len(status["devices"]) == 12
        metrics = urllib.request.urlopen(server.url + "/metrics").read().decode()
        assert 'slimedge_aggregator_device_state{device="cam05",state="alive"} 1.0' in metrics
        assert "slimedge_aggregator_frames_answered_total 3.0" in metrics
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "/nothing")
    finally:
        server.stop()
