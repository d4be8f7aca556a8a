"""The fleet demo: ``make demo`` (or ``python -m tools.demo``).

Starts a local broker and a second one standing in for the cloud, the gateway with the committed
models, and several virtual boards (the real firmware on the MicroPython unix port with the
simulation board). One pump develops a bearing fault part-way through, another loses its network
for a while, and the cloud is cut and comes back. A live dashboard shows it all, and the gateway's
status page (its URL is printed) shows the live plots in a browser; at the end (``--duration`` or
Ctrl-C) everything is stopped, a summary is printed, and the status page as it was at the end is
saved as one offline file (demo-output/status.html, with a screenshot when chromium is installed).

    python -m tools.demo                          # 120 s, live dashboard
    python -m tools.demo --duration 40 --no-tui   # what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tools.demo.dashboard import RateMeter, progress_line, render
from tools.demo.fleet import DemoError, Fleet
from tools.demo.monitor import Monitor
from tools.demo.report import build, status_page, text
from tools.demo.scenario import CLOUD_CUT, DEVICES
from tools.demo.updates import PUBLISH_AT
from tools.demo.updates import report as updates_report
from tools.mosquitto import BrokerError

ROOT = Path(__file__).resolve().parents[2]


class Interrupted(Exception):
    pass


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Interrupted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of device time (default %(default)s)")
    parser.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the live dashboard")
    parser.add_argument("--broker", default="auto", choices=["auto", "mosquitto", "amqtt"])
    parser.add_argument("--workdir", type=Path, default=None, help="where logs, flash dirs and queues go")
    parser.add_argument("--output", type=Path, default=ROOT / "demo-output", help="report and chart folder")
    args = parser.parse_args(argv)
    if args.duration < 20:
        parser.error("--duration must be at least 20 s (the story needs time for a fault and two outages)")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    args.output.mkdir(parents=True, exist_ok=True)

    try:
        fleet = Fleet(args.workdir, args.broker, args.duration)
    except BrokerError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"demo: working directory {fleet.workdir}")
    print(f"demo: brokers: {fleet.local.kind} (local) and {fleet.cloud.kind} (cloud stand-in)")
    for spec in DEVICES:
        print(f"demo:   {spec.device_id}: {spec.describe(args.duration)}")
    cut_from, cut_to = (f * args.duration for f in CLOUD_CUT)
    print(f"demo:   cloud link cut from {cut_from:.0f} s to {cut_to:.0f} s")

    mon: Monitor | None = None
    status: dict[str, object] = {}
    snapshot: dict[str, Any] | None = None
    web_url: str | None = None
    interrupted = False
    try:
        fleet.start_brokers()
        fleet.start_gateway()
        print("demo: release side: building the firmware and signing the update bundles")
        fleet.updates.prepare()
        fleet.wait_gateway_ready()
        web_url = fleet.web_url()
        if web_url:
            print(f"demo: open {web_url} while the demo runs (the gateway's status page, live plots)")
        mon = Monitor(
            local=(fleet.local.host, fleet.local.port),
            cloud=(fleet.cloud.host, fleet.cloud.port),
            prefix="el",
            site=fleet.site,
            status=fleet.status_path,
            local_user=fleet.monitor_user,
            cloud_tls=fleet.monitor_cloud_tls,
        )
        time.sleep(0.5)
        fleet.start_devices()
        t0 = time.monotonic()
        status = run_story(fleet, mon, args, t0)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        print("\ndemo: interrupted: stopping everything", flush=True)
    except (DemoError, BrokerError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        fleet.stop()
        return 1
    finally:
        if mon is not None:
            status = mon.poll_status() or status
        if web_url and mon is not None:
            snapshot = take_snapshot(web_url)
        fleet.stop()
        if mon is not None:
            mon.stop()
    if mon is None:
        return 1
    device_stats = {d.spec.device_id: d.stats() for d in fleet.devices}
    report = build(mon, dict(status), device_stats, args.duration)
    report["interrupted"] = interrupted
    report["story"] = {
        "devices": {spec.device_id: spec.describe(args.duration) for spec in DEVICES},
        "fault_at_s": {s.device_id: s.fault_at * args.duration for s in DEVICES if s.fault_at is not None},
        "link_down_s": {s.device_id: [f * args.duration for f in s.link_down] for s in DEVICES if s.link_down},
        "cloud_cut_s": [cut_from, cut_to],
        "monitor_lead_s": 0.5,  # the monitor starts this long before the devices
    }
    report["actuator_history"] = {d.spec.device_id: d.stats().get("outputs") for d in fleet.devices if d.spec.outputs}
    report["security"] = fleet.security_report(dict(status))
    report["updates"] = updates_report(dict(status))
    report["updates"]["board_resets"] = {d.spec.device_id: d.resets for d in fleet.devices if d.resets}
    print()
    print(text(report))
    (args.output / "report.json").write_text(json.dumps(report, indent=1))
    print()
    if snapshot is not None:
        page = args.output / "status.html"
        status_page(report, snapshot, page)
        print(f"demo: the status page at the end, offline: {page}")
        shot = screenshot(page, args.output / "status.png")
        if shot:
            print(f"demo: its screenshot: {shot}")
    print(f"demo: all figures: {args.output / 'report.json'}")
    print(f"demo: logs: {fleet.workdir / 'logs'}")
    return 0 if (report["nothing_lost"] or interrupted) else 2


def take_snapshot(url: str) -> dict[str, Any] | None:
    """The status page's data while the gateway still runs (None, and why, if it cannot be read)."""
    from gateway.web.snapshot import fetch_snapshot

    try:
        return fetch_snapshot(url)
    except (OSError, ValueError) as exc:
        print(f"demo: the status page could not be read at {url} ({exc}); no status.html", file=sys.stderr)
        return None


