#!/usr/bin/env python3
"""Read a Server-Sent Events stream the way EventSource does, for the gateway tests.

usage: sse_read.py URL PATH AUTH LAST_EVENT_ID TIMEOUT_S
AUTH is "Bearer <token>" or "Cookie <value>" ("-": none); LAST_EVENT_ID "-" for none.
Prints the HTTP status, then one JSON line per event ({"id", "event", "data"}), until the
stream sends `event: end`, closes, or TIMEOUT_S passes.
"""
import http.client
import json
import socket
import sys
import urllib.parse

url, path, auth, last, timeout = sys.argv[1:6]
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=float(timeout))
headers = {"Accept": "text/event-stream"}
if auth.startswith("Bearer "):
    headers["Authorization"] = auth
elif auth.startswith("Cookie "):
    headers["Cookie"] = "berth_session=" + auth[7:]
if last != "-":
    headers["Last-Event-ID"] = last
c.request("GET", path, headers=headers)
r = c.getresponse()
print(r.status, flush=True)
if r.status != 200:
    print(json.dumps({"event": "http", "data": r.read().decode()}))
    sys.exit(0)
ev = {"id": None, "event": "message", "data": []}
try:
    while True:
        line = r.fp.readline()
        if not line:
            print(json.dumps({"event": "closed"}))
            break
        line = line.decode("utf-8").rstrip("\n")
        if line == "":
            if ev["data"] or ev["event"] != "message":
                out = {"id": ev["id"], "event": ev["event"], "data": "\n".join(ev["data"])}
                print(json.dumps(out), flush=True)
                if ev["event"] == "end":
                    break
            ev = {"id": None, "event": "message", "data": []}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "id":
            ev["id"] = value
        elif field == "event":
            ev["event"] = value
        elif field == "data":
            ev["data"].append(value)
except (socket.timeout, TimeoutError):
    print(json.dumps({"event": "timeout"}))
