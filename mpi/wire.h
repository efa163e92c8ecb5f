/*
 * What the host's relay (relay.c) and an agent (agent.c) send each other
 * over MPI, and the pieces both ends share.
 *
 * One MPI message is a batch: records laid end to end, each a struct
 * pm_hdr and its payload padded to 8 bytes.  A record is either a whole
 * frame of a worker's ring (PM_FRAME: its type, id and payload, never a
 * fragment) or a control record.  Every frame bound for one destination
 * between two flushes goes in one message, so pipelined calls share the
 * network's per-message cost.
 *
 * Tags: PM_TAG_CTL carries what is not about one pool (a new pool, the
 * agents' exit); each pool's traffic has a tag of its own, so that the
 * relay threads of several pools never take each other's messages.
 *
 * Everything received is untrusted: pm_next() checks every length against
 * the message, the receiver checks each record's kind, type, worker and
 * size, and the frames then go into a ring whose reader checks them as
 * it checks any (host/drain.c on the host, embed/ in a worker).
 */
#ifndef PYPROC_MPI_WIRE_H
#define PYPROC_MPI_WIRE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shm/ring.h"

#define PM_TAG_CTL 32000
#define PM_TAG_POOL_FIRST 30000 /* pools take tags from here on ... */
#define PM_TAG_POOLS 1900       /* ... round, this many apart */

enum pm_kind {
    /* host to agent */
    PM_POOL_NEW = 1, /* on PM_TAG_CTL; id: the pool's tag */
    PM_PARAMS,       /* how to start workers: struct pm_params, then strings */
    PM_SPAWN,        /* id: the worker's index in the pool */
    PM_FRAME,        /* type, id, payload: one whole message of a ring */
    PM_STOPS,        /* payload: the host's stop table, PM_STOP_SLOTS x pm_stop */
    PM_SHUTDOWN,     /* the segment's shutdown word was set */
    PM_KILL,         /* id: a signal */
    PM_POOL_FREE,    /* stop every worker of the pool, then PM_POOL_FREED */
    PM_EXIT,         /* on PM_TAG_CTL: the agent exits; id: how many ranks
                      * the host lost (then MPI_Finalize() is bounded) */
    /* agent to host */
    PM_HELLO = 32, /* id: the node's CPUs; payload: its name */
    PM_STARTED,    /* id: the worker's pid */
    PM_FAILED,     /* id: a positive errno */
    PM_DIED,       /* payload: how it ended, as text */
    PM_OUTPUT,     /* type: 1 stdout, 2 stderr; payload: one line */
    PM_POOL_FREED,
    PM_CREDIT, /* id: the cost (pm_cost()) of every request of the worker
                * written into its ring or dropped so far */
    PM_BEAT,   /* nothing else was sent for PM_BEAT_NS (see below) */
};

struct pm_hdr {
    uint32_t wid; /* the worker, numbered by the host per pool; 0: none */
    uint16_t kind;
    uint16_t type;
    uint64_t id;
    uint64_t len;
};

/* One entry of PM_STOPS: a mirror of struct shm_stop. */
struct pm_stop {
    uint64_t call;
    uint32_t why;
    uint32_t pad;
};

/* PM_PARAMS: these, then five strings each ending in NUL: the pool's
 * name, worker_path, python_path, venv and cwd ("" for none); then nenv
 * more, the workers' environment (has_env 0: the agent's own). */
struct pm_params {
    uint64_t ring_bytes, max_msg, mem_limit;
    int64_t spin_ns;
    int32_t max_fds, no_new_privs;
    uint32_t has_env, nenv;
};

/*
 * Flow control of requests.  The relay sends a worker's requests only
 * while the cost of those sent but not yet credited by the agent is below
 * PM_CREDIT_BOUND(ring_bytes); past it the relay leaves them in the host's
 * request ring, whose writers then wait for room as they would for a
 * local worker.  So the agent queues at most that bound (plus one
 * message) per worker.  The agent returns credit on every batch it sends
 * the host anyway, and in a batch of its own once what it has not yet
 * credited reaches PM_CREDIT_REPORT(ring_bytes): below the bound, so the
 * relay always gets credit for what was written while it waits.
 */
#define PM_CREDIT_BOUND(ring) ((uint64_t)(ring))
#define PM_CREDIT_REPORT(ring) ((uint64_t)(ring) / 4)

