# alarm.time.TimeAlarm: wake at a time.monotonic() value (or an epoch time).


class TimeAlarm:
    def __init__(self, *, monotonic_time=None, epoch_time=None):
        if (monotonic_time is None) == (epoch_time is None):
            raise ValueError("Supply one of monotonic_time or epoch_time")
        self.monotonic_time = monotonic_time if monotonic_time is not None else 0.0
        self.epoch_time = epoch_time
