"""systemd's notification protocol (sd_notify): one datagram per message to $NOTIFY_SOCKET.

The unit (deploy/systemd/edgeline-gateway.service) is ``Type=notify`` with ``WatchdogSec=``:
systemd counts the gateway started once it sends ``READY=1`` and restarts it when no
``WATCHDOG=1`` arrives within the watchdog interval. Without $NOTIFY_SOCKET (not started by
systemd, or a unit without notify) every call does nothing. A name starting with ``@`` is a
Linux abstract socket (the ``@`` stands for a leading NUL byte).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Send READY / WATCHDOG / STATUS / STOPPING to the service manager, if there is one."""

    def __init__(self, address: str | None = None) -> None:
        """address: the socket path; default $NOTIFY_SOCKET (None or empty: a no-op notifier)."""
        addr = (os.environ.get("NOTIFY_SOCKET", "") if address is None else address) or ""
        self._address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # systemd's WatchdogSec (in WATCHDOG_USEC, for WATCHDOG_PID): ping at a quarter of it.
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        for_us = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 4e6 if for_us else 1.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when there is no manager or it failed
        (logged, never raised: a notification must not stop the gateway)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
