/*
 * Frame payloads (shm/frame.h lists them): every payload the host builds
 * for a worker, and every payload of a worker that needs more than
 * pyproc__msg_from_value() to read, in one place.  No other host file
 * writes or reads msgpack bytes of a frame by hand.
 *
 * Readers take a private copy that shm_mp_check() accepted (see
 * host/drain.c): a worker can rewrite its ring at any time, so nothing is
 * read from shared memory here.
 */
#ifndef PYPROC_HOST_WIRE_H
#define PYPROC_HOST_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shm/buf.h"
#include "fmt.h"
#include "pyproc.h"

/* Room for the small fixed payloads below. */
#define PYPROC__WIRE_SMALL 16

/* CANCEL and SHUTDOWN carry nil.  Returns the payload's length. */
size_t pyproc__wire_nil(char out[PYPROC__WIRE_SMALL]);

/* CREDIT: the reader took `items` more stream items.  Returns the length. */
size_t pyproc__wire_credit(char out[PYPROC__WIRE_SMALL], uint32_t items);
/* FORGET: the number of a shared buffer that is gone. */
size_t pyproc__wire_forget(char out[PYPROC__WIRE_SMALL], uint64_t buf_id);

/*
 * CALLBACK_REPLY [true, value] when rc is 0 (value NULL: nil), else
 * [false, text], the text being value's error text or pyproc_strerror(rc).
 * A value that is an error message with rc 0 is answered as -EINVAL.
 * Returns 0, -EMSGSIZE or -ENOMEM.
 */
int pyproc__wire_callback_reply(struct shm_buf *b, int rc, const pyproc_msg *value);

/* ADD_SUB [name, pypath, init].  0, -EMSGSIZE or -ENOMEM. */
int pyproc__wire_add_sub(struct shm_buf *b, const char *name, const char *pypath, bool init);

/* SET_ATTR [ref, value], the value made from fmt and a as
 * pyproc__fmt_encode_value() does. */
int pyproc__wire_set_attr(struct shm_buf *b, const char *ref, const char *fmt,
                          struct pyproc__args *a);

/* ADD_NATIVE [name, library, [[func, signature]...] or nil when decls is
 * NULL]. */
int pyproc__wire_add_native(struct shm_buf *b, const char *name, const char *library,
                            const pyproc_native_decl *decls);

/* An ERROR [errno, type, message, traceback], pointing into the copy it
 * was read from.  A field of another type reads as 0 or "". */
struct pyproc__wire_error {
    uint64_t code;
    const char *type, *message, *traceback;
    uint32_t type_len, message_len, traceback_len;
};

/* Read an ERROR from a checked private copy: 0, or -EBADMSG when it is not
 * an array of four. */
int pyproc__wire_error_read(const char *data, size_t len, struct pyproc__wire_error *ret);

/*
 * A YIELD holds an array32 of items (embed/reply.c writes every batch that
 * way).  From a checked private copy: the item count and where the first
 * item starts; -EBADMSG for any other shape.  Items are stepped over with
 * shm_mp_next().
 */
int pyproc__wire_yield_read(const char *data, size_t len, uint32_t *ret_count,
                            const char **ret_first);

/*
 * MAP_CHUNK [ref, first, array32 of items]: begin writes the head with
 * first and the count left to seal(), which fills them in once the
 * chunk's items (pyproc__fmt_encode_args()) follow; head_len is b->len
 * right after begin.  begin returns 0, -EMSGSIZE or -ENOMEM, leaving b as
 * it was on failure.
 */
int pyproc__wire_chunk_begin(struct shm_buf *b, const char *ref);
void pyproc__wire_chunk_seal(struct shm_buf *b, size_t head_len, uint64_t first, uint32_t count);

/*
 * MAP_ITEMS holds [uint64 busy_ns, array32 of entries] (embed/map.c writes
 * every batch that way): the time, the count and where the first entry
 * starts, from a private copy; -EBADMSG for any other shape.
 */
int pyproc__wire_map_items_read(const char *data, size_t len, uint64_t *ret_busy_ns,
                                uint32_t *ret_count, const char **ret_first);

/* One entry [index, ok, value] of a MAP_ITEMS, checked here as it is
 * read: 0 with *p past it and the value's bytes in *value, *value_len;
 * -EBADMSG for anything else. */
int pyproc__wire_map_entry_read(const char **p, const char *end, uint64_t *index, bool *ok,
                                const char **value, size_t *value_len);

#endif
