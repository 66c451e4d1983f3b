"""Measures the Python SDK against the real hub (DEVICEHUB_BIN):

1. enqueue_message per second, each message fsynced before the call
   returns, offline (no sender competing) and online (the sender draining
   at the same time);
2. the drain rate of a backlog of N messages (default 100,000) after the
   client connects.

The backlog is written into the outbox in transactions of 1,000 (the rows
enqueue_message would write), so that building it takes seconds, not
the minutes that N fsyncs take.

    go build -o /tmp/devicehub ./cmd/devicehub
    cd sdk/python/tests && DEVICEHUB_BIN=/tmp/devicehub python3 bench.py [N]
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from hubproc import Hub  # noqa: E402

from devicehub_device import DeviceClient  # noqa: E402

OFFLINE = "http://127.0.0.1:9?mqtt=127.0.0.1:9"  # where no hub listens


def enqueue_rate(db, instance, n, rounds=3):
    rates = []
    for r in range(rounds):
        c = DeviceClient.start(None, None, db, instance=instance)
        s = c.create_stream_sender(stream="bench")
        t0 = time.perf_counter()
        for i in range(n):
            s.enqueue_message(json.dumps({"seq": i, "temperature": 21.5}), message_id="r%d-%d-%d" % (r, i, id(c)))
        rates.append(n / (time.perf_counter() - t0))
        c.close()
    return rates


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    tmp = tempfile.mkdtemp(prefix="dh-bench-")
    hub = Hub().start()
    try:
        db = os.path.join(tmp, "bench.db")
        c = DeviceClient.start("bench-1", hub.token(auto_approve=True), db, instance=hub.instance,
                               display_provisioning_operation_callback=lambda op: None)
        c.close()

        off = enqueue_rate(db, OFFLINE, 2000)
        # Drop what the offline rounds left, so that the online rounds
        # measure enqueue beside a sender with little backlog.
        c = DeviceClient.start(None, None, db, instance=hub.instance)
        c.wait_enqueued_messages_sent()
        c.close()
        on = enqueue_rate(db, hub.instance, 2000)
        c = DeviceClient.start(None, None, db, instance=hub.instance)
        c.wait_enqueued_messages_sent()
        c.close()
        print("enqueue_message/s offline (median of 3 x 2000): %.0f  %s" % (statistics.median(off), [round(x) for x in off]))
        print("enqueue_message/s online  (median of 3 x 2000): %.0f  %s" % (statistics.median(on), [round(x) for x in on]))

        # The backlog, written offline in transactions of 1,000.
        c = DeviceClient.start(None, None, db, instance=OFFLINE)
        s = c.create_stream_sender(stream="backlog")
        t0 = time.perf_counter()
        for base in range(0, n, 1000):
            es = [s._entry(json.dumps({"seq": i, "temperature": 21.5}), None, "b%d" % i, None, None)
                  for i in range(base, min(n, base + 1000))]
            c._store.append(es)
        print("backlog of %d written in %.1fs" % (n, time.perf_counter() - t0))
        c.close()

        t0 = time.perf_counter()
        c = DeviceClient.start(None, None, db, instance=hub.instance)
        if c.pending_messages_count != n:
            raise SystemExit("pending %d, want %d" % (c.pending_messages_count, n))
        c.wait_enqueued_messages_sent()
        dt = time.perf_counter() - t0
        c.close()
        print("drain of %d messages after connecting: %.1fs, %.0f messages/s" % (n, dt, n / dt))
        rs = hub.readings("bench-1", stream="backlog")
        seqs = [r["values"]["seq"] for r in rs]
        print("stored: %d readings, in order: %s" % (len(seqs), seqs == list(range(n))))
        print("load:", open("/proc/loadavg").read().strip())
    finally:
        hub.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
