/*
 * A map chunk's item results.  As for every reply (see drain.c), the
 * payload is copied out of the ring first and only the copy is read: the
 * walk over its entries checks each one (pyproc__wire_map_entry_read())
 * before it decodes it, and the answers' messages point into one block
 * that holds the copy (msg.h), so that a frame of a thousand answers
 * costs one allocation, not a thousand.  An entry must answer an item of the frame's own chunk that
 * is still waiting, so a worker can neither answer twice nor reach
 * another chunk's or map's items, and the map's memory stays within its
 * window whatever the worker sends.
 */
#include <errno.h>
#include <stdlib.h>

#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "chunk.h"

/* An item's error [errno, type, message, traceback], as the error of a
 * failed call reads (see drain.c): the text, and the result. */
static int item_error(const char *data, size_t len, pyproc_msg **ret)
{
    struct pyproc__wire_error e;

    if (pyproc__wire_error_read(data, len, &e) < 0)
        return -EBADMSG;
    pyproc__msg_error(ret, "%.*s: %.*s%s%.*s", (int)e.type_len, e.type, (int)e.message_len,
                      e.message, e.traceback_len ? "\n" : "", (int)e.traceback_len, e.traceback);
    switch (e.code) {
    case ENOENT:
        return -ENOENT;
    case EMSGSIZE:
        return -EMSGSIZE;
    case ECANCELED:
        return -ECANCELED;
    case ETIMEDOUT:
        return -ETIMEDOUT;
    default:
        return PYPROC_EREMOTE;
    }
}

/*
 * Walk the checked-as-we-go entries of the frame's private copy (data,
 * len) into k's slots, a batch of answers under each lock.  The values
 * are copied once more, all together, into a block that the answers'
 * messages point into (msg.h): one allocation per frame, not per item.
 */
static int deliver(struct pp_chunk *k, const char *data, size_t len)
{
    struct pyproc__msg_block *blk;
    const char *p, *end;
    struct pp_answer a[64];
    uint64_t busy_ns;
    uint32_t n, na = 0;
    int err = 0;

    /* Each entry takes 4 bytes at least, and answers one of the chunk's
     * items: a count past either is a lie (and would size the block). */
    if (pyproc__wire_map_items_read(data, len, &busy_ns, &n, &p) < 0 ||
        n > (size_t)(data + len - p) / 4 || n > k->count)
        return -EBADMSG;
    if (!(blk = pyproc__msg_block_new(data, len, n)))
        return -ENOMEM;
    pyproc__chunk_measure(k, busy_ns, n);
    p = pyproc__msg_block_bytes(blk) + (p - data);
    end = pyproc__msg_block_bytes(blk) + len;
    for (uint32_t i = 0; i < n && err == 0; i++) {
        const char *value;
        size_t vlen;
        bool ok;
        struct pp_answer *an = &a[na];

        an->msg = NULL;
        an->result = 0;
        if (pyproc__wire_map_entry_read(&p, end, &an->index, &ok, &value, &vlen) < 0) {
            err = -EBADMSG;
            break;
        }
        if (ok)
            err = pyproc__msg_block_take(blk, value, vlen, &an->msg);
        else if ((an->result = item_error(value, vlen, &an->msg)) == -EBADMSG)
            err = -EBADMSG;
        if (err < 0) {
            pyproc_msg_free(an->msg);
            break;
        }
        if (++na == sizeof a / sizeof a[0]) {
            err = pyproc__chunk_store(k, a, na);
            na = 0;
        }
    }
    if (na) {
        int e = pyproc__chunk_store(k, a, na);
        err = err ? err : e;
    }
    pyproc__msg_block_done(blk);
    if (err == 0 && p != end)
        err = -EBADMSG;
    return err;
}

int pyproc__chunk_deliver(struct pp_worker *w, struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_find(w, m->id);
    int err = 0;

    if (!c)
        return 0; /* its map was freed */
    if (!c->chunk)
        err = -EBADMSG; /* only a chunk is answered this way */
    else if ((err = pyproc__chan_copy_out(w, m)) == 0)
        err = deliver(c->chunk, (const char *)m->payload, m->len);
    if (c->chunk)
        pyproc__map_wake(c->chunk->map);
    pyproc__call_unref(c);
    return err;
}
