#!/bin/sh
# The MPI rows of `make bench`: a sync no-op call's round trip through an
# MPI pool over Open MPI's TCP transport, against a raw MPI ping-pong over
# the same transport and a local pool's round trip, measured in this same
# run (alternating jobs; the median of RUNS runs of each figure, each run
# already the median of its own rounds; mpi/bench.c).
# mpi4py.futures' MPIPoolExecutor runs on the same ranks and transport in
# each run too (bench/mpi4py_futures.py), when Debian's python3-mpi4py is
# there.
# Usage: bench/mpi.sh [BUILD_DIR] [RUNS]
b=${1:-build}
runs=${2:-3}
if ! command -v mpirun > /dev/null 2>&1; then
    echo "mpi rows: SKIPPED, mpirun is missing (make deps installs openmpi-bin)"
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi="timeout -k 5 120 mpirun --oversubscribe --mca btl tcp,self"
mpi4py=yes
/usr/bin/python3 -c 'import mpi4py.futures' 2> /dev/null || mpi4py=""
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
i=0
while [ $i -lt "$runs" ]; do
    if ! $mpi -n 2 "$b/bench/pyproc-bench-mpi" pingpong >> "$tmp" ||
        ! $mpi -n 1 "$b/bench/pyproc-bench-mpi" rtt : -n 1 "$b/bin/pyproc-agent" >> "$tmp" ||
        ! $mpi -n 1 "$b/bench/pyproc-bench-mpi" throughput : -n 2 "$b/bin/pyproc-agent" >> "$tmp"; then
        echo "mpi rows: FAILED, a run of mpirun failed (above)"
        exit 1
    fi
    if [ -n "$mpi4py" ] && ! $mpi -n 3 /usr/bin/python3 -m mpi4py.futures \
        "$(dirname "$0")/mpi4py_futures.py" >> "$tmp"; then
        echo "mpi rows: FAILED, the mpi4py.futures baseline failed (above)"
        exit 1
    fi
    i=$((i + 1))
done
med() { grep "^$1 " "$tmp" | awk '{ print $2 }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
raw=$(med mpi-pingpong-tcp)
remote=$(med mpi-sync-rtt-tcp)
local=$(med local-sync-rtt)
echo "MPI rows (median of $runs runs, each the median of 15 rounds of 400; noisy on a shared machine)"
printf '  %-40s %8s us\n' "raw MPI ping-pong, TCP BTL" "$raw" \
    "local pool sync no-op RTT" "$local" \
    "MPI pool sync no-op RTT, TCP BTL" "$remote"
printf '  %-40s %8s calls/s\n' "MPI pool, 4000 calls in flight, 2 agents" "$(med mpi-pipelined-calls-per-s)"
printf '  %-40s %8s items/s\n' "MPI pool, one generator's items" "$(med mpi-gen-items-per-s)"
awk -v r="$remote" -v a="$raw" -v l="$local" 'BEGIN {
    printf "  MPI pool RTT / (raw ping-pong + local RTT) = %.2f (target: within 2)\n", r / (a + l) }'
if [ -z "$mpi4py" ]; then
    echo "  mpi4py.futures rows: SKIPPED, python3-mpi4py is missing (make deps installs it)"
    exit 0
fi
sub=$(med mpi4py-submit-rtt)
fly=$(med mpi4py-inflight-per-s)
map=$(med mpi4py-map256-per-s)
printf '  %-40s %8s us\n' "mpi4py.futures submit().result()" "$sub"
printf '  %-40s %8s calls/s\n' "mpi4py.futures, 20000 submits in flight" "$fly"
printf '  %-40s %8s items/s\n' "mpi4py.futures map(chunksize=256)" "$map"
awk -v p="$(med mpi-pipelined-calls-per-s)" -v f="$fly" -v m="$map" -v r="$remote" -v s="$sub" 'BEGIN {
    printf "  MPI pool RTT / mpi4py submit RTT = %.3f\n", r / s
    printf "  pipelined calls / mpi4py in flight = %.0fx (target: at least 50x)\n", p / f
    printf "  pipelined calls / mpi4py map(chunksize=256) = %.2fx (target: above 1)\n", p / m }'
