#!/usr/bin/python3
"""tools/install-deps run as a non-root user on a host without sudo: it must
name the missing packages and the command to run as root, and exit 1
(rather than fail half-way with "sudo: command not found").

The host is faked with a private PATH: `id` says uid 1000, `dpkg-query`
says nothing is installed, and there is no `sudo`. Nothing is installed.
"""
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE_ROOT = os.environ.get(
    "SDXL_SOURCE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SCRIPT = os.path.join(SOURCE_ROOT, "tools", "install-deps")


def main():
    bash, grep = shutil.which("bash") or "/bin/bash", shutil.which("grep")
    if not grep:
        print("SKIP: no grep")
        return 77
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for name, body in (("id", "#!/bin/sh\necho 1000\n"), ("dpkg-query", "#!/bin/sh\nexit 1\n")):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(body)
            os.chmod(path, 0o755)
        os.symlink(grep, os.path.join(d, "grep"))
        p = subprocess.run([bash, SCRIPT, "--no-torch"], env={"PATH": d, "HOME": d},
                           capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        checks = [
            (p.returncode == 1, "exit 1 (got %d)" % p.returncode),
            ("sudo is not installed" in out, "says sudo is missing"),
            ("libzmq3-dev" in out and "python3-msgpack" in out, "names the missing packages"),
            ("apt-get install" in out and "as root" in out, "gives the command to run as root"),
            ("command not found" not in out, "no obscure shell error"),
            ("libtorch-dev" not in out, "--no-torch leaves the engine packages out"),
        ]
        for ok, what in checks:
            print("%s %s" % ("ok  " if ok else "FAIL", what))
            failed += 0 if ok else 1
        if failed:
            print("---- output ----\n" + out)
    print("%d passed, %d failed" % (len(checks) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
