#!/usr/bin/python3
"""Per-client limits of the broker, with real processes: every request gets
exactly one reply, and going over a limit is an error reply, never a drop.

- --client-max-in-flight 2: a DEALER client with 3 slow requests (test.sleep)
  gets 2 answered and the third `rate_limited` (retryable) at once; another
  client at the same time is not affected; once the first two are answered
  the client may send again;
- --client-max-rps 5: 12 quick system.ping from one client: exactly 5 pass
  (the bucket's size), 7 get `rate_limited` naming client_max_rps; a second
  later the bucket has refilled."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

import zmq  # noqa: E402


def dealer_round(fleet, reqs, timeout=10):
    """Send every request on one DEALER at once; the replies by request_id."""
    d = fleet.client(zmq.DEALER)
    for r in reqs:
        d.send(fl.encode(r, "msgpack"))
    got = {}
    deadline = time.time() + timeout
    while len(got) < len(reqs) and time.time() < deadline:
        if d.poll(200):
            m = fl.decode(d.recv_multipart()[-1])
            got[m.get("request_id")] = m
    d.close()
    return got


def code(m):
    return (m.get("error") or {}).get("code") if not m.get("success") else "ok"


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("client_limits")
    fleet = fl.Fleet("ipc", "limits")
    try:
        fleet.start_broker(["--client-max-in-flight", "2"])
        ws = [fleet.start_worker("test", ["--concurrency", "4", "--capacity", "8"],
                                 wid="lim-%d" % i) for i in range(2)]
        fleet.wait_registered([w.wid for w in ws], 10)
        slow = [{"message_type": "test.sleep", "request_id": "s%d" % i, "data": {"ms": 600}}
                for i in range(3)]
        got = dealer_round(fleet, slow)
        codes = sorted(code(got[k]) for k in got)
        rl = [got[k] for k in got if code(got[k]) == "rate_limited"]
        t.check(len(got) == 3 and codes == ["ok", "ok", "rate_limited"] and
                rl[0]["error"].get("retryable") is True and
                "client_max_in_flight" in rl[0]["error"].get("message", ""),
                "in-flight limit 2: 3 slow requests -> 2 answered, 1 rate_limited (retryable)",
                {k: code(v) for k, v in got.items()})
        other = fleet.request({"message_type": "test.echo", "data": {}}, timeout=5)
        t.check(other.get("success") is True, "another client is not limited by it")
        got = dealer_round(fleet, slow[:2])
        t.check(sorted(code(v) for v in got.values()) == ["ok", "ok"],
                "after the replies the client may send 2 again")
        fleet.close()

        fleet = fl.Fleet("ipc", "limits-rps")
        fleet.start_broker(["--client-max-rps", "5"])
        pings = [{"message_type": "system.ping", "request_id": "p%d" % i} for i in range(12)]
        got = dealer_round(fleet, pings)
        codes = [code(got.get("p%d" % i, {})) for i in range(12)]
        rl = [got[k] for k in got if code(got[k]) == "rate_limited"]
        t.check(len(got) == 12 and codes.count("ok") == 5 and codes.count("rate_limited") == 7 and
                "client_max_rps" in rl[0]["error"]["message"],
                "rate limit 5/s: 12 quick pings -> 5 answered, 7 rate_limited, none dropped",
                codes)
        time.sleep(1.1)
        got = dealer_round(fleet, pings[:3])
        t.check([code(got.get("p%d" % i, {})) for i in range(3)] == ["ok"] * 3,
                "a second later the bucket has refilled")
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
