# CircuitPython's `wifi.radio`: connect() blocks until joined (or raises after `timeout`
# seconds); `connected`, `ap_info`, `enabled`. The simulated network is down during
# EDGELINE_SIM_LINK_DOWN windows (seconds since start).
import time

from _cpsim import link_down


class ConnectionError(OSError):
    pass


class Network:
    def __init__(self, ssid):
        self.ssid = ssid
        self.rssi = -58
        self.channel = 6


class Radio:
    def __init__(self):
        self._enabled = True
        self._ssid = None
        self.joins = 0

    @property
    def enabled(self):
        return self._enabled

    @enabled.setter
    def enabled(self, v):
        self._enabled = bool(v)
        if not v:
            self._ssid = None

    def connect(self, ssid, password="", *, channel=0, bssid=None, timeout=None):
        if not self._enabled:
            raise RuntimeError("Wifi is not enabled")
        if not ssid:
            raise ValueError("ssid must be between 1 and 32 characters")
        if link_down():
            time.sleep(8.0 if timeout is None else timeout)  # a join that finds no AP blocks
            raise ConnectionError("No network with that ssid")
        self._ssid = ssid
        self.joins += 1

    @property
    def connected(self):
        if self._ssid is not None and link_down():
            self._ssid = None  # the AP went away
        return self._ssid is not None

    @property
    def ap_info(self):
        return Network(self._ssid) if self.connected else None

    @property
    def ipv4_address(self):
        return "127.0.0.1" if self.connected else None


radio = Radio()
