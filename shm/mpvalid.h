/*
 * The one msgpack validator that host and worker share.
 *
 * Both sides take msgpack from a peer they do not trust: the host from its
 * workers' reply rings, the worker from the host's request ring.  A value
 * is accepted only when every length it states fits in the bytes given,
 * no byte is the reserved 0xc1, and it nests no deeper than the bytes
 * could hold.  The walk keeps its count of pending values in a size_t that
 * never exceeds the bytes left (each pending value needs at least one), so
 * a 32-bit array length can neither wrap it nor make the walk slow.
 *
 * It reads bytes, never writes them, and decodes nothing: callers validate
 * a private copy first and decode that copy after (a peer could change
 * shared memory between the check and the use).
 */
#ifndef PYPROC_SHM_MPVALID_H
#define PYPROC_SHM_MPVALID_H

#include <stddef.h>

/*
 * Step over the one well-formed value at *p, which must end by `end`.
 * Returns 0 with *p just past it, or -EBADMSG (*p is then undefined).
 */
int shm_mp_next(const char **p, const char *end);

/* 0 when data holds exactly one well-formed value and nothing after it,
 * else -EBADMSG (also for NULL or empty data). */
int shm_mp_check(const void *data, size_t len);

#endif
