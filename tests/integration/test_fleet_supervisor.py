#!/usr/bin/python3
"""sdxl-fleet, the supervisor, end to end: --check-config (ok, exit 2 with a
line number), `up` starting the broker and three workers (device, test x2)
from a fleet file on tcp loopback, `status`, a SIGKILLed worker restarted
(new pid, registered again, restarts=1), a worker whose domain does not exist
exiting 2 and not restarted, `reload` after count 2 -> 1 stopping one worker,
and `down` stopping every child with the master exiting 0."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

FLEET_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-fleet")


def fleet_yaml(fleet, test_count, extra=""):
    return ("broker:\n"
            "  frontend: %s\n"
            "  backend: %s\n"
            "  events: %s\n"
            "worker:\n"
            "  log_level: info\n"
            "workers:\n"
            "  - domain: device\n"
            "  - domain: test\n"
            "    count: %d\n%s") % (fleet.frontend, fleet.backend, fleet.events, test_count,
                                     extra)


def run(*args, timeout=30):
    return subprocess.run([FLEET_BIN] + list(args), capture_output=True, timeout=timeout)


def state(pid_file):
    """The master's state file, as {name: child}; {} if unreadable."""
    import json
    path = pid_file[:-4] + ".state.json"
    try:
        with open(path) as f:
            return {c["name"]: c for c in json.load(f)["children"]}
    except (OSError, ValueError, KeyError):
        return {}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def registered(fleet, wid, pid=None):
    """wid is in system.workers (with that pid, when given)."""
    try:
        for w in fleet.workers(1.0):
            if isinstance(w, dict) and (w.get("worker_id") or w.get("id")) == wid:
                if pid is None or w.get("pid") == pid:
                    return True
    except TimeoutError:
        pass
    return False


