# When a bounded simulated run ends: shared by the MicroPython and the CircuitPython
# simulation boards (boards/sim.py, boards/cp_sim.py).

import os


def read_limits(board, env):
    """The run's limits from the environment (env: name, default -> value)."""
    board.duration_us = int(float(env("EDGELINE_SIM_DURATION_S", "0")) * 1000000)
    board.max_samples = int(env("EDGELINE_SIM_SAMPLES", "0"))
    board.stop_file = env("EDGELINE_SIM_STOP_FILE")
    board.drain_s = float(env("EDGELINE_SIM_DRAIN_S", "0"))
    board.stats_path = env("EDGELINE_SIM_STATS")
    board.stop_check_us = 0


def stop_due(board, app, now_us):
    """True once EDGELINE_SIM_SAMPLES rows are captured, EDGELINE_SIM_STOP_FILE exists
    (looked for every 0.1 s of simulated time) or EDGELINE_SIM_DURATION_S has passed."""
    if board.max_samples and app.sampler.samples >= board.max_samples:
        return True
    if board.stop_file and now_us >= board.stop_check_us:
        board.stop_check_us = now_us + 100000
        try:
            os.stat(board.stop_file)
            return True
        except OSError:
            pass
    return bool(board.duration_us and now_us >= board.duration_us)
