"""The Mosquitto broker used by the tests lives in tools/mosquitto.py (the fleet demo uses it too)."""

from tools.mosquitto import MOSQUITTO, MOSQUITTO_PASSWD, BrokerError, Mosquitto, free_port, port_open

__all__ = ["MOSQUITTO", "MOSQUITTO_PASSWD", "BrokerError", "Mosquitto", "free_port", "port_open"]
