#!/usr/bin/python3
"""sdxl-cli (the build's tools/sdxl-cli) against a real broker and a real
test worker: options are accepted after the command as well as before it,
floats print in their shortest round-trip form (4.76, not
4.7599999999999998), and integer request ids come back integers.

The full CLI test is tests/integration/test_fleet_cli.py; this one covers
only the behaviour above. Process start-up comes from fleetlib.
"""
import json
import os
import subprocess
import sys

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import fleetlib as fl  # noqa: E402  (process management only)


def cli(fleet, *args, timeout=20):
    argv = [fl.CLI_BIN] + list(args)
    env = dict(os.environ, SDXL_ENDPOINT=fleet.frontend, SDXL_EVENTS_ENDPOINT=fleet.events)
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=env)


def test_options_after_command(t, fleet):
    r = cli(fleet, "send", "test.echo", '{"k": [1, "two"]}', "--msgpack", "--raw")
    try:
        m = msgpack.unpackb(r.stdout, raw=False)
    except Exception as e:  # noqa: BLE001
        m = {"undecodable": str(e), "stderr": r.stderr[-300:]}
    t.check(r.returncode == 0 and isinstance(m, dict) and m.get("data") == {"k": [1, "two"]},
            "send TYPE JSON --msgpack --raw: options after the command", (r.returncode, m))

    r = cli(fleet, "ping", "--timeout", "5000", "-q")
    t.check(r.returncode == 0 and json.loads(r.stdout or b"{}").get("success") is True,
            "ping --timeout MS -q", (r.returncode, r.stdout[:200], r.stderr[-200:]))

    r = cli(fleet, "--json", "send", "--request-id", "cli-mixed", "test.echo", '{"a": 1}')
    j = json.loads(r.stdout or b"{}")
    t.check(r.returncode == 0 and j.get("request_id") == "cli-mixed" and j.get("data") == {"a": 1},
            "options before, between and after the command's arguments", (r.returncode, j))

    r = cli(fleet, "send", "test.echo", "--", '{"neg": -1}')
    j = json.loads(r.stdout or b"{}")
    t.check(r.returncode == 0 and j.get("data") == {"neg": -1}, "-- ends the options", j)

    r = cli(fleet, "send", "test.echo", "--no-such-option")
    t.check(r.returncode == 2, "an unknown option after the command is still a usage error",
            r.returncode)

    r = cli(fleet, "generate", '{"prompt": "x"}')
    t.check(r.returncode == 2 and b"--out" in r.stderr, "generate without --out: usage, exit 2",
            (r.returncode, r.stderr[-200:]))
    r = cli(fleet, "send", "test.echo", "{}", "--out", "/tmp/never.png")
    t.check(r.returncode == 2 and b"--out is for generate" in r.stderr,
            "--out with another command: usage, exit 2", (r.returncode, r.stderr[-200:]))


def test_float_format(t, fleet):
    data = {"f": 4.76, "tenth": 0.1, "third": 1 / 3, "big": 1e300, "whole": 3.0, "neg": -2.5e-7}
    for enc in ("--json", "--msgpack"):
        r = cli(fleet, "send", "test.echo", json.dumps(data), enc)
        out = r.stdout.decode()
        try:
            got = json.loads(out).get("data")
        except ValueError:
            got = None
        t.check(r.returncode == 0 and got == data,
                "floats read back exactly (%s)" % enc, (r.returncode, out[:400]))
        t.check('"f": 4.76' in out and "4.7599999" not in out and '"tenth": 0.1' in out,
                "floats print in their shortest round-trip form (%s)" % enc, out[:400])
        t.check('"whole": 3.0' in out, "a whole float stays a float (3.0) (%s)" % enc, out[:400])


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, fl.CLI_BIN)
    t = fl.Tally("cli_options")
    fleet = fl.Fleet("tcp", "clio")
    try:
        fleet.start_broker()
        w = fleet.start_worker("test", ["--concurrency", "2"], wid="clio-test")
        fleet.wait_registered([w.wid])
        for fn in (test_options_after_command, test_float_format):
            t.run(fn, fleet)
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", e)
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
