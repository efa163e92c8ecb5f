/*
 * pyproc_buf_new(): a shared buffer for a pool's calls (see shared.h; the
 * rest of the buffer API lives there, since a buffer outlives its pool).
 */
#include <errno.h>

#include "feature.h"

PYPROC_EXPORT int pyproc_buf_new(pyproc_pool *p, size_t size, pyproc_buf **ret)
{
    int err = pyproc__pool_check(p);

    return err < 0 ? err : pyproc__buf_create(p->id, size, ret);
}
