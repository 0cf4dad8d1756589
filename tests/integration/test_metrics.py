#!/usr/bin/python3
"""Broker metrics in the Prometheus text format, through a real broker and
test workers: system.metrics and GET /metrics on --metrics-endpoint give
the same series; after N test.echo and M test.fail requests the counters
say exactly that (by type and outcome), every latency histogram is
cumulative and ends at its count, the worker, capacity and queue gauges
match system.status, a non-GET or another path gets 405/404, and the
broker keeps serving after garbage on the HTTP port."""
import os
import re
import socket
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402


def parse(text):
    """{(name, frozenset(labels)): value} of the sample lines."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-z_]+)(\{(.*)\})? (\S+)$', line)
        if not m:
            raise ValueError("not a sample line: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read().decode()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("metrics")
    fleet = fl.Fleet("ipc", "metrics")
    port = fl.free_port()
    try:
        fleet.start_broker(["--metrics-endpoint", "tcp://127.0.0.1:%d" % port])
        w = fleet.start_worker("test", wid="m-test")
        fleet.wait_registered([w.wid], 10)
        for i in range(7):
            r = fleet.request({"message_type": "test.echo", "data": {"i": i}}, timeout=5)
            assert r.get("success"), r
        for i in range(3):
            fleet.request({"message_type": "test.fail", "data": {"code": "invalid_request"}},
                          timeout=5)
        status, ctype, text = get(port, "/metrics")
        t.check(status == 200 and "version=0.0.4" in ctype,
                "GET /metrics: 200, the Prometheus text content type", (status, ctype))
        s = parse(text)

        def v(name, **labels):
            return s.get((name, frozenset(labels.items())))
        t.check(v("sdxl_requests_total", type="test.echo", outcome="ok") == 7,
                "7 test.echo counted ok", v("sdxl_requests_total", type="test.echo", outcome="ok"))
        fails = {k: val for k, val in s.items() if k[0] == "sdxl_requests_total" and
                 ("type", "test.fail") in k[1]}
        t.check(sum(fails.values()) == 3 and all(("outcome", "ok") not in k[1] for k in fails),
                "3 test.fail counted under their error outcome", fails)
        good = True
        for (name, labels), val in s.items():
            if name != "sdxl_request_duration_seconds_count":
                continue
            typ = dict(labels)["type"]
            buckets = sorted(((float("inf") if dict(k[1])["le"] == "+Inf" else
                               float(dict(k[1])["le"])), x) for k, x in s.items()
                             if k[0] == "sdxl_request_duration_seconds_bucket" and
                             ("type", typ) in k[1])
            counts = [x for _, x in buckets]
            good &= counts == sorted(counts) and counts[-1] == val and \
                v("sdxl_request_duration_seconds_sum", type=typ) is not None
        t.check(good, "every latency histogram is cumulative and ends at its count")
        st = fleet.request({"message_type": "system.status"}, timeout=5)["data"]
        t.check(v("sdxl_workers", domain="test") == 1 and
                v("sdxl_worker_capacity", domain="test") == st["domains"]["test"]["capacity"] and
                v("sdxl_queue_depth", domain="test", priority="normal") == 0 and
                v("sdxl_workers", domain="inference") == 0,
                "worker, capacity and queue gauges match system.status")
        r = fleet.request({"message_type": "system.metrics"}, timeout=5)
        d = r.get("data") or {}
        t.check(r.get("success") and d.get("format") == "prometheus-text-0.0.4" and
                parse(d.get("text", "")).get(("sdxl_requests_total", frozenset(
                    {("type", "test.echo"), ("outcome", "ok")}))) == 7,
                "system.metrics: the same series", r.get("error"))
        t.check(get(port, "/nope")[0] == 404, "another path: 404")
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"POST /metrics HTTP/1.0\r\n\r\n")
        reply = c.recv(200)
        c.close()
        t.check(reply.startswith(b"HTTP/1.0 405"), "POST: 405", reply[:40])
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(os.urandom(300))
        c.close()
        r = fleet.request({"message_type": "test.echo", "data": {}}, timeout=5)
        t.check(r.get("success") is True and get(port, "/metrics")[0] == 200,
                "garbage on the HTTP port: the broker keeps serving (and scraping)")
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
