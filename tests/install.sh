#!/bin/sh
# `make install` into a scratch prefix, then build a program with
# pkg-config against the installed tree and run it with no PYPROC_WORKER:
# the installed library must find its installed worker by itself.
set -e
prefix="$(pwd)/build/install-test"
rm -rf "$prefix"
make --no-print-directory install PREFIX="$prefix" > /dev/null
cat > build/install-test/app.c <<'C'
#include <stdio.h>
#include "pyproc.h"
int main(void)
{
    pyproc_opts opts = {.workers = 1};
    pyproc_pool *pool;
    pyproc_msg *m = NULL;
    int pid = 0;
    if (pyproc_pool_new(&pool, "installed", &opts) < 0)
        return 1;
    if (pyproc_add_sub(pool, "os", "os", 0) < 0 ||
        pyproc_func(pool, "os.getpid", &m, NULL) < 0 || pyproc_msg_read(m, "i", &pid) < 0)
        return 2;
    pyproc_msg_free(m);
    pyproc_pool_free(pool);
    printf("installed tree: a worker answered from pid %d\n", pid);
    return pid > 0 ? 0 : 3;
}
C
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc build/install-test/app.c $(pkg-config --cflags --libs pyproc) -o build/install-test/app
env -u PYPROC_WORKER build/install-test/app
# The installed tool finds the installed library and, through it, the
# installed worker.
out=$(env -u PYPROC_WORKER -u LD_LIBRARY_PATH "$prefix/bin/pyproc" call -s os=os os.getcwd)
[ "$out" = "\"$(pwd)\"" ] || { echo "installed pyproc call printed: $out"; exit 1; }
echo "installed tree: pyproc call answered $out"
# The installed library exports the API and nothing else, every function
# in a version node.
sh tests/abi.sh "$prefix/lib/libpyproc.so.0"

# Debian's layout: the library in a multiarch directory with its worker in
# pyproc/ beside it, and no run path in pyproc.pc.  The installed library
# must find that worker too (the other places it looks hold none here).
multi="$(pwd)/build/install-test-multiarch"
libdir="$multi/lib/x86_64-linux-gnu"
rm -rf "$multi"
make --no-print-directory install PREFIX="$multi" LIBDIR="$libdir" WORKERDIR="$libdir/pyproc" \
    PC_RPATH= > /dev/null
[ -x "$libdir/pyproc/pyproc-worker" ] || { echo "no worker in $libdir/pyproc"; exit 1; }
export PKG_CONFIG_PATH="$libdir/pkgconfig"
if pkg-config --libs pyproc | grep -q rpath; then
    echo "pyproc.pc made with PC_RPATH= still sets a run path: $(pkg-config --libs pyproc)"
    exit 1
fi
cc build/install-test/app.c $(pkg-config --cflags --libs pyproc) -o "$multi/app"
env -u PYPROC_WORKER LD_LIBRARY_PATH="$libdir" "$multi/app"

# The installed man pages: each function's name opens its group's page.
page=$(MANPATH="$prefix/share/man" man -w pyproc_func)
[ "$page" = "$prefix/share/man/man3/pyproc-calls.3" ] || { echo "man -w pyproc_func: $page"; exit 1; }
MANPATH="$prefix/share/man" MANWIDTH=80 man pyproc_func 2> /dev/null | grep -q "int pyproc_wait(" ||
    { echo "man pyproc_func does not open pyproc-calls(3)"; exit 1; }
echo "installed tree: man pyproc_func opens pyproc-calls(3)"