def screenshot(page: Path, png: Path) -> Path | None:
    """A PNG of the offline page when chromium and chromedriver are installed (tools/setup.sh --test)."""
    from tools.demo.browser import chromium_paths, screenshot_page

    if chromium_paths() is None:
        return None
    try:
        screenshot_page(page.as_uri(), png, ready_js="window.edgeline && window.edgeline.plots.length > 0")
    except Exception as exc:  # a screenshot is a bonus: say why it is missing, keep the report
        print(f"demo: no screenshot ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    return png


def run_story(fleet: Fleet, mon: Monitor, args: argparse.Namespace, t0: float) -> dict[str, object]:
    """Drive the timeline; return the gateway's last status."""
    cut_from, cut_to = (f * args.duration for f in CLOUD_CUT)
    cloud_up = True
    published = False
    rates = RateMeter()
    live = None
    if not args.no_tui:
        from rich.live import Live

        live = Live(refresh_per_second=4, screen=False)
        live.start()
    last_line = 0.0
    status: dict[str, object] = {}
    phase = "devices sampling"

    def tick() -> None:
        nonlocal cloud_up, last_line, status, phase, published
        t = time.monotonic() - t0
        if not published and t >= PUBLISH_AT * args.duration:
            published = True  # a model, a firmware and a forged config to the gateway via the cloud
            fleet.updates.publish(fleet.release_client())
            phase = "updates published"
        if cloud_up and cut_from <= t < cut_to:
            fleet.uplink.cut()
            cloud_up = False
            phase = "cloud link cut"
        elif not cloud_up and t >= cut_to:
            fleet.uplink.restore()
            cloud_up = True
            phase = "cloud back: catching up"
        if t > args.duration:
            phase = "devices draining their queues"
        status = mon.poll_status()
        r = rates.update(status)
        if live is not None:
            live.update(render(mon, status, cloud_up, r, phase))
        elif time.monotonic() - last_line >= 5.0:
            last_line = time.monotonic()
            print(progress_line(mon, status, cloud_up, phase), flush=True)

    try:
        # The devices stop by themselves after --duration (plus a short drain of their queues).
        fleet.wait_devices(args.duration + 45.0, tick)
        if not cloud_up:
            fleet.uplink.restore()
            cloud_up = True
        phase = "gateway draining to the cloud"
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            tick()
            fwd = status.get("forward")
            lanes = fwd.get("lanes", {}) if isinstance(fwd, dict) else {}
            pending = sum(int(v.get("depth", 0)) + int(v.get("buffered", 0)) for v in lanes.values())
            # the gateway has decoded every reading the boards sent (its status lags by up to
            # status_interval_s), and forwarded everything
            frames = status.get("frames")
            decoded = int(frames.get("readings", 0)) if isinstance(frames, dict) else 0
            if lanes and pending == 0 and decoded >= sum(d.readings for d in mon.devices.values()):
                break
            time.sleep(0.25)
        time.sleep(1.0)  # the last PUBACKed records reach the monitor
        tick()
    finally:
        if live is not None:
            live.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
