"""The firmware's offline queue on littlefs-python (littlefs 2.11) configured as the ESP32 and
Pico W ports configure MicroPython's littlefs: an outage's flash wear, and a restart that reads
the queue back from littlefs (bench/bench_flash_wear.py has the setup and the sources)."""

from __future__ import annotations

import pytest

# bench_flash_wear puts firmware/ on sys.path before it imports queue_wear (and the queue)
from bench.bench_flash_wear import ESP32, PICO_W, LfsFiles, Port, new_fs, new_queue, outage_once, queue_on, queue_wear

OUTAGE_S = 600  # 10 minutes at 50 Hz x 6 channels: ~100 block writes


@pytest.mark.parametrize("port", [ESP32, PICO_W], ids=["esp32", "pico_w"])
def test_outage_costs_at_most_1_2_erases_per_4k_appended(port: Port) -> None:
    now = outage_once(port, False, OUTAGE_S)
    before = outage_once(port, True, OUTAGE_S)
    assert now["block_writes"] > 90
    assert now["per_4k"] <= 1.2, now
    assert before["per_4k"] > 1.6, before  # the measurement sees the defect it guards against
    assert now["erases"] < 0.7 * before["erases"], (now, before)


def test_esp32_outage_costs_at_most_1_2_erases_per_4k_of_records() -> None:
    # per 4 KB of frames (with their 7-byte headers), block padding counted against the queue
    assert outage_once(ESP32, False, OUTAGE_S)["per_4k_records"] <= 1.2


def test_queue_written_on_littlefs_is_read_back_after_a_restart() -> None:
    fs, _dev = new_fs(PICO_W)
    files = LfsFiles(fs)
    fs.mkdir("queue")
    with queue_on(files):
        q = new_queue(files, "queue")
        stream = queue_wear.FrameStream()
        queue_wear.outage(q, stream, 120)  # ~190 frames, more than flash_frames: oldest dropped
        q.sync()
        kept = q.depth()
        q2 = new_queue(files, "queue")
        assert q2.loaded >= kept and q2.torn == 0 and q2.corrupt == 0
        seqs = []
        while (mv := q2.next_frame()) is not None:
            seqs.append(int.from_bytes(bytes(mv[5:9]), "little"))
            q2.sent()
        assert seqs == list(range(seqs[0], stream.seq))  # in order, up to the last frame queued
        q2.ack(queue_wear.BOOT, 0, stream.seq - 1)
        assert fs.listdir("queue") == []
