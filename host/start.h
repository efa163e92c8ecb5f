/*
 * Starting calls and waiting for them: pick a worker, encode, register,
 * send (start.c); spin, drain, sleep (wait.c).
 *
 * Floor 4 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_START_H
#define PYPROC_HOST_START_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "call.h"
#include "shared.h"

/* The worker at ind, or the next live one round robin when ind is -1;
 * a new reference, or NULL for a bad index. */
struct pp_worker *pyproc__pick_worker(pyproc_pool *p, int ind);
/*
 * Work that pyproc_drain() must wait for: begin before the pool's check
 * (0, or -ESHUTDOWN once it drains, or pyproc__pool_check()'s error), end
 * once its calls are in their workers' tables.  pool->starting counts it
 * in between, seq_cst against draining (see pyproc__call_start_ex()).
 */
int pyproc__work_begin(pyproc_pool *p);
void pyproc__work_end(pyproc_pool *p);
int pyproc__call_start(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                       va_list ap, pyproc_call **ret);
/* The same, completing through `done` (then ret may be NULL). */
int pyproc__call_start_ex(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                          va_list ap, pyproc_done_fn done, void *data, pyproc_call **ret);
/* Encode a CALL into this thread's buffer, valid until its next call.
 * With att, the buffers it passes ('B') are collected there (this
 * thread's too); without, 'B' is -EINVAL. */
int pyproc__encode_call(pyproc_pool *p, int kind, const char *ref, const char *fmt, va_list ap,
                        struct shm_buf **ret, struct pyproc__attach **att);
/* Send a control request (ADD_SUB, SET_ATTR) to one worker as a call;
 * the send may wait for ring space as long as it takes (application
 * threads). */
int pyproc__call_send_raw(struct pp_worker *w, uint16_t type, const struct shm_buf *payload,
                          pyproc_call **ret);
/* The same, the send giving up at deadline (shm_now_ns()): -ETIMEDOUT.
 * For pool threads (respawn's replay). */
int pyproc__call_send_raw_until(struct pp_worker *w, uint16_t type, const struct shm_buf *payload,
                                int64_t deadline, pyproc_call **ret);

/* Send a map's chunk k (MAP_CHUNK payload) to w as a call that carries
 * k; as pyproc__call_send_raw() otherwise. */
struct pp_chunk;
int pyproc__chunk_send(struct pp_worker *w, const struct shm_buf *payload, struct pp_chunk *k,
                       pyproc_call **ret);

/* Stop polling w's replies (pyproc__poll_enter()) from an application
 * thread, leaving the doorbell armed or rung: what came meanwhile is
 * drained here or handed to the service thread. */
void pyproc__poll_leave_draining(struct pp_worker *w);
/* Spin up to c's spin budget for its end, draining the reply ring when
 * nobody else does; for an asynchronous call, whose end goes to the
 * completion queue.  When the last such spin caught its answer, the loop
 * is woken first (pyproc__async_expect()), while the worker works.  True
 * when it ended. */
bool pyproc__call_spin(pyproc_call *c);
/* Wait until c is done or the deadline (INT64_MAX: none). */
bool pyproc__call_wait_state(pyproc_call *c, int64_t deadline);
/* Wait up to timeout_ms (-1: forever) and take c's answer: its result,
 * with the message in *ret (may be NULL); -ETIMEDOUT, -EALREADY. */
int pyproc__call_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms);

#endif
