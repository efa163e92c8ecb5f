"""cpu_peer.py PY_PATH: the /usr/bin/python3 side of pyproc-bench's step "cpu": runs
benchmods.cpu.spin() once per line read from stdin and prints the
milliseconds it took, so that the bench can alternate it with the same
call in a worker and compare the two under the same load."""

import sys

sys.path.insert(0, sys.argv[1])
from benchmods.cpu import spin  # noqa: E402

spin()  # untimed, as in the worker
for _ in sys.stdin:
    print(spin() * 1e3, flush=True)
