# Empty stand-in for `circuitpython_typing.socket` on the unix port: CircuitPython libraries import names from it
# only for annotations (adafruit_connection_manager does unless the runtime says it is
# CircuitPython). Any name imported from here is None.


def __getattr__(name):
    return None
