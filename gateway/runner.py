"""Wire the stages to the real world: Mosquitto, models, forwarder, status file.

Threads: paho's network loop (ingest, publishing), the processing loop (this
module: batches through the pipeline), and the forwarder's own threads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.atrest import key_name, open_keyring
from gateway.calibration import CalibrationControl
from gateway.config import Config, ConfigError
from gateway.control_socket import ControlSocket, ControlSocketError, socket_path
from gateway.devconfig import DeviceConfig
from gateway.ingest import FrameQueue, MQTTIngest, MQTTSettings
from gateway.pipeline import Gateway
from gateway.rawlog import RawLog
from gateway.scoring import ModelLike
from gateway.sdnotify import Notifier
from gateway.status import detail, report, with_detail
from gateway.updates.events import UpdateEvents
from gateway.updates.gwconfig import ConfigUpdates
from gateway.updates.models import ModelUpdates
from gateway.updates.rollout import FirmwareRollouts
from gateway.updates.service import UpdateService
from gateway.writer import CommitFailed
from shared_protocol import CMD_OTA
from shared_protocol.gw_topics import gateway_topic

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
DETAIL_FILE = "devices.json"  # per-device sections of a fleet over gateway.status_detail_devices
DETAIL_INTERVAL_S = 60.0
DRAIN_S = 20.0  # at a stop, the most time spent on frames already received
SWITCH_INTERVAL_S = 0.0002
WEB_STATUS_S = 1.0  # the status page's snapshot of the status is rebuilt this often


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":"), default=str))
    os.replace(tmp, path)


def load_models(config: Config) -> dict[str, ModelLike]:
    """Load every pipeline's model (gateway.inference); errors name the pipeline and file."""
    if not config.pipelines:
        return {}
    from gateway import inference
    from gateway.updates.models import active_manifests

    promoted = active_manifests(config)  # a model promoted by a signed update replaces the config's
    models: dict[str, ModelLike] = {}
    for n, p in enumerate(config.pipelines):
        path = promoted.get(p.name, p.model)
        if path != p.model:
            try:
                models[p.name] = inference.load_model(path)
                continue
            except Exception as exc:
                log.error(
                    "pipeline %s: the promoted model %s cannot be loaded (%s): running %s", p.name, path, exc, p.model
                )
        if not p.model.exists():
            raise ConfigError(f"pipelines[{n}].model: {p.model} does not exist (a model manifest .json)")
        try:
            models[p.name] = inference.load_model(p.model)
        except Exception as exc:
            raise ConfigError(f"pipelines[{n}].model: cannot load {p.model}: {exc}") from exc
    return models


def mqtt_settings(config: Config) -> MQTTSettings:
    """Connection settings; raises ConfigError (as `check-config` does) for a password file
    that other users may read, so the gateway never connects with a leaked secret."""
    m = config.mqtt
    return MQTTSettings(
        host=m.host,
        port=m.port,
        client_id=m.client_id or f"edgeline-gateway-{config.gateway.id}",
        username=m.username,
        password=m.read_password(),
        keepalive_s=m.keepalive_s,
    )


