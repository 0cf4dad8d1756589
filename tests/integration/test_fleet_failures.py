#!/usr/bin/python3
"""Failure handling with real processes: SIGKILL a worker during a request
(the request finishes on another worker of the domain), timeout_ms on a long
request (timeout error, and the worker got CANCEL), broker restart (workers
re-register), SIGTERM a worker mid-request (it finishes the request and
exits 0). Scenarios alternate between ipc and tcp loopback."""
import os
import signal
import sys

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402


def send(sock, msg):
    sock.send(fl.encode(msg, "msgpack"))  # DEALER: the bare frame


def recv_until(sock, pred, timeout, what):
    end = fl.now() + timeout
    while True:
        left = end - fl.now()
        if left <= 0 or not sock.poll(int(left * 1000)):
            raise TimeoutError("timed out waiting for " + what)
        m = fl.decode(sock.recv_multipart()[-1])
        if pred(m):
            return m


def is_progress(rid):
    return lambda m: m.get("message_type") == "progress" and m.get("request_id") == rid


def is_reply(rid):
    return lambda m: m.get("message_type") != "progress" and m.get("request_id") == rid


def sigkill_retry(fleet, t, kind):
    w1 = fleet.start_worker("test", wid="k1-" + kind)
    fleet.wait_registered([w1.wid])
    s = fleet.client(zmq.DEALER)
    try:
        send(s, {"message_type": "test.sleep", "request_id": "kill-me", "stream": True,
                 "data": {"ms": 1500, "steps": 15}})
        recv_until(s, is_progress("kill-me"), 5, "progress from w1")  # running on w1
        w2 = fleet.start_worker("test", wid="k2-" + kind)
        fleet.wait_registered([w2.wid])
        t0 = fl.now()
        w1.signal(signal.SIGKILL)
        r = recv_until(s, is_reply("kill-me"), 15, "the retried reply")
        t.check(r.get("success") is True and r["data"].get("worker_id") == w2.wid,
                "%s: SIGKILL during test.sleep: finished on the other worker in %.1fs" %
                (kind, fl.now() - t0), r)
    finally:
        s.close()


def timeout_cancel(fleet, t, kind):
    w = fleet.start_worker("test", ["--concurrency", "2"], wid="to-" + kind)
    fleet.wait_registered([w.wid])
    t0 = fl.now()
    r = fleet.request({"message_type": "test.sleep", "timeout_ms": 400,
                       "data": {"ms": 10000, "steps": 100}}, timeout=5)
    dt = fl.now() - t0
    t.check(r.get("success") is False and r["error"]["code"] == "timeout" and dt < 3.0,
            "%s: timeout_ms 400 on a 10 s test.sleep -> timeout after %.2fs" % (kind, dt), r)

    def cancelled():
        st = fleet.request({"message_type": "test.status"})["data"]
        return st if st.get("cancels_received", 0) >= 1 and st.get("in_flight", 9) <= 1 else None
    try:
        st = fl.wait_for(cancelled, 5, "the worker to count the CANCEL", 0.1)
        t.check(True, "%s: worker received CANCEL (status cancels_received=%d, cancelled=%d)" %
                (kind, st["cancels_received"], st.get("requests_cancelled", 0)))
    except TimeoutError as e:
        t.check(False, "%s: worker received CANCEL" % kind, e)
    t.check("CANCEL received" in w.log_text(), "%s: worker logged the CANCEL" % kind)


def broker_restart(fleet, t, kind):
    ws = [fleet.start_worker("test", wid="rr%d-%s" % (i, kind)) for i in range(2)]
    fleet.start_worker("device", wid="rrdev-" + kind)
    ids = [w.wid for w in ws] + ["rrdev-" + kind]
    fleet.wait_registered(ids)
    old = fleet.broker
    old.signal(signal.SIGKILL)
    old.wait(5)
    t0 = fl.now()
    fleet.start_broker()
    fleet.wait_registered(ids, timeout=20)
    t.check(True, "%s: after a broker restart all %d workers re-registered in %.1fs" %
            (kind, len(ids), fl.now() - t0))
    r = fleet.request({"message_type": "test.echo", "data": {"after": "restart"}})
    t.check(r.get("success") is True and r["data"] == {"after": "restart"},
            "%s: requests flow through the new broker" % kind, r)


def sigterm_drain(fleet, t, kind):
    w = fleet.start_worker("test", wid="term-" + kind)
    fleet.wait_registered([w.wid])
    s = fleet.client(zmq.DEALER)
    try:
        send(s, {"message_type": "test.sleep", "request_id": "finish-me", "stream": True,
                 "data": {"ms": 1000, "steps": 10}})
        recv_until(s, is_progress("finish-me"), 5, "progress")
        w.signal(signal.SIGTERM)
        r = recv_until(s, is_reply("finish-me"), 10, "the reply")
        t.check(r.get("success") is True and r["data"].get("worker_id") == w.wid,
                "%s: SIGTERM mid-request: the worker finished it" % kind, r)
        rc = w.wait(5)
        t.check(rc == 0, "%s: and exited 0" % kind, rc)

        def gone():
            return w.wid not in fleet.worker_ids()
        try:
            fl.wait_for(gone, 5, "the broker to drop the worker")
            t.check(True, "%s: the broker dropped it after DISCONNECT" % kind)
        except TimeoutError as e:
            t.check(False, "%s: the broker dropped it after DISCONNECT" % kind, e)
    finally:
        s.close()


def test_sigkill_retry(t):
    fl.with_fleet("ipc", "fail", sigkill_retry, t, "ipc")


def test_timeout_cancel(t):
    fl.with_fleet("tcp", "fail", timeout_cancel, t, "tcp")


def test_broker_restart_tcp(t):
    fl.with_fleet("tcp", "fail", broker_restart, t, "tcp")


def test_broker_restart_ipc(t):
    fl.with_fleet("ipc", "fail", broker_restart, t, "ipc")


def test_sigterm_drain(t):
    fl.with_fleet("ipc", "fail", sigterm_drain, t, "ipc")


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("fleet_failures")
    for fn in (test_sigkill_retry, test_timeout_cancel, test_sigterm_drain,
               test_broker_restart_tcp, test_broker_restart_ipc):
        t.run(fn)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
