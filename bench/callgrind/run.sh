#!/bin/sh
# The host's instructions per call under callgrind, split by part:
#   sh bench/callgrind/run.sh [BUILD_DIR]   (default: build)
# from the top of the tree.  Builds callcost against BUILD_DIR's static
# library and worker, runs sync (1 worker) and tput (1 and 2 workers)
# under valgrind --tool=callgrind with the host thread's profile kept
# apart (--separate-threads), and prints split.py's table for each.
# Valgrind 3.19 knows no pidfd call: tests/valgrind/pidfd_shim.c is
# preloaded, as make check-valgrind does.
set -e
B=${1:-build}
TOP=$(pwd)
OUT=$B/cg
mkdir -p "$OUT"
cc -std=c11 -D_GNU_SOURCE -O2 -g -Iinclude -o "$OUT/callcost" bench/callgrind/callcost.c \
    "$B/lib/libpyproc.a" -lpthread -ldl
make -s B="$B" PYPROC_DEPS_CHECKED=1 "$B/tests/valgrind/libpidfd-shim.so"
export PYPROC_WORKER="$TOP/$B/bin/pyproc-worker"
run() { # name mode workers n calls
    rm -f "$OUT/cg.$1"*
    LD_PRELOAD="$TOP/$B/tests/valgrind/libpidfd-shim.so" valgrind --tool=callgrind --instr-atstart=no --trace-children=no --separate-threads=yes \
        --callgrind-out-file="$OUT/cg.$1" "$OUT/callcost" "$2" "$3" "$4" "$TOP/bench/py" \
        >"$OUT/cg.$1.log" 2>&1
    # The main thread's profile of the measured part: the dump at the client request.
    f=$(ls "$OUT/cg.$1".*-01 | head -1)
    echo "== $1: $5 calls ($f)"
    python3 bench/callgrind/split.py "$f" "$5"
}
run sync sync 1 2000 2000
run tput1 tput 1 20 5120
run tput2 tput 2 20 5120