class Runner:
    """The running gateway process (``edgeline-gateway run``)."""

    def __init__(
        self,
        config: Config,
        *,
        models: dict[str, ModelLike] | None = None,
        rawlog: RawLog | None = None,
        config_path: Path | None = None,
    ) -> None:
        """models and rawlog default to what the configuration names; tests inject their own.
        config_path: the file `run` loaded, which a signed config update replaces ([updates])."""
        self.config = config
        self.restart_requested = False  # a config update: stop, then `run` re-executes itself
        self.stop_event = threading.Event()
        # Before anything is opened: a web password file others can read stops the gateway here.
        web_password = config.web.read_password() if config.web.enabled else None
        ing = config.ingest
        self.queue = FrameQueue(ing.queue_size, block_timeout_s=ing.block_timeout_ms / 1000.0)
        g = config.gateway
        status_topic = gateway_topic(g.prefix, g.site, "status")
        self.status_topic = status_topic
        self.mqtt = MQTTIngest(
            mqtt_settings(config),
            self.queue,
            prefix=g.prefix,
            site=g.site,
            will=(status_topic, b'{"online":false}'),
            data_qos=config.ingest.data_qos,
        )
        # [encryption]: the key ring (made on the first run), one cipher per writing thread
        self.keys = open_keyring(config.encryption, writer=True, create=True) if config.encryption else None
        self.forwarder: Any = None
        if config.forward is not None:
            from gateway.forward import Forwarder

            self.forwarder = Forwarder(
                config.forward,  # validated at load (gateway.config)
                g.id,
                Path(g.data_dir),
                on_command=self._on_cloud_command,
                cipher=self.keys.cipher() if self.keys is not None else None,
            )
        submit = self.forwarder.submit if self.forwarder is not None else None
        self.gateway = Gateway(
            config,
            self.mqtt,
            submit=submit,
            models=load_models(config) if models is None else models,
            rawlog=rawlog,
            committed=self.forwarder.committed if self.forwarder is not None else None,
            keys=self.keys,
        )
        ha = self.gateway.ha
        if ha is not None:  # Home Assistant's switch commands -> CMD_SET_OUTPUT (gateway/hadiscovery.py)
            self.mqtt.add_route(ha.command_filter, 1, ha.on_message)
        self.failed: BaseException | None = None
        self.gateway.start_writer(
            group_s=ing.commit_interval_ms / 1000.0,
            ack_interval_s=ing.ack_interval_ms / 1000.0,
            on_error=self._commit_failed,
        )
        self.status_path = Path(g.data_dir) / STATUS_FILE
        self._next_detail = 0.0
        self.notifier = Notifier()  # systemd (Type=notify, WatchdogSec); a no-op elsewhere
        self.web: Any = None  # the status page and /metrics (gateway/web/), started by run()
        if config.web.enabled:
            from gateway.web.server import WebServer
            from gateway.web.state import WebState

            state = WebState(self.gateway.live, detail_devices=g.status_detail_devices)
            self.web = WebServer(config.web, state, password=web_password)
        # `edgeline-gateway device-config` talks to this process through its control socket
        self.devconfig = DeviceConfig(self.gateway, Path(g.data_dir))
        self.gateway.control.event_listeners.append(self.devconfig.on_ack)
        self.devconfig.restore()
        # `edgeline-gateway calibration status|reset` ([[pipelines]] calibrate)
        self.calibration = CalibrationControl(self.gateway.calibrators)
        self._updates(config, config_path, submit)
        self.control_socket = ControlSocket(socket_path(Path(g.data_dir)), self._control)

    def _updates(self, config: Config, config_path: Path | None, submit: Any) -> None:
        """[updates]: the record of transitions, the model and gateway config handlers."""
        self.update_events: UpdateEvents | None = None
        self.model_updates: ModelUpdates | None = None
        self.config_updates: ConfigUpdates | None = None
        self.update_service: UpdateService | None = None
        self.firmware: FirmwareRollouts | None = None
        u = config.updates
        if u is None:
            return
        g = config.gateway
        self.update_events = events = UpdateEvents(
            state_topic=gateway_topic(g.prefix, g.site, "updates"),
            publish=lambda topic, payload, retain: self.mqtt.publish(topic, payload, retain=retain),
            submit=submit,
        )
        self.model_updates = ModelUpdates(self.gateway, state_dir=u.state_dir, rules=u.shadow, events=events)
        # firmware rollouts: CMD_OTA through the outbox, the boards' answers among the EVENTs
        self.firmware = FirmwareRollouts(
            u, events, lambda: self.gateway.registry.devices, lambda d, arg: self.gateway.outbox.cmd(d, CMD_OTA, arg)
        )
        self.gateway.control.event_listeners.append(self.firmware.on_event)
        if config_path is not None:
            self.config_updates = ConfigUpdates(
                config_path=config_path,
                state_dir=u.state_dir,
                settings=u.config,
                events=events,
                restart=self.request_restart,
            )
        # signed bundles from the cloud link ([forward]) or `update install`, to the handler of their kind
        self.update_service = service = UpdateService(
            u,
            site=g.site,
            gateway_id=g.id,
            events=events,
            link=self.forwarder,
            topic_prefix=self.forwarder.config.topic_prefix if self.forwarder is not None else "edgeline",
        )
        service.register("model", self.model_updates)
        if self.config_updates is not None:
            service.register("config", self.config_updates)
        service.register("firmware", self.firmware)

    def request_restart(self) -> None:
        """Stop cleanly; `edgeline-gateway run` then re-executes itself (a new configuration)."""
        self.restart_requested = True
        self.stop_event.set()

    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        """Control socket thread: each request to the part that answers it."""
        op = str(body.get("op", ""))
        if op.startswith("calibration."):
            return self.calibration.handle(body)
        if op.startswith("model."):
            if self.model_updates is None:
                return {"ok": False, "reason": "disabled", "message": "model updates need [updates] enabled = true"}
            return self.model_updates.handle(body)
        if op.startswith("ota."):
            if self.firmware is None:
                return {"ok": False, "reason": "disabled", "message": "firmware rollouts need [updates] enabled = true"}
            return self.firmware.handle(body)
        if op.startswith("update."):
            if self.update_service is None:
                return {"ok": False, "reason": "disabled", "message": "signed bundles need [updates] enabled = true"}
            return self.update_service.handle(body)
        return self.devconfig.handle(body)

    def _tick_updates(self) -> None:
        """[updates]: each handler's turn of the processing loop (cheap when idle)."""
        if self.model_updates is not None:
            self.model_updates.tick()
        if self.firmware is not None:
            self.firmware.tick()
        if self.config_updates is not None and self.config_updates.trial is not None:
            self.config_updates.tick(self._healthy())

    def _healthy(self) -> bool:
        """A configuration on trial is healthy: local broker subscribed, cloud link up with [forward]."""
        if not self.mqtt.subscribed.is_set():
            return False
        return self.forwarder is None or self.forwarder.status()["connection"]["state"] == "connected"

    def _commit_failed(self, exc: BaseException) -> None:
        """Writer thread: nothing more can be stored, so nothing more is taken in."""
        self.failed = exc
        self.queue.stop_intake()
        self.stop_event.set()

    def _on_cloud_command(self, cmd: dict[str, Any]) -> None:
        """Forwarder network thread: check and queue; served by the processing thread."""
        raw = self.gateway.raw_requests
        if raw is None:
            raise ValueError("raw requests need a forwarder")
        raw.on_command(cmd, time.time())

    def status(self, *, detail_sections: bool = True) -> dict[str, Any]:
        st = report(self.gateway, detail_sections=detail_sections)
        q = self.queue.stats()
        st["ingest"] = {
            "connected": self.mqtt.connected.is_set(),
            "subscribed": self.mqtt.subscribed.is_set(),
            "connects": self.mqtt.connects,
            "disconnects": self.mqtt.disconnects,
            "last_connect_error": self.mqtt.last_connect_error,
            "queue": vars(q),
        }
        w = self.gateway.writer
        if w is not None:
            st["writer"] = {
                "commits": w.stats.commits,
                "grouped": w.stats.grouped,
                "waits": w.stats.waits,
                "wait_s": round(w.stats.wait_s, 3),
                "error": None if w.error is None else str(w.error),
            }
        st["forward"] = self.forwarder.status() if self.forwarder is not None else None
        st["pid"] = os.getpid()
        st["written_at"] = time.time()  # the heartbeat `edgeline-gateway status` checks
        st["status_interval_s"] = self.config.gateway.status_interval_s
        st["web"] = self.web.status() if self.web is not None else None
        st["device_config"] = self.devconfig.status()
        if self.update_events is not None:
            st["model_updates"] = self.model_updates.status() if self.model_updates is not None else None
            st["config_update"] = self.config_updates.status() if self.config_updates is not None else None
            st["updates"] = self.update_service.status() if self.update_service is not None else None
            st["ota"] = self.firmware.status() if self.firmware is not None else None
        k = self.keys  # unreadable chunks and records: rawlog.unreadable, forward.encryption
        st["encryption"] = None if k is None else {"key_dir": str(k.directory), "active_key": key_name(k.active_id)}
        return st

    def write_status(self, *, final: bool = False) -> None:
        _write_json(self.status_path, {**self.status(), "running": not final})
        gw = self.gateway
        now = time.monotonic()
        if not with_detail(gw) and (final or now >= self._next_detail):
            self._next_detail = now + DETAIL_INTERVAL_S
            _write_json(self.status_path.with_name(DETAIL_FILE), detail(gw))

    def run(self) -> None:
        cfg = self.config
        # paho's network thread and the pipeline share the GIL. paho takes the GIL back
        # after every socket call, several times per message, and each time a busy pipeline
        # thread holds it for up to the switch interval: CPython's default 5 ms put ~25 ms
        # between the broker and on_message under load; 0.2 ms brings that to ~1 ms for a
        # small cost in context switches (measured: bench/bench_gateway.py).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.forwarder is not None:
            self.forwarder.start()
        self.mqtt.start()
        self.mqtt.publish(self.status_topic, b'{"online":true}', retain=True)
        if self.config_updates is not None:
            self.config_updates.recover()  # record the rollback of the last start, or the trial now on
        if self.model_updates is not None:
            self.model_updates.restore()  # a candidate in shadow at the last stop starts again
        if self.update_service is not None:
            self.update_service.start()  # resumes unfinished transfers, then takes new bundles
        self._start_web()
        try:
            self.control_socket.start()
        except ControlSocketError as exc:
            log.error("%s; the gateway runs on without device-config", exc)
        log.info(
            "gateway %s (site %s) running; %d pipeline(s), data in %s",
            cfg.gateway.id,
            cfg.gateway.site,
            len(self.gateway.stages),
            cfg.gateway.data_dir,
        )
        batch_max = cfg.ingest.batch_max
        next_tick = next_status = next_alive = next_web = 0.0
        ready = False
        try:
            while not self.stop_event.is_set():
                batch = self.queue.get_batch(batch_max, timeout=0.1)
                if batch:
                    try:
                        self.gateway.process(batch)
                    except CommitFailed:
                        break  # self.failed is set: the writer stopped; stop without draining
                self.devconfig.serve(time.time())
                self.calibration.serve()
                if self.update_service is not None:
                    self.update_service.tick(time.time())  # verified bundles to their handlers
                self._tick_updates()
                now = time.monotonic()
                if now >= next_tick:
                    self.gateway.tick()
                    next_tick = now + 0.25
                if now >= next_status:
                    self.write_status()
                    next_status = now + cfg.gateway.status_interval_s
                if self.web is not None and now >= next_web:
                    self.web.state.publish(self.status(detail_sections=False))
                    next_web = now + WEB_STATUS_S
                if now >= next_alive:  # only this loop pings systemd's watchdog: a hung loop is restarted
                    ready = self._notify_alive(ready)
                    next_alive = now + self.notifier.watchdog_interval_s
            self.notifier.stopping("stopping: processing the frames received")
            if self.failed is None:
                self._drain()
        finally:
            self.shutdown()
        if self.failed is not None:
            raise CommitFailed(f"stopped: the raw log could not be written ({self.failed})") from self.failed

    def _start_web(self) -> None:
        """The status page; a port that cannot be bound is logged and the data path runs on."""
        if self.web is None:
            return
        from gateway.web.server import WebError

        try:
            self.web.start()
        except WebError as exc:
            log.error("%s; the gateway runs on without its status page", exc)

    def _notify_alive(self, ready: bool) -> bool:
        """WATCHDOG=1, and READY=1 once subscribed; returns whether READY was sent."""
        n = self.notifier
        if not n.enabled:
            return True
        n.watchdog()
        fleet = self.gateway.registry.devices
        if not self.mqtt.subscribed.is_set():
            n.status(f"waiting for the broker {self.mqtt.settings.host}:{self.mqtt.settings.port}")
            return ready
        online = sum(1 for d in fleet.values() if d.online)
        state = f"running: {online}/{len(fleet)} devices online, {self.gateway.counters.frames} frames"
        if not ready:
            n.ready(state)
        else:
            n.status(state)
        return True

    def _drain(self) -> None:
        """Stop intake, then process what was received before (the queue holds a bounded number
        of frames, so this ends within DRAIN_S however busy the devices are)."""
        self.queue.stop_intake()
        left = self.queue.stats().depth
        log.info("stopping: intake closed, processing the %d frame(s) received", left)
        deadline = time.monotonic() + DRAIN_S
        batch_max = self.config.ingest.batch_max
        while batch := self.queue.get_batch(batch_max, timeout=0):
            self.gateway.process(batch)
            if time.monotonic() > deadline:
                log.warning(
                    "stopping: %d frame(s) left unprocessed after %.0f s (never ACKed: devices send them again)",
                    self.queue.stats().depth,
                    DRAIN_S,
                )
                return

    def shutdown(self) -> None:
        try:
            if self.failed is None:
                self.gateway.tick()
                self.gateway.flush_summaries(time.time())  # the interval in progress, with its scores
            self.write_status(final=True)
            self.mqtt.publish(self.status_topic, b'{"online":false}', retain=True)
        finally:
            self.control_socket.stop()
            # The writer commits and ACKs the last batches while paho still runs; the databases
            # are closed only once its thread has finished.
            closed = self.gateway.close(timeout=DRAIN_S)
            if not closed:
                log.error("the raw log writer did not finish in %.0f s; its databases are left open", DRAIN_S)
            self.mqtt.stop()
            if self.update_service is not None:
                self.update_service.stop()
            if self.forwarder is not None:
                self.forwarder.stop()
            if self.web is not None:
                self.web.stop()
            if self.keys is not None:
                self.keys.close()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
