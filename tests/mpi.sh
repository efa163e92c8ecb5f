#!/bin/sh
# Pools over MPI, end to end, every frame over Open MPI's TCP transport:
#   1. tests/mpi_e2e.c's tests against an MPI pool, then pyproc_mpi_shutdown()
#      (mpirun must then end cleanly: every agent exited), and the local
#      pool's end-to-end tests built against MPI pools (mpi_test_*);
#   2. the host killed in the middle of calls: its agents and their workers
#      must exit;
#   3. an agent that sends the host junk of every shape, and a worker's
#      answer that is no msgpack value: the host lives on, the worker is
#      replaced;
#   4. an agent killed in the middle of a call: Open MPI 4.1's mpirun ends
#      the whole job (the host too), promptly, saying which rank died; the
#      host's error handler (MPI_ERRORS_RETURN) does not change that;
#   5. the same under mpirun --enable-recovery, where MPI tells the host
#      nothing: the relay gives the silent agent up, its workers' calls
#      fail naming its rank, the pool goes on with the other agent, and
#      the job ends; also with the agent stalled (SIGSTOP) and resumed,
#      with the only agent killed (later calls fail, never hang), with a
#      new pool after a loss, a free right after a death or after a stall
#      (the stalled agent still told to exit), and a start asked of a dead
#      agent.
# Each run is bounded by timeout, so a hang fails.
# Usage: tests/mpi.sh [BUILD_DIR [MPI_TEST_PROGRAM...]]
b=${1:-build}
[ $# -gt 0 ] && shift
if ! command -v mpirun > /dev/null 2>&1; then
    echo "mpi: SKIPPED, mpirun is missing (make deps installs openmpi-bin)"
    exit 0
fi
# Root may run mpirun only with these (they belong to the tests, not the library).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {
    timeout -k 5 "$1" mpirun --oversubscribe --mca btl tcp,self \
        -n 1 "$b/tests/mpi_e2e" $2 : -n 2 "$b/bin/pyproc-agent"
}
# Whether any of the pids listed in file $1 still runs after $2 seconds.
still_running() {
    i=0
    while [ $i -lt $(($2 * 10)) ]; do
        alive=""
        for pid in $(awk '{ print $2 }' "$1"); do
            kill -0 "$pid" 2> /dev/null && alive="$alive $pid"
        done
        [ -z "$alive" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
    echo "still running:$alive"
    return 0
}
fail=0

echo "== mpi: end-to-end tests over the TCP transport"
if ! run 240 > "$tmp/e2e.txt" 2>&1; then
    cat "$tmp/e2e.txt"
    echo "FAILED: mpi end-to-end tests (or mpirun did not end after pyproc_mpi_shutdown)"
    fail=1
else
    grep -E '^\[|idle' "$tmp/e2e.txt"
fi

# The test and the agents (whose environment their workers get) are
# given the same name for test_crash's marker file (-x is per program).
m=PYPROC_TEST_CRASH_MARKER
for t in "$@"; do
    echo "== mpi: $t, the local pool's tests against MPI pools"
    if ! env $m="$tmp/crash-marker" timeout -k 5 240 mpirun --oversubscribe \
        --mca btl tcp,self -x $m -n 1 "$t" : -x $m -n 2 "$b/bin/pyproc-agent" \
        > "$tmp/t.txt" 2>&1; then
        cat "$tmp/t.txt"
        echo "FAILED: $t"
        fail=1
    else
        grep -E '^\[  PASSED' "$tmp/t.txt"
    fi
done

echo "== mpi: MPI without MPI_THREAD_MULTIPLE is refused"
if ! PYPROC_E2E_MPI_SINGLE=1 timeout -k 5 60 mpirun -x PYPROC_E2E_MPI_SINGLE --oversubscribe \
    --mca btl tcp,self -n 1 "$b/tests/mpi_e2e" refusals : -n 1 "$b/bin/pyproc-agent" \
    > "$tmp/refusals.txt" 2>&1 || ! grep -q "^refusals: ok" "$tmp/refusals.txt"; then
    cat "$tmp/refusals.txt"
    echo "FAILED: refusals"
    fail=1
else
    echo "refused, and the agents still shut down"
fi

echo "== mpi: a hostile agent"
if ! timeout -k 5 60 mpirun --oversubscribe --mca btl tcp,self -n 1 "$b/tests/mpi_e2e" hostile : \
    -n 1 "$b/tests/mpi_e2e" fake-agent > "$tmp/hostile.txt" 2>&1 ||
    ! grep -q "^hostile: ok" "$tmp/hostile.txt"; then
    cat "$tmp/hostile.txt"
    echo "FAILED: the host against an agent that sends junk"
    fail=1
else
    grep "^garbage answer" "$tmp/hostile.txt"
fi

echo "== mpi: the host dies"
run 60 host-dies > "$tmp/host.txt" 2>&1
grep -E '^(worker|agent) [0-9]+$' "$tmp/host.txt" > "$tmp/pids"
if [ "$(wc -l < "$tmp/pids")" -ne 4 ]; then
    cat "$tmp/host.txt"
    echo "FAILED: the host said no pids"
    fail=1
elif still_running "$tmp/pids" 20; then
    echo "FAILED: agents or workers outlived their host"
    fail=1
else
    echo "agents and workers exited"
fi

echo "== mpi: an agent dies"
start=$(date +%s)
run 60 agent-dies > "$tmp/agent.txt" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc -eq 124 ] || [ $rc -eq 137 -a $took -ge 60 ]; then
    cat "$tmp/agent.txt"
    echo "FAILED: the job hung after an agent died"
    fail=1
elif ! grep -q "^killing agent" "$tmp/agent.txt"; then
    cat "$tmp/agent.txt"
    echo "FAILED: the test did not get as far as killing an agent"
    fail=1
elif ! grep -q "mpirun noticed that process rank 2" "$tmp/agent.txt"; then
    cat "$tmp/agent.txt"
    echo "FAILED: mpirun did not say which rank died"
    fail=1
else
    echo "the job ended in ${took}s (start-up included), naming the dead rank"
fi
for mode in agent-lost agent-stalled every-agent-lost free-after-loss free-after-stall spawn-after-loss; do
    echo "== mpi: $mode, under mpirun --enable-recovery"
    agents=2
    [ $mode = every-agent-lost ] && agents=1
    if ! timeout -k 5 90 mpirun --enable-recovery --oversubscribe --mca btl tcp,self \
        -n 1 "$b/tests/mpi_e2e" $mode : -n $agents "$b/bin/pyproc-agent" > "$tmp/lost.txt" 2>&1 ||
        ! grep -q "^agent-lost: ok" "$tmp/lost.txt"; then
        cat "$tmp/lost.txt"
        echo "FAILED: $mode (a hang ends by timeout after 90 s)"
        fail=1
    else
        grep -E "^call on rank 2|^the stalled|^a call with no agent|^pool freed after|^a new pool|^a later start" "$tmp/lost.txt"
    fi
done
exit $fail
