/*
 * The frames that host and worker exchange over a ring.
 *
 * A frame is a 16-byte header followed by a msgpack payload, padded so that
 * the next header starts on an 8-byte boundary.  The payload of each type is
 * listed beside it; every payload is one msgpack value.
 */
#ifndef PYPROC_SHM_FRAME_H
#define PYPROC_SHM_FRAME_H

#include <stdint.h>

enum shm_frame_type {
    SHM_FRAME_PAD = 1, /* filler up to the end of the area; no payload   */

    /* host to worker */
    SHM_FRAME_CALL = 16,      /* [kind, ref, [args...], {kwargs}]        */
    SHM_FRAME_CANCEL,         /* nil                                     */
    SHM_FRAME_ADD_SUB,        /* [name, pypath, init]                    */
    SHM_FRAME_SET_ATTR,       /* [ref, value]                            */
    SHM_FRAME_CALLBACK_REPLY, /* [ok, value] or [false, error text]      */
    SHM_FRAME_SHUTDOWN,       /* nil                                     */
    SHM_FRAME_CREDIT,         /* n: the host read n more stream items    */
    SHM_FRAME_ADD_NATIVE,     /* [name, library, [[func, sig]...] or nil] */
    SHM_FRAME_MAP_CHUNK,      /* [ref, first, array32 of [[args...], {kwargs}]] */
    SHM_FRAME_FORGET,         /* n: shared buffer n is gone, unmap it     */

    /* worker to host */
    SHM_FRAME_READY = 32, /* pid                                     */
    SHM_FRAME_RESULT,     /* value                                   */
    SHM_FRAME_ERROR,      /* [errno, type, message, traceback]       */
    SHM_FRAME_YIELD,      /* value                                   */
    SHM_FRAME_END,        /* nil                                     */
    SHM_FRAME_CALLBACK,   /* payload                                 */
    SHM_FRAME_MAP_ITEMS,  /* [busy_ns, array32 of [index, true, value] or
                             [index, false, [errno, type, message, traceback]]] */
};

/* Values of the kind field of a CALL. */
enum shm_call_kind {
    SHM_CALL_FUNC = 0,
    SHM_CALL_GEN = 1,
};

/*
 * A map's chunk (MAP_CHUNK) runs its function once per item, the items
 * numbered first, first + 1, ... in the map's input.  The worker answers
 * with MAP_ITEMS frames, each holding the results of one or more items by
 * index, every item exactly once, and the nanoseconds the worker spent
 * running them (uint64; 0 when it cannot tell), and ends the chunk with END (every item
 * answered) or ERROR (the chunk as a whole failed: an unknown reference,
 * a stop; its unanswered items take that error).
 */

/*
 * Items a stream may have sent but its reader not yet taken.  The worker
 * starts with this much credit; the host gives more back (CREDIT) as its
 * reader takes items.
 */
#define SHM_STREAM_WINDOW 1024

/* Frame flags. */
#define SHM_FRAME_MORE 0x1 /* a fragment: more of this payload follows */

struct shm_frame_header {
    uint32_t len;   /* payload bytes, not counting header or padding */
    uint16_t type;  /* enum shm_frame_type */
    uint16_t flags; /* SHM_FRAME_MORE */
    uint64_t id;    /* call id chosen by the host; 0 when none */
};

#define SHM_FRAME_HEADER_BYTES ((uint64_t)sizeof(struct shm_frame_header))
#define SHM_FRAME_ALIGN 8u

/* True for the types that a host may send, false for anything else. */
static inline int shm_frame_type_to_worker(unsigned type)
{
    return type >= SHM_FRAME_CALL && type <= SHM_FRAME_FORGET;
}

/* True for the types that a worker may send. */
static inline int shm_frame_type_to_host(unsigned type)
{
    return type >= SHM_FRAME_READY && type <= SHM_FRAME_MAP_ITEMS;
}

#endif
