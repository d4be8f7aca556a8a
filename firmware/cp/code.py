# CircuitPython entry point: the A/B loader (otaslots.py beside it, shared with
# MicroPython's main.py) picks the firmware to run, the code at the drive's root
# (lib/sensorfw, ...) or a slot an update over the air wrote (/a/lib/..., /b/lib/...),
# and runs sensorfw/cpport/entry.py from there. Like otaslots.py, this file is never
# replaced over the air.
#
# On a board, CircuitPython runs this file from CIRCUITPY with lib/ (sensorfw,
# shared_protocol, the pinned Adafruit libraries) on sys.path. On the unix port
# (sys.platform == "linux") the CircuitPython simulation board is used:
#   MICROPYPATH=firmware/cpsim:firmware:<repo root>:.cache/cp-lib micropython firmware/cp/code.py
# A drive the code cannot write prints one message and returns, so the board stays
# reachable (REPL, USB drive) instead of crash-looping.

import storage

# The code may write CIRCUITPY only after boot.py remounted it (then the USB host may
# not): the loader's ota.json, the offline queue and the sequence lease live there.
if storage.getmount("/").readonly:
    print("DRIVE ERROR: CIRCUITPY is read-only to this code, so the offline queue cannot")
    print("be kept. boot.py gives the code write access unless the USB-write pin is held")
    print("at reset (docs/circuitpython.md); press reset without holding it.")
else:
    from otaslots import run

    run("sensorfw.cpport.entry", "/lib")
