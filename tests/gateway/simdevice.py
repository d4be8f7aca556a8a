"""Moved to tests/support/simdevice.py (one device simulator for every test folder); this
name stays only for bench/fleetgen.py until it imports the new place."""

from tests.support.simdevice import VIB_CHANNELS, SimDevice, historical

__all__ = ["VIB_CHANNELS", "SimDevice", "historical"]
