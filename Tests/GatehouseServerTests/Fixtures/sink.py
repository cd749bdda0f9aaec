"""A local HTTP sink standing in for Slack, Discord, Mattermost and webhook endpoints.

The first path segment picks the behaviour; everything received is recorded and listed by
GET /_requests. Prints "PORT <n>" once listening on 127.0.0.1 (port chosen by the OS).

  /ok/...            200 "ok"
  /json/...          200 {"id": "<n>"}   (Discord with ?wait=true)
  /status-NNN/...    that status, body "error NNN"
  /flaky-N/...       500 for the first N requests to this path, then 200 "ok"
  /ratelimit-S/...   429 with Retry-After: 1 for S seconds after the first request, then 200 "ok"
  /discord429-S/...  like ratelimit, with Discord's JSON body {"retry_after": 0.5}
  /hang/...          never answers (sleeps 60 s)
  /hangfirst/...     the first request to this path never answers, later ones get 200 "ok"
  /down-S/...        500 for S seconds after the first request, then 200 "ok"
  /nul/...           200 with a body holding a NUL byte ("ok\0bin")
  /slow-S/...        200 "ok" after S seconds
  /retryafter-V/...  the first request 429 with Retry-After: V (verbatim), later ones 200 "ok"
  /busy-C-V-S/...    status C with Retry-After: V for S seconds after the first request, then 200 "ok"

PATCH is answered like POST (Discord message edits).
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
requests = []
counters = {}
first_seen = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=None, content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/_requests"):
            with lock:
                body = json.dumps(requests)
            self.reply(200, body, content_type="application/json")
        else:
            self.reply(404, "not found")

    def do_PATCH(self):
        self.do_POST()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        now = time.time()
        path = self.path.split("?")[0]
        with lock:
            n = counters.get(path, 0) + 1
            counters[path] = n
            first_seen.setdefault(path, now)
            since_first = now - first_seen[path]
            requests.append({"path": self.path, "method": self.command, "time": now, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        mode = path.strip("/").split("/")[0]
        if mode == "ok":
            self.reply(200, "ok")
        elif mode == "nul":
            self.reply(200, "ok\0bin")
        elif mode == "json":
            self.reply(200, json.dumps({"id": str(n), "channel_id": "c1"}), content_type="application/json")
        elif mode.startswith("status-"):
            code = int(mode.split("-")[1])
            self.reply(code, "error %d" % code)
        elif mode.startswith("flaky-"):
            if n <= int(mode.split("-")[1]):
                self.reply(500, "temporarily broken")
            else:
                self.reply(200, "ok")
        elif mode.startswith("ratelimit-"):
            if since_first < float(mode.split("-")[1]):
                self.reply(429, "rate limited", {"Retry-After": "1"})
            else:
                self.reply(200, "ok")
        elif mode.startswith("discord429-"):
            if since_first < float(mode.split("-")[1]):
                self.reply(429, json.dumps({"message": "You are being rate limited.", "retry_after": 0.5, "global": False}), content_type="application/json")
            else:
                self.reply(200, json.dumps({"id": str(n)}), content_type="application/json")
        elif mode.startswith("retryafter-"):
            if n == 1:
                self.reply(429, "rate limited", {"Retry-After": mode.split("-", 1)[1]})
            else:
                self.reply(200, "ok")
        elif mode.startswith("busy-"):
            _, code, after, seconds = mode.split("-")
            if since_first < float(seconds):
                self.reply(int(code), "busy", {"Retry-After": after})
            else:
                self.reply(200, "ok")
        elif mode.startswith("slow-"):
            time.sleep(float(mode.split("-")[1]))
            self.reply(200, "ok")
        elif mode == "hang" or (mode == "hangfirst" and n == 1):
            time.sleep(60)
        elif mode == "hangfirst":
            self.reply(200, "ok")
        elif mode.startswith("down-"):
            if since_first < float(mode.split("-")[1]):
                self.reply(500, "down")
            else:
                self.reply(200, "ok")
        else:
            self.reply(404, "unknown mode")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


server = Server(("127.0.0.1", 0), Handler)
print("PORT %d" % server.server_address[1], flush=True)
server.serve_forever()
