"""What `webhook` receivers send with `format: cloudevents` / `cloudevents-binary`, parsed by
the CloudEvents Python SDK (`cloudevents` on PyPI), as Argo Events, Knative or Keptn would.

The examples in webhooks/cloudevents/ are exactly the requests Gatehouse sends: the Swift
test CloudEventsTests holds every rendered request (headers and raw body) equal to them.
"""
import json
import pathlib

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

EXAMPLES = sorted((pathlib.Path(__file__).parents[2] / "webhooks" / "cloudevents").glob("*.json"))


def parse(path):
    """The CloudEvents one request carries (a structured batch holds several)."""
    example = json.loads(path.read_text())
    headers, body = example["headers"], example["body"].encode()
    if headers.get("Content-Type") == "application/cloudevents-batch+json":
        # The SDK has no batch reader: each element is a structured event of its own.
        return headers, [
            from_http_event(HTTPMessage(headers={"content-type": "application/cloudevents+json"}, body=json.dumps(item).encode()))
            for item in json.loads(body)
        ]
    return headers, [from_http_event(HTTPMessage(headers={k.lower(): v for k, v in headers.items()}, body=body))]


def test_there_are_examples_of_both_modes():
    names = {p.name for p in EXAMPLES}
    assert {"cloudevents-event.json", "cloudevents-digest.json", "cloudevents-binary-event.json", "cloudevents-binary-digest.json"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_sdk_reads_what_we_send(path):
    headers, events = parse(path)
    # Signed per Standard Webhooks in every mode; the first event's id is the webhook-id.
    assert headers["webhook-id"] and headers["webhook-signature"].startswith("v1,")
    assert events[0].get_id().startswith(headers["webhook-id"])
    ids = [e.get_id() for e in events]
    assert len(set(ids)) == len(ids)
    for event in events:
        assert event.get_specversion() == "1.0"
        assert event.get_source() == "https://gatehouse.example"
        assert event.get_type().startswith("dev.gatehouse.")
        assert event.get_time() is not None
        data = event.get_data()
        assert isinstance(data, dict)
        if event.get_type() == "dev.gatehouse.digest":
            # Binary mode has no batches: a digest is one event carrying the list.
            assert event.get_extension("gatehousekind") == "digest"
            assert [e["run"] for e in data["events"]] == [event.get_subject()] * len(data["events"])
        else:
            # One Gatehouse event: its type, its run as the subject, the event as the data.
            assert event.get_type() == "dev.gatehouse." + data["type"]
            assert event.get_subject() == data.get("run")
            assert event.get_extension("gatehousepipeline") == data["pipeline"]


def test_a_gate_decision_can_resume_a_pipeline():
    _, [event] = parse(next(p for p in EXAMPLES if p.stem == "cloudevents-binary-gate"))
    assert event.get_type() == "dev.gatehouse.gate.approved"
    assert event.get_extension("gatehousekind") == "gate"
    assert event.get_data()["attributes"]["gate_key"] == "r42/deploy"
