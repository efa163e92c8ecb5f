#!/bin/sh
# The Debian packages that `make deb` left in DIR, tried on this machine:
# lintian finds no error in them; installed with dpkg, a program built with
# `pkg-config --cflags --libs pyproc` runs a call through the installed
# worker with no PYPROC_WORKER, so does the installed pyproc command, and
# `man` finds the pages; then the packages are purged again, leaving the
# machine as it was.  Needs root (dpkg); refuses to touch a machine that
# has any of the packages installed already.
# Usage: tests/deb.sh DIR   (make check-deb)
set -e
dir=$1
pkgs="pyproc-tools libpyproc-dev libpyproc0"
fail() {
    echo "deb: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "dpkg -i needs root"
for p in $pkgs; do
    if dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "installed"; then
        fail "$p is installed on this machine already; leaving it alone"
    fi
done
debs=""
for p in $pkgs; do
    deb=$(ls "$dir/${p}_"*.deb 2> /dev/null | head -n 1)
    [ -n "$deb" ] || fail "no ${p}_*.deb in $dir"
    debs="$debs $deb"
done

# The package's version is the library's.
version=$(sed -n 's/^#define PYPROC_VERSION_[A-Z]* \([0-9]*\)/\1/p' include/pyproc.h | paste -sd.)
[ "$(dpkg-parsechangelog -S Version)" = "$version" ] ||
    fail "debian/changelog says $(dpkg-parsechangelog -S Version), include/pyproc.h $version"

echo "== lintian"
lintian --fail-on error $debs ||
    fail "lintian reports errors"

tmp=$(mktemp -d)
cleanup() {
    dpkg --purge $pkgs > /dev/null || echo "deb: dpkg --purge $pkgs failed"
    rm -rf "$tmp"
}
trap cleanup EXIT
echo "== dpkg -i$debs"
dpkg -i $debs > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg -i failed"; }

# A program built against the installed header and library; it prints
# where its worker's code was loaded from (the worker runs as python3 with
# pyproc-worker.so), which must be the installed module.
cat > "$tmp/app.c" << 'C'
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <pyproc.h>
int main(void)
{
    pyproc_opts opts = {.workers = 1};
    pyproc_worker_stats st;
    pyproc_pool *pool;
    char path[64], line[4096];
    int err = pyproc_pool_new(&pool, "deb", &opts);
    if (err < 0) {
        fprintf(stderr, "pyproc_pool_new: %s\n", pyproc_strerror(err));
        return 1;
    }
    if (pyproc_func(pool, "nothing.here", NULL, NULL) != -ENOENT || pyproc_stats(pool, 0, &st) < 0)
        return 2;
    snprintf(path, sizeof path, "/proc/%d/maps", st.pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        char *so = strstr(line, "/pyproc-worker.so");
        if (so) {
            so[strlen("/pyproc-worker.so")] = 0;
            printf("%s\n", strchr(line, '/'));
            break;
        }
    }
    pyproc_pool_free(pool);
    return 0;
}
C
flags=$(env -u PKG_CONFIG_PATH pkg-config --cflags --libs pyproc) || fail "pkg-config knows no pyproc"
case $flags in
*rpath*) fail "pkg-config --libs pyproc sets a run path: $flags" ;;
esac
cc "$tmp/app.c" $flags -o "$tmp/app" || fail "cc app.c $flags failed"
exe=$(env -u PYPROC_WORKER -u LD_LIBRARY_PATH "$tmp/app") || fail "the program failed"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
[ "$exe" = "/usr/lib/$multiarch/pyproc/pyproc-worker.so" ] ||
    fail "the worker's code came from '$exe', not the installed /usr/lib/$multiarch/pyproc/pyproc-worker.so"
echo "deb: a program built with pkg-config ran its call in $exe"

pid=$(cd / && env -u PYPROC_WORKER -u LD_LIBRARY_PATH /usr/bin/pyproc call -s os=os os.getpid) ||
    fail "pyproc call -s os=os os.getpid failed"
case $pid in
'' | *[!0-9]*) fail "pyproc call -s os=os os.getpid printed '$pid'" ;;
esac
if readelf -d /usr/bin/pyproc | grep -Eq 'RPATH|RUNPATH'; then
    fail "/usr/bin/pyproc carries a run path"
fi
echo "deb: /usr/bin/pyproc call answered from worker pid $pid"

page=$(man -w pyproc_func) || fail "man -w pyproc_func finds nothing"
MANWIDTH=80 man pyproc_func 2> /dev/null | grep -q "int pyproc_func(pyproc_pool \*pool" ||
    fail "man pyproc_func does not show its prototype"
man -w 1 pyproc > /dev/null || fail "man -w 1 pyproc finds nothing"
echo "deb: man pyproc_func opens $page"

trap - EXIT
cleanup
for p in $pkgs; do
    if dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "installed"; then
        fail "$p is still installed after dpkg --purge"
    fi
done
echo "deb: packages installed, tried and purged"
