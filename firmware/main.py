# Board entry point (MicroPython): the A/B loader. It is never replaced over the air, so
# it stays small and imports nothing from a slot until it has picked one; the loader's
# logic (ota.json, trial starts, rollback) is otaslots.py beside it, shared with
# CircuitPython's code.py.
#
# On the unix port (sys.platform == "linux") the simulation board is used:
#   MICROPYPATH=firmware:<repo root>:.cache/upy-lib micropython firmware/main.py

from otaslots import run

if __name__ == "__main__":
    run("sensorfw.entry")
