"""replay_request.py REPLAY - the request fuzz target without libFuzzer:
writes the seed corpus from schemas/ (tools/make-request-corpus) into a
temporary folder, then runs REPLAY (replay_request: fuzz_request.c + the
generic replay driver) over it and over tests/fuzz/regressions/request/.
Fails if the corpus is small (an alias or enum list went missing) or any
input aborts or trips the sanitizers (in the ASan build)."""
import os
import subprocess
import sys
import tempfile

root = os.environ.get("SDXL_SOURCE_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
replay = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, os.path.join(root, "tools", "make-request-corpus"), tmp],
                   check=True, stdout=subprocess.DEVNULL)
    n = len(os.listdir(tmp))
    regs = os.path.join(root, "tests", "fuzz", "regressions", "request")
    p = subprocess.run([replay, tmp, regs], capture_output=True, text=True)
    sys.stdout.write(p.stdout[-2000:])
    sys.stderr.write(p.stderr[-8000:])
    ok = p.returncode == 0 and n >= 500
    print(f"{1 if ok else 0} passed, {0 if ok else 1} failed "
          f"(corpus {n} files, replay exit {p.returncode})")
    sys.exit(0 if ok else 1)