/*
 * Liveness.  Open MPI 4.1 under mpirun --enable-recovery keeps the job
 * running when a rank dies, but over TCP tells the others nothing: a send
 * to the dead rank stays pending, a probe finds nothing.  So while an
 * agent runs workers of a pool, it sends that pool's host something at
 * least every PM_BEAT_NS (a PM_BEAT when it had nothing else to say), and
 * the relay gives up on an agent that runs workers of its pool and was
 * not heard from for PM_LOST_MS ($PYPROC_MPI_LOST_MS overrides it): it is
 * never picked again, and its workers die in the core's eyes.  Costs one
 * small message a second per idle pool and agent; none while frames
 * flow.  Generous, since a batch in flight holds back the beats behind it
 * (a large answer over a slow link) and a loaded node may stall an agent:
 * a live agent taken for lost would fail its workers' calls.
 */
#define PM_BEAT_NS 1000000000LL
#define PM_LOST_MS 10000

/* ---- batches ---- */

/* What a record of n payload bytes takes in a batch. */
static inline uint64_t pm_cost(size_t n)
{
    return sizeof(struct pm_hdr) + ((n + 7u) & ~(size_t)7u);
}

struct pm_batch {
    uint8_t *buf;
    size_t len, cap;
};

int pm_batch_add(struct pm_batch *b, uint32_t wid, uint16_t kind, uint16_t type, uint64_t id,
                 const void *payload, size_t n);
void pm_batch_free(struct pm_batch *b);
/* The record at *off of a received batch: 1 with *h and *payload set and
 * *off moved past it, 0 at the end, -EBADMSG for a record that does not
 * fit in the message. */
int pm_next(const uint8_t *buf, size_t len, size_t *off, struct pm_hdr *h, const uint8_t **payload);

/* ---- sending to one destination: one batch filling, one in flight ---- */

struct pm_out {
    int rank;
    struct pm_batch fill, flight;
    MPI_Request req;
};

void pm_out_init(struct pm_out *o, int rank);
/* Send what was filled if nothing is in flight; true while a send is in
 * flight or a batch waits. */
bool pm_out_flush(struct pm_out *o, MPI_Comm comm, int tag);
/* Flush and wait until everything is sent (waits by polling). */
void pm_out_drain(struct pm_out *o, MPI_Comm comm, int tag);
void pm_out_free(struct pm_out *o);

/* A message from source (or MPI_ANY_SOURCE) with tag (or MPI_ANY_TAG)
 * into in, if one is there: 1 with *from and *tag_got set, 0 when none. */
int pm_recv(MPI_Comm comm, int source, int tag, struct pm_batch *in, int *from, int *tag_got);

/* ---- whole messages waiting for room in a ring ---- */

struct pm_msg;
struct pm_queue {
    struct pm_msg *head, *tail;
    uint64_t done; /* pm_cost() of every message written whole so far */
};

int pm_queue_add(struct pm_queue *q, uint16_t type, uint64_t id, const void *payload, size_t n);
/* Write what fits now into r, as a producer that is alone on it: each
 * message in fragments of at most r->max_frag, a message begun finished
 * first.  Wakes the consumer when it wrote something.  1 when something
 * was written, 0 when nothing (or nothing queued), -EPIPE when r is
 * closed. */
int pm_queue_push(struct pm_queue *q, struct shm_ring *r);
bool pm_queue_empty(const struct pm_queue *q);
void pm_queue_clear(struct pm_queue *q);

/* ---- idling: MPI has no fd to sleep on, so its progress is polled ---- */

/*
 * After work, poll without sleeping for PM_SPIN_NS (an answer to what was
 * just sent comes back within it), then sleep in steps that double from
 * PM_SLEEP_MIN_NS up to PM_SLEEP_MAX_NS, and after PM_IDLE_NS with nothing
 * to do, PM_SLEEP_IDLE_NS: an idle end wakes 50 times a second, and the
 * first request after a long idle waits up to that long for the agent.
 * Each wake-up costs Open MPI's progress over TCP, up to some 100 us
 * measured: at 100 a second an idle agent came to 10 ms of CPU a second,
 * the most it may use, on a loaded machine.
 */
#define PM_SPIN_NS 200000
#define PM_SLEEP_MIN_NS 20000
#define PM_SLEEP_MAX_NS 2000000
#define PM_IDLE_NS 1000000000
#define PM_SLEEP_IDLE_NS 20000000

struct pm_idle {
    int64_t busy_ns;  /* when work was last done */
    int64_t sleep_ns; /* the next sleep */
};

/* How long to sleep now (0: poll again at once); busy: work was done. */
int64_t pm_idle_next(struct pm_idle *s, bool busy);

#endif
