"""The aggregator's HTTP face: `/metrics` (Prometheus text), `/status` (JSON) and `/` (an
HTML page that reloads itself), all rendered from the latest status snapshot.

The service thread publishes a snapshot (`Aggregator.status`) with `StatusBoard.publish`; the
HTTP threads only read it, so a slow scraper never holds up aggregation (Frigate's pattern:
metrics pulled from the latest snapshot).
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from slimedge.runtime.detector import STATES

__all__ = ["StatusBoard", "StatusServer", "render_page"]

REFRESH_S = 2


class StatusBoard:
    """The latest snapshot, shared between the service thread and the HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap: dict[str, Any] = {}

    def publish(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._snap = snapshot

    def get(self) -> dict[str, Any]:
        with self._lock:
            return self._snap


class _Collector:
    """Prometheus metrics of a snapshot (names prefixed slimedge_aggregator_)."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        s = self.board.get()
        if not s:
            return
        p = "slimedge_aggregator_"
        yield CounterMetricFamily(p + "frames_answered", "Frames answered",
                                  value=s["frames_answered"])
        yield CounterMetricFamily(p + "frames_incomplete",
                                  "Frames answered without every live view",
                                  value=s["frames_incomplete"])
        yield CounterMetricFamily(p + "deadline_missed", "Frames answered after their deadline",
                                  value=s["deadline_missed"])
        yield GaugeMetricFamily(p + "frames_pending", "Frames waiting for views",
                                value=s["frames_pending"])
        yield GaugeMetricFamily(p + "frames_per_second", "Answer rate over the last 10 s",
                                value=s["frames_per_s"])
        lat = GaugeMetricFamily(p + "latency_ms", "Capture-to-answer latency (recent frames)",
                                labels=["quantile"])
        for q in ("p50", "p99"):
            if s["latency_ms"][q] is not None:
                lat.add_metric([q[1:]], s["latency_ms"][q])
        yield lat
        comp = GaugeMetricFamily(p + "compute_ms", "Time the aggregator spent answering a frame "
                                 "(decode, align, pool, classify; recent frames)",
                                 labels=["quantile"])
        for q in ("p50", "p99"):
            if s["compute_ms"][q] is not None:
                comp.add_metric([q[1:]], s["compute_ms"][q])
        yield comp
        if s["accuracy"] is not None:
            yield GaugeMetricFamily(p + "accuracy", "Accuracy so far on labelled frames",
                                    value=s["accuracy"])
        if s["live_set_predicted_accuracy"] is not None:
            yield GaugeMetricFamily(p + "live_set_predicted_accuracy",
                                    "The plan's accuracy for the current live set",
                                    value=s["live_set_predicted_accuracy"])
        yield GaugeMetricFamily(p + "live_views", "Views of devices not dead",
                                value=len(s["live_set"]))
        rej = CounterMetricFamily(p + "rejected", "Messages refused, by reason",
                                  labels=["reason"])
        for reason, n in s["rejected"].items():
            rej.add_metric([reason], n)
        yield rej
        sw = s.get("switch")
        if sw:
            yield GaugeMetricFamily(p + "switch_sequence", "Sequence of the fleet-wide switch "
                                    "order the latest frame was served by (0: none)",
                                    value=sw["sequence"])
            yield CounterMetricFamily(p + "switches_applied", "Fleet-wide switches applied",
                                      value=sw["applied"])
        state = GaugeMetricFamily(p + "device_state", "1 for the state each device is in",
                                  labels=["device", "state"])
        for d in s["devices"]:
            for st in STATES:
                state.add_metric([d["device"], st], 1.0 if d["state"] == st else 0.0)
        yield state


def render_page(s: dict[str, Any]) -> str:
    """The HTML status page of a snapshot (reloads itself every REFRESH_S seconds)."""
    e = html.escape
    if not s:
        body = "<p>starting…</p>"
    else:
        def fmt(x: Any, unit: str = "") -> str:
            return "–" if x is None else (f"{x:.3g}{unit}" if isinstance(x, float)
                                          else f"{x}{unit}")

        acc = s["accuracy"]
        pred = s["live_set_predicted_accuracy"]
        rows = "".join(
            f"<tr class='device {e(d['state'])}' data-device='{e(d['device'])}'>"
            f"<td>{e(d['device'])}</td><td>{e(str(d['views']))}</td>"
            f"<td class='state'>{e(d['state'])}</td><td>{e(d['reason'])}</td>"
            f"<td>{fmt(d['last_heartbeat_age_s'], ' s')}</td><td>{d['accepted']}</td>"
            f"<td>{sum(d['rejected'].values())}</td></tr>" for d in s["devices"])
        rejected = ", ".join(f"{e(k)}: {v}" for k, v in s["rejected"].items()) or "none"
        sw = s.get("switch") or {}
        pending = sw.get("pending")
        switch = ("none pending" if not pending else
                  f"to <code>{e(pending['deployment_id'])}</code> at frame "
                  f"{pending['from_frame']} (sequence {pending['sequence']})")
        switch += "".join(f"; frames from {h['from_frame']}: <code>{e(h['deployment_id'])}"
                          "</code>" for h in sw.get("history", [])[1:]
                          if h["first_frame"] is not None)
        body = (
            f"<h1>SlimEdge aggregator — {e(s['fleet'])}</h1>"
            f"<p>deployment <code>{e(s['deployment_id'])}</code>, up {s['uptime_s']:.0f} s, "
            f"deadline window {s['window_ms']:.0f} ms</p>"
            "<table id='summary'>"
            f"<tr><th>frames answered</th><td id='answered'>{s['frames_answered']}</td></tr>"
            f"<tr><th>frames/s</th><td id='fps'>{s['frames_per_s']:.2f}</td></tr>"
            f"<tr><th>latency p50 / p99</th><td id='latency'>"
            f"{fmt(s['latency_ms']['p50'], ' ms')} / {fmt(s['latency_ms']['p99'], ' ms')}"
            "</td></tr>"
            f"<tr><th>added by the aggregator p50 / p99</th><td id='compute'>"
            f"{fmt(s['compute_ms']['p50'], ' ms')} / {fmt(s['compute_ms']['p99'], ' ms')}"
            "</td></tr>"
            f"<tr><th>accuracy so far</th><td id='accuracy'>"
            f"{'–' if acc is None else f'{acc:.1%}'} ({s['labelled']} labelled)</td></tr>"
            f"<tr><th>live set</th><td id='live-set'>{e(str(s['live_set']))}</td></tr>"
            f"<tr><th>its predicted accuracy</th><td id='predicted'>"
            f"{'–' if pred is None else f'{pred:.1%}'}"
            f"{'' if s['live_set_in_table'] else ' (outside the table: replan)'}</td></tr>"
            f"<tr><th>incomplete / late</th><td>{s['frames_incomplete']} / "
            f"{s['deadline_missed']}</td></tr>"
            f"<tr><th>fleet-wide switch</th><td id='switch'>{switch}</td></tr>"
            f"<tr><th>rejected</th><td id='rejected'>{rejected}</td></tr></table>"
            "<h2>Devices</h2><table id='devices'><tr><th>device</th><th>views</th>"
            "<th>state</th><th>why</th><th>last heartbeat</th><th>frames in</th>"
            f"<th>refused</th></tr>{rows}</table>")
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
             "margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
             "tr.alive .state{color:#070}tr.suspected .state{color:#b60}"
             "tr.dead .state{color:#c00;font-weight:bold}tr.unknown .state{color:#777}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='refresh' content='{REFRESH_S}'>"
            f"<title>SlimEdge aggregator</title><style>{style}</style></head>"
            f"<body>{body}</body></html>")


class StatusServer:
    """The HTTP server on its own daemon threads; `stop()` closes the socket."""

    def __init__(self, board: StatusBoard, host: str = "127.0.0.1", port: int = 0) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(board))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                               generate_latest(registry))
                elif path == "/status":
                    self._send(200, "application/json",
                               json.dumps(board.get(), allow_nan=False).encode())
                elif path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8",
                               render_page(board.get()).encode())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # no access log on stderr

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="status-http")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
