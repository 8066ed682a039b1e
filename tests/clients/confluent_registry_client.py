"""Drives `leadstream registry` with Confluent's own Python client.

Usage: confluent_registry_client.py REGISTRY_URL FRAMED_EVENT_HEX
Exits non-zero (with the assertion) when the registry does not behave as
Confluent's client expects.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

url, framed_hex = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url})
subject = "leadstream.events.PageViewed"

subjects = client.get_subjects()
assert subject in subjects, subjects
assert client.get_versions(subject) == [1, 2], client.get_versions(subject)
latest = client.get_latest_version(subject)
assert latest.version == 2 and latest.subject == subject, latest
by_id = client.get_schema(latest.schema_id)
assert json.loads(by_id.schema_str) == json.loads(latest.schema.schema_str)
v1 = client.get_version(subject, 1)

# Lookup and (idempotent) registration of a governed schema return its pinned id.
assert client.lookup_schema(subject, v1.schema).schema_id == v1.schema_id
assert client.register_schema(subject, v1.schema) == v1.schema_id

# Compatibility, as the client asks for it.
assert client.test_compatibility(subject, v1.schema) is True
breaking = json.loads(v1.schema.schema_str)
breaking["fields"].append({"name": "extra", "type": "string", "doc": "required, no default"})
breaking = Schema(json.dumps(breaking), "AVRO")
assert client.test_compatibility(subject, breaking) is False
try:
    client.register_schema(subject, breaking)
    raise AssertionError("an incompatible schema was registered")
except SchemaRegistryError as e:
    assert e.http_status_code == 409 and e.error_code == 409, (e.http_status_code, e.error_code)
try:
    client.get_version("no.such.Subject", 1)
    raise AssertionError("unknown subject found")
except SchemaRegistryError as e:
    assert e.error_code == 40401, e.error_code
assert client.get_compatibility() == "BACKWARD_TRANSITIVE"

# Bytes framed by leadstream's codec decode with Confluent's deserializer.
deserializer = AvroDeserializer(client)
event = deserializer(bytes.fromhex(framed_hex), SerializationContext("leadstream.events", MessageField.VALUE))
assert event["event"] == "page_viewed" and event["properties"]["page_type"] == "configurator", event
print(json.dumps({"subjects": len(subjects), "latest_id": latest.schema_id, "decoded_message_id": event["message_id"]}))
