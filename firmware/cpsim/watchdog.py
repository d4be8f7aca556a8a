# CircuitPython's `watchdog` module: the mode enum and the timeout exception.


class WatchDogMode:
    RAW = "RAW"
    RESET = "RESET"


class WatchDogTimeout(Exception):
    pass