def test_check_config(t):
    fleet = fl.Fleet("tcp", "sup-check")
    try:
        good = os.path.join(fleet.dir, "fleet.yaml")
        with open(good, "w") as f:
            f.write(fleet_yaml(fleet, 2))
        r = run("--check-config", "--config", good)
        t.check(r.returncode == 0 and b"3 workers" in r.stdout, "--check-config: ok, 3 workers",
                (r.returncode, r.stdout, r.stderr))
        bad = os.path.join(fleet.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write(fleet_yaml(fleet, 2).replace("count: 2", "count: many"))
        r = run("--check-config", "--config", bad)
        err = r.stderr.decode()
        t.check(r.returncode == 2 and ("%s:10:" % bad) in err and "count" in err,
                "--check-config on a bad count: exit 2, file:line: reason", (r.returncode, err))
        with open(bad, "w") as f:
            f.write("workers:\n  - domain: test\n   oops: [\n")
        r = run("--check-config", "--config", bad)
        err = r.stderr.decode()
        t.check(r.returncode == 2 and ("%s:3:" % bad) in err, "--check-config on broken YAML: "
                "exit 2 with its line", (r.returncode, err))
        r = run("--check-config", "--config", os.path.join(fl.SOURCE_ROOT, "deploy", "fleet.yaml"))
        t.check(r.returncode == 0, "--check-config deploy/fleet.yaml: ok", (r.returncode, r.stderr))
    finally:
        fleet.close()


def test_supervise(t):
    fleet = fl.Fleet("tcp", "sup")
    cfg = os.path.join(fleet.dir, "fleet.yaml")
    pid_file = os.path.join(fleet.dir, "fleet.pid")
    with open(cfg, "w") as f:
        f.write(fleet_yaml(fleet, 2))
    logs = os.path.join(fleet.dir, "logs")
    master = fl.Proc("master", [FLEET_BIN, "up", "--config", cfg, "--pid-file", pid_file,
                                "--grace", "5", "--log-dir", logs],
                     os.path.join(fleet.dir, "master.log"))
    fleet.procs.append(master)
    seen_pids = set()
    try:
        names = {"broker", "device-1", "test-1", "test-2"}

        def running():
            s = state(pid_file)
            ok = set(s) == names and all(c["pid"] > 0 and c["state"] == "running"
                                        for c in s.values())
            return s if ok else None
        s = fl.wait_for(running, 15, "4 children running")
        seen_pids |= {c["pid"] for c in s.values()}
        r = run("status", "--pid-file", pid_file)
        out = r.stdout.decode()
        t.check(r.returncode == 0 and ("master pid %d" % master.pid) in out and
                all(n in out for n in names), "status: master pid and 4 children", out)
        fleet.wait_registered(["device-1", "test-1", "test-2"], 15)
        t.check(True, "system.workers shows device-1, test-1, test-2")

        # SIGKILL one test worker: restarted (a new pid, registers again).
        old = s["test-2"]["pid"]
        os.kill(old, signal.SIGKILL)
        s = fl.wait_for(lambda: (lambda c: c if c and c.get("pid", 0) not in (0, old) else None)(
            state(pid_file).get("test-2")), 10, "test-2 restarted")
        seen_pids.add(s["pid"])
        t.check(s["restarts"] == 1 and s["last_exit"] == "signal 9",
                "a SIGKILLed worker is restarted: new pid, restarts=1", s)
        fl.wait_for(lambda: registered(fleet, "test-2", s["pid"]), 15,
                    "the restarted test-2 to register")
        t.check(True, "the restarted worker registers again (its new pid)")
        t.check("restarting in 1000 ms" in master.log_text(), "the log says restarting in 1000 ms",
                master.tail())

        def log_of(name):
            try:
                with open(os.path.join(logs, name + ".log"), errors="replace") as f:
                    return f.read()
            except OSError:
                return ""
        t.check(log_of("test-2").count("READY sent") >= 2 and "READY sent" in log_of("test-1")
                and "broker" in log_of("broker") and "READY sent" not in master.log_text(),
                "--log-dir: each child's output in logs/NAME.log, appended across restarts",
                sorted(os.listdir(logs)))
        r = run("status", "--pid-file", pid_file)
        line = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("test-2 ")]
        t.check(line and line[0].split()[3] == "1", "status: test-2 restarts 1", r.stdout)

        # Reload: count 2 -> 1 and a worker of an unknown domain.
        with open(cfg, "w") as f:
            f.write(fleet_yaml(fleet, 1, "  - domain: nosuchdomain\n"))
        keep = {n: state(pid_file)[n]["pid"] for n in ("broker", "device-1", "test-1")}
        r = run("reload", "--pid-file", pid_file)
        t.check(r.returncode == 0, "reload: exit 0", r.stderr)
        fl.wait_for(lambda: "test-2" not in state(pid_file) and
                    state(pid_file).get("nosuchdomain-1", {}).get("state") == "given_up", 15,
                    "test-2 stopped and nosuchdomain-1 given up")
        t.check(not alive(s["pid"]), "reload to count 1: test-2 stopped")
        time.sleep(2.5)  # longer than the first back-off: it would have restarted by now
        s2 = state(pid_file)
        bad = s2.get("nosuchdomain-1", {})
        t.check(bad.get("state") == "given_up" and bad.get("restarts") == 0 and
                bad.get("last_exit") == "code 2" and bad.get("pid") == 0,
                "an unknown domain exits 2 and is not restarted", bad)
        t.check("configuration error" in master.log_text(), "the log names the exit 2",
                master.tail())
        t.check(all(s2.get(n, {}).get("pid") == p for n, p in keep.items()),
                "reload: the unchanged children keep their pids", (keep, s2))
        fl.wait_for(lambda: not registered(fleet, "test-2"), 15, "test-2 to leave the broker")
        t.check(registered(fleet, "test-1"), "system.workers: test-1 stays, test-2 left")

        # A broken file on reload: the master keeps running with the old one.
        with open(cfg, "w") as f:
            f.write("workers: [\n")
        run("reload", "--pid-file", pid_file)
        fl.wait_for(lambda: "keeping the running configuration" in master.log_text(), 10,
                    "the master to refuse the broken file")
        t.check(master.alive() and state(pid_file).get("test-1", {}).get("pid") == keep["test-1"],
                "reload with a broken file: keeps running with the old one")

        seen_pids |= {c["pid"] for c in state(pid_file).values() if c["pid"] > 0}
        r = run("down", "--pid-file", pid_file, timeout=40)
        t.check(r.returncode == 0, "down: exit 0", r.stderr)
        rc = master.wait(20)
        t.check(rc == 0, "the master exits 0 after down", (rc, master.tail()))
        left = [p for p in seen_pids if alive(p)]
        t.check(not left, "down: no child left alive", left)
        t.check(not os.path.exists(pid_file), "down: the pid file is removed")
        r = run("status", "--pid-file", pid_file)
        t.check(r.returncode == 1, "status without a master: exit 1", r.stdout)
    finally:
        if master.alive():
            print(master.tail(60))
        for p in seen_pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        fleet.close()


def main():
    if not os.path.exists(FLEET_BIN):
        print("no %s (fleet not built)" % FLEET_BIN)
        return fl.SKIP
    t = fl.Tally("fleet_supervisor")
    t.run(test_check_config)
    t.run(test_supervise)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
