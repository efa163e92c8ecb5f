#!/bin/sh
# Install the Debian packages that building and testing pyproc need, and
# say which; do nothing when every one is there already.
set -e
# libpython3-dev: the static libpython the worker links (see the Makefile);
# python3-numpy: test_extmods and test_buffers load it in a worker.
pkgs="build-essential pkg-config python3-dev libpython3-dev libffi-dev libcmocka-dev libmsgpuck-dev
      python3-msgpack python3-aiohttp python3-matplotlib python3-numpy clang libclang-rt-14-dev
      valgrind clang-format gdb libjansson-dev python3-venv
      libglib2.0-dev libuv1-dev libevent-dev
      scdoc man-db groff-base debhelper dpkg-dev fakeroot lintian
      libopenmpi-dev openmpi-bin python3-mpi4py iproute2"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "pyproc: installing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "pyproc: not root; run as root: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
