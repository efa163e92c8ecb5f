/*
 * Messages (pyproc_msg): one msgpack value, or the text of an error.  The
 * public functions are documented in pyproc.h; these are the constructors
 * and checks that the rest of the host uses.
 */
#ifndef PYPROC_HOST_MSG_H
#define PYPROC_HOST_MSG_H

#include <stddef.h>

#include "../shm/buf.h"
#include "pyproc.h"

/*
 * A message holding a copy of the value in data, which must be exactly one
 * well-formed value.  Returns 0, -EINVAL (NULL pointers), -EBADMSG or
 * -ENOMEM.
 */
int pyproc__msg_from_value(pyproc_msg **ret, const void *data, size_t len);

/*
 * The same for a value the caller has checked already, in memory nobody
 * else writes (a stream item inside a checked private copy): copied
 * without a second check.  Returns 0, -EINVAL or -ENOMEM.
 */
int pyproc__msg_from_checked(pyproc_msg **ret, const void *data, size_t len);

/*
 * A message that adopts b's bytes, which the caller has already checked or
 * encoded itself, without copying them; b is left empty (its limit kept).
 * Returns 0, -EINVAL (NULL pointers), -EBADMSG (b empty) or -ENOMEM, which
 * leaves b alone.
 */
int pyproc__msg_take_buf(pyproc_msg **ret, struct shm_buf *b);

/*
 * Messages made in bulk (a map's answers, a batch at a time): one
 * allocation holds a private copy of the batch's bytes and up to n
 * messages, each one value inside the copy.  Each message is freed with
 * pyproc_msg_free() as any other, in any order and on any thread; the
 * block goes with the last of them and its maker's reference.
 *
 * new copies len bytes from data (NULL: -ENOMEM); bytes() says where the
 * copy is, which the maker checks and parses (never data).  take makes
 * the next message of the len bytes at value, which must lie in the copy
 * and be one checked value: 0, or -ENOSPC when n were taken.  done drops
 * the maker's reference (NULL: nothing).
 */
struct pyproc__msg_block;
struct pyproc__msg_block *pyproc__msg_block_new(const void *data, size_t len, uint32_t n);
const char *pyproc__msg_block_bytes(const struct pyproc__msg_block *k);
int pyproc__msg_block_take(struct pyproc__msg_block *k, const char *value, size_t len,
                           pyproc_msg **ret);
void pyproc__msg_block_done(struct pyproc__msg_block *k);

/* A link field for queues of messages that the library keeps (a stream's
 * unread items), so queueing costs no allocation. */
pyproc_msg **pyproc__msg_link(pyproc_msg *m);

/*
 * Take in the shared buffers that m's value (a worker's) names: for each
 * one, take(ctx, token, offset, length, &buf) gives a buffer reference or
 * a negative errno, and the token in m's data is replaced by the
 * buffer's index in m, which then holds the references.  0; the first
 * error of take; -EBADMSG; -ENOMEM.  On failure m still holds the buffers
 * taken so far and is to be freed.
 */
typedef int (*pyproc__buffer_fn)(void *ctx, uint64_t token, uint64_t off, uint64_t len,
                                 pyproc_buf **ret);
int pyproc__msg_take_buffers(pyproc_msg *m, pyproc__buffer_fn take, void *ctx);

/* An error message with the printf-formatted text.  0, -EINVAL or -ENOMEM. */
int pyproc__msg_error(pyproc_msg **ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
