"""Sends events with Segment's own Python SDK (segment-analytics-python).

Usage: segment_sdk_client.py INGEST_URL WRITE_KEY
Prints {"valid": [message ids], "invalid": [message ids]}; exits non-zero
when the SDK reports an error.
"""
import json
import sys

from segment.analytics import Client

url, write_key = sys.argv[1], sys.argv[2]
errors = []
client = Client(write_key, host=url, gzip=True, sync_mode=True, max_retries=0,
                on_error=lambda e, batch: errors.append(repr(e)))

valid, invalid = [], []
ctx = {"campaign": {"source": "autohome", "medium": "cpc"}, "wechat": {"unionId": "wx-union-1"}}
ok, msg = client.track(anonymous_id="anon-py", event="Test Drive Booked",
                       properties={"model_id": "x5", "dealer_id": "d-12", "contact_phone": "138 0013 8000"}, context=ctx)
valid.append(msg["messageId"])
ok, msg = client.page(anonymous_id="anon-py", category="Configurator", name="X5 configurator",
                      properties={"model_id": "x5", "url": "https://brand.example/x5/configure"})
valid.append(msg["messageId"])
ok, msg = client.identify(user_id="u-42", anonymous_id="anon-py",
                          traits={"phone": "+86 13800138000", "email": "wang@example.com", "name": "Wang Wei"})
valid.append(msg["messageId"])
# Fits Segment, breaks the tracking plan (form_id must be a string): DLQ.
ok, msg = client.track(anonymous_id="anon-py", event="Lead Form Submitted",
                       properties={"form_id": 5, "phone": "13800138000"})
invalid.append(msg["messageId"])
client.flush()
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(json.dumps({"valid": valid, "invalid": invalid}))
