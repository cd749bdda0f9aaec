#!/usr/bin/env python3
"""A small receiver that resumes pipelines when their gate is decided.

Gatehouse sends it every event as a CloudEvent (`format: cloudevents`), signed per Standard
Webhooks. It checks the signature, ignores everything but gate decisions, and "resumes" the
run the decision is about — here it prints a line (and appends it to --log); in real life it
would trigger the pipeline's next step (a CI job, an Argo workflow, a ZenML run).

    RESUME_SECRET=whsec_... python3 resume.py --port 9000 [--log resumed.txt]
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DECISIONS = {"dev.gatehouse.gate.approved", "dev.gatehouse.gate.rejected", "dev.gatehouse.gate.expired", "dev.gatehouse.gate.canceled"}


def signed(secret, headers, body):
    """Standard Webhooks: v1,<base64 HMAC-SHA256 of id.timestamp.body>, within 5 minutes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(stamp)) > 300:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not signed(self.server.secret, self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        if event.get("type") in DECISIONS:
            decision = event["type"].rsplit(".", 1)[1]
            gate = event["data"]["attributes"]
            line = f"{decision} {event.get('subject')} {gate.get('gate_key', '')} {event['id']}"
            print(line, flush=True)
            if self.server.log:
                with open(self.server.log, "a") as f:
                    f.write(line + "\n")
        # 2xx: delivered. Gatehouse retries anything else, under the same webhook-id.
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--log")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.secret = os.environ["RESUME_SECRET"]
    server.log = args.log
    print(f"resume.py listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
