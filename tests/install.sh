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
