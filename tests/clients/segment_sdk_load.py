"""Steady load through Segment's own Python SDK (segment-analytics-python).

Usage: segment_sdk_load.py INGEST_URL WRITE_KEY EVENTS_PER_S SECONDS PEOPLE SEED

Sends page and track calls for PEOPLE anonymous visitors at about
EVENTS_PER_S for SECONDS, about 2% of them breaking the tracking plan. The
SDK batches, gzips and retries with backoff as it does in production
(connection refused while ingest restarts, 5xx while Kafka stalls), and
reports through on_error only what it finally gave up on. Prints
{"accepted": {anonymous_id: [message ids]}, "invalid": [ids],
 "failed": [ids], "dropped": n} once everything is flushed.
"""
import json
import random
import sys
import threading
import time

from segment.analytics import Client

url, write_key = sys.argv[1], sys.argv[2]
rate, seconds, people, seed = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rng = random.Random(seed)

failed = set()
lock = threading.Lock()


def on_error(error, batch):
    with lock:
        for msg in batch:
            failed.add(msg["messageId"])


# Restarts and stalls last seconds: give up only well after them.
client = Client(write_key, host=url, gzip=True, upload_size=50, upload_interval=0.2,
                max_retries=12, max_total_backoff_duration=300, on_error=on_error,
                max_queue_size=100000)

pages = [("Home", "home"), ("Models", "model_detail"), ("Configurator", "configurator"), ("Price", "price")]
sent = {}
invalid = []
dropped = 0
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    anon = f"e2e-{seed}-{rng.randrange(people)}"
    kind = rng.random()
    if kind < 0.02:
        # Fits Segment, breaks the plan (form_id must be a string): DLQ.
        ok, msg = client.track(anonymous_id=anon, event="Lead Form Submitted",
                               properties={"form_id": 5, "phone": "13800138000"})
        if ok:
            invalid.append(msg["messageId"])
        else:
            dropped += 1
    else:
        if kind < 0.1:
            ok, msg = client.track(anonymous_id=anon, event="Test Drive Booked",
                                   properties={"model_id": "x5", "dealer_id": "d-12"})
        else:
            category, page_type = rng.choice(pages)
            ok, msg = client.page(anonymous_id=anon, category=category, name=f"X5 {page_type}",
                                  properties={"model_id": "x5", "page_type": page_type})
        if ok:
            sent.setdefault(anon, []).append(msg["messageId"])
        else:
            dropped += 1
    n += 1
    pause = start + n / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)

client.flush()
client.join()
accepted = {}
for anon, ids in sent.items():
    kept = [i for i in ids if i not in failed]
    if kept:
        accepted[anon] = kept
print(json.dumps({"accepted": accepted, "invalid": [i for i in invalid if i not in failed],
                  "failed": sorted(failed), "dropped": dropped}))
