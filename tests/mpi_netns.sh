#!/bin/sh
# Pools over MPI with the agents on simulated hosts: two network
# namespaces joined to this one by veth pairs on a bridge, each agent
# started there by mpirun through an rsh agent that runs `ip netns exec`
# (and a pid namespace and an empty /dev/shm of its own) instead of ssh.
# So nothing may assume a shared /dev/shm, a shared pid space of host and
# workers, or loopback between host and agents.  The namespaces, links and
# bridge are this script's alone (names carry its pid) and go on exit,
# also on failure.  Needs root and iproute2; skipped with a message
# otherwise.
# Usage: tests/mpi_netns.sh [BUILD_DIR]
b=${1:-build}
for tool in mpirun ip unshare; do
    if ! command -v $tool > /dev/null 2>&1; then
        echo "mpi netns: SKIPPED, $tool is missing (make deps installs it)"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "mpi netns: SKIPPED, creating network namespaces needs root"
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
id=$$
net=10.$((100 + id % 100)).$((id / 100 % 250)).
br=ppbr$id
tmp=$(mktemp -d)
cleanup() {
    for h in a b; do
        ip netns del pp_${h}_$id 2> /dev/null
        ip link del pp${h}$id 2> /dev/null
    done
    ip link del $br 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

set -e
ip link add $br type bridge
ip addr add ${net}1/24 dev $br
ip link set $br up
n=2
for h in a b; do
    ip netns add pp_${h}_$id
    ip link add pp${h}$id type veth peer name eth0 netns pp_${h}_$id
    ip link set pp${h}$id master $br up
    ip -n pp_${h}_$id addr add ${net}$n/24 dev eth0
    ip -n pp_${h}_$id link set eth0 up
    ip -n pp_${h}_$id link set lo up
    echo "${net}$n pp_${h}_$id" >> "$tmp/hosts"
    n=$((n + 1))
done
set +e

# mpirun runs "$agent HOST COMMAND..." where it would run ssh.
cat > "$tmp/rsh" << EOF
#!/bin/sh
host=\$1
echo "rsh: \$*" >> "$tmp/rsh.log"
shift
ns=\$(awk -v h="\$host" '\$1 == h { print \$2 }' "$tmp/hosts")
[ -n "\$ns" ] || { echo "no simulated host \$host" >&2; exit 1; }
# The daemon stays in the foreground: a daemon's parent leaving would end
# the pid namespace, whose first process it is.
cmd=\$(echo "\$*" | sed 's/ --daemonize / /')
exec ip netns exec "\$ns" unshare --pid --fork --mount \\
    sh -c 'mount -t tmpfs none /dev/shm && exec sh -c "\$0"' "\$cmd"
EOF
chmod +x "$tmp/rsh"

echo "== mpi netns: agents on two simulated hosts (${net}2, ${net}3)"
timeout -k 5 ${PP_NETNS_TIMEOUT:-300} mpirun --oversubscribe --mca plm_rsh_agent "$tmp/rsh" \
    --mca btl tcp,self --mca btl_tcp_if_include ${net}0/24 --mca oob_tcp_if_include ${net}0/24 \
    --mca plm_rsh_no_tree_spawn 1 --mca rtc ^hwloc \
    -host localhost -n 1 "$b/tests/mpi_e2e" netns : \
    -host ${net}2,${net}3 -n 2 "$PWD/$b/bin/pyproc-agent" > "$tmp/out.txt" 2>&1
rc=$?
grep -E '^\[  (PASSED|FAILED)|^\[==' "$tmp/out.txt"
if [ $rc -ne 0 ] || ! grep -q '^\[  PASSED  \] 9 test' "$tmp/out.txt"; then
    cat "$tmp/out.txt" "$tmp/rsh.log"
    echo "FAILED: MPI pool with agents on simulated hosts (rc $rc)"
    exit 1
fi
echo "passed: agents in their own network, pid and /dev/shm namespaces"
