#!/usr/bin/python3
"""sdxl-cli against a real fleet: send (inline JSON, @file, stdin, msgpack,
--raw), status/workers/ping, --stream progress lines, watch on the events
socket, and its exit codes (0 ok, 1 error reply, 2 usage, 3 timeout); then
tools/run-fleet, the README's main job, end to end."""
import json
import os
import subprocess
import tempfile
import sys

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402


def cli(fleet, *args, stdin=None, timeout=20):
    argv = [fl.CLI_BIN, "--endpoint", fleet.frontend, "--events-endpoint", fleet.events] + \
        list(args)
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)


def test_cli(t):
    fleet = fl.Fleet("tcp", "cli")
    try:
        fleet.start_broker()
        dev = fleet.start_worker("device", wid="cli-dev")
        tw = fleet.start_worker("test", ["--concurrency", "2"], wid="cli-test")
        fleet.wait_registered([dev.wid, tw.wid])

        r = cli(fleet, "send", "device.list")
        out = r.stdout.decode()
        ok = r.returncode == 0
        try:
            j = json.loads(out)
        except ValueError:
            j, ok = {}, False
        t.check(ok and j.get("success") is True and "\n  " in out,
                "send device.list: exit 0, indented JSON", (r.returncode, out[:300], r.stderr))

        r = cli(fleet, "--msgpack", "--raw", "send", "test.echo", '{"k": [1, "two"]}')
        try:
            m = msgpack.unpackb(r.stdout, raw=False)
        except Exception as e:  # noqa: BLE001
            m = {"undecodable": str(e)}
        t.check(r.returncode == 0 and m.get("data") == {"k": [1, "two"]},
                "--msgpack --raw: the raw msgpack reply", (r.returncode, m))

        path = os.path.join(fleet.dir, "data.json")
        with open(path, "w") as f:
            f.write('{"from": "file"}')
        r = cli(fleet, "send", "test.echo", "@" + path)
        t.check(r.returncode == 0 and json.loads(r.stdout)["data"] == {"from": "file"},
                "send TYPE @file", r.stdout[:200])
        r = cli(fleet, "send", "test.echo", "-", stdin=b'{"from": "stdin"}')
        t.check(r.returncode == 0 and json.loads(r.stdout)["data"] == {"from": "stdin"},
                "send TYPE - (stdin)", r.stdout[:200])

        for cmd in ("status", "workers", "ping"):
            r = cli(fleet, cmd)
            t.check(r.returncode == 0 and json.loads(r.stdout).get("success") is True,
                    "sdxl-cli %s: exit 0" % cmd, (r.returncode, r.stdout[:200], r.stderr[:200]))

        r = cli(fleet, "send", "bogus.thing")
        t.check(r.returncode == 1 and b"unknown_message_type" in r.stderr,
                "error reply: exit 1, error printed", (r.returncode, r.stderr))
        r = cli(fleet, "send", "test.echo", "{not json")
        t.check(r.returncode == 2, "bad JSON data: exit 2", r.returncode)
        r = subprocess.run([fl.CLI_BIN], capture_output=True, timeout=10)
        t.check(r.returncode == 2 and b"usage" in r.stderr, "no command: usage, exit 2")
        r = subprocess.run([fl.CLI_BIN, "--endpoint", "tcp://127.0.0.1:%d" % fl.free_port(),
                            "--timeout", "300", "status"], capture_output=True, timeout=10)
        t.check(r.returncode == 3 and b"timeout" in r.stderr, "no broker: exit 3 (timeout)",
                (r.returncode, r.stderr))
        r = cli(fleet, "--timeout", "300", "send", "test.sleep", '{"ms": 3000}')
        t.check(r.returncode == 3, "reply slower than --timeout: exit 3", r.returncode)

        r = cli(fleet, "--stream", "send", "test.sleep", '{"ms": 300, "steps": 3}')
        lines = r.stdout.decode().splitlines()
        prog = [x for x in lines if x.startswith("progress ")]
        t.check(r.returncode == 0 and len(prog) == 3 and "3/3" in prog[-1],
                "--stream prints one progress line per step, then the reply",
                (r.returncode, lines[:6], r.stderr))

        # cancel: a long request from one cli, system.cancel from another
        rid = "cancel-me-%d" % os.getpid()
        bg = subprocess.Popen([fl.CLI_BIN, "--endpoint", fleet.frontend, "--stream",
                               "--request-id", rid, "send", "test.sleep",
                               '{"ms": 20000, "steps": 200}'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        bg.stdout.readline()  # its first progress line: the request is running
        r = cli(fleet, "cancel", rid)
        try:
            out, err = bg.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            bg.kill()
            out, err = bg.communicate()
        t.check(r.returncode == 0 and bg.returncode == 1 and b"cancelled" in err,
                "sdxl-cli cancel REQUEST_ID stops a running request (it ends with cancelled)",
                (r.returncode, r.stdout[-300:], bg.returncode, err[-300:]))

        # watch: subscribe first, then run the request it watches
        rid = "watch-me-%d" % os.getpid()
        w = subprocess.Popen([fl.CLI_BIN, "--events-endpoint", fleet.events, "--timeout",
                              "10000", "watch", rid], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        # the subscription is up once the watcher said so on stderr
        first = w.stderr.readline()
        # a SUB connects asynchronously: send the request a few times until the
        # watcher has seen one (it exits on the reply)
        r = None
        end = fl.now() + 10
        while w.poll() is None and fl.now() < end:
            r = cli(fleet, "--request-id", rid, "send", "test.sleep", '{"ms": 200, "steps": 2}')
            try:
                w.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        if w.poll() is None:
            w.kill()
        out, err = w.communicate(timeout=5)
        t.check(w.returncode == 0 and b"progress " + rid.encode() in out,
                "watch REQUEST_ID prints its progress and ends with the request",
                (w.returncode, first, out[-400:], err[-300:]))
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fleet.close()


def test_run_fleet(t):
    """The README's main job, with no models root given: run-fleet makes the
    project's own tiny model (sdxl-gen make-tiny, no ../shared needed) and
    generates through the fleet with sdxl-cli generate."""
    script = os.path.join(fl.SOURCE_ROOT, "tools", "run-fleet")
    with tempfile.TemporaryDirectory() as tmp:
        png = os.path.join(tmp, "demo.png")
        env = {k: v for k, v in os.environ.items()
               if k not in ("SDXL_MODELS_ROOT", "SDXL_MODEL_NAME", "SDXL_GOLDEN_DIR")}
        r = subprocess.run([script, "--build-dir", fl.BUILD_ROOT, "--transport", "ipc",
                            "--no-install-deps", "--out", png],
                           capture_output=True, timeout=120, env=env)
        out = r.stdout.decode()
        t.check(r.returncode == 0 and '"gpus"' in out and out.count('"success": true') >= 2,
                "tools/run-fleet: fleet up, device.list and status answered, stopped",
                (r.returncode, out[-600:], r.stderr.decode()[-800:]))
        if "built without the engine" in out:
            t.check(True, "tools/run-fleet: worker without the engine, generation reported")
            return
        with open(png, "rb") as f:
            head = f.read(24)
        t.check(head[:8] == b"\x89PNG\r\n\x1a\n" and head[16:24] == bytes([0, 0, 0, 128] * 2)
                and '"model_name": "sdxl-tiny"' in out,
                "tools/run-fleet: a 128x128 PNG generated on the tiny default model (sdxl-tiny)",
                (head, out[-800:]))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, fl.CLI_BIN)
    t = fl.Tally("fleet_cli")
    t.run(test_cli)
    t.run(test_run_fleet)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
