/*
 * The host's shared state: pools, workers and calls, with the rules for
 * who writes which field, under which lock or with which atomic order.
 *
 * Threads: any number of application threads make calls; one service
 * thread per pool spawns and reaps workers (it must live as long as the
 * pool, because a worker's PR_SET_PDEATHSIG follows the thread that spawned
 * it) and drains reply rings whenever no caller is polling them.
 *
 * Locks, outer first; a thread holding one takes only locks below it:
 *
 *   pool->grow_lock      pyproc_add_proc(), a replacement (recycle.c),
 *                        across the whole bring-up
 *   template->lock       one exchange with the pool's template (template.c);
 *                        the service thread only tries it; taken under
 *                        grow_lock by pyproc_reload(), never the other way
 *   pool->history_lock   a broadcast (send, wait, keep), and a joining
 *                        worker's catch-up and placing (broadcast.c)
 *   worker->rx_lock      whoever drains the reply ring (drain.c)
 *   pool->lock           slots, history array, service queue, conds
 *   worker->calls_lock, call->qlock, pool->done_lock,
 *   pool->deadline_lock, map->lock (mapq.h)               leaves
 *
 * pools_lock (pool.c, the list of pools that shared buffers find theirs
 * in) is taken by the last pyproc_buf_free() of a buffer, before
 * pool->lock and tx_lock, possibly under rx_lock (a drainer freeing a
 * message); the live set of buffers (shared.c) has a leaf lock of its own,
 * and so has the registry of the threads' free lists (freelist.c), taken
 * only as a thread starts and stops keeping blocks, under any of these.
 * worker->tx_lock and worker->stop_lock are leaves too, held only around
 * one ring write or one post to the stop table, so they may be taken under
 * any of them.  The nestings: grow_lock takes
 * history_lock and everything a call takes; history_lock takes pool->lock
 * (reading the slots and history, placing a worker) and whatever sending
 * and waiting for a call takes, rx_lock included; rx_lock takes
 * pool->lock (READY in drain.c, a CALLBACK queued by
 * pyproc__callback_push()), calls_lock (finding a call), qlock (stream
 * items, a stream's end), done_lock (an asynchronous call's end, a
 * handle's callback due) and deadline_lock (a call with its own deadline
 * ends);
 * pool->lock takes calls_lock (pyproc_stats()).  Nothing takes rx_lock or
 * history_lock while holding pool->lock; the service thread never takes
 * grow_lock or history_lock, and the broadcasts and replays that hold them
 * wait on it.  No lock is held across a wait for a worker: a writer waiting
 * for ring space holds the writer token, not tx_lock (send.c).
 *
 * Sleeping and spinning.  Every wait spins first (the pool's spin_ns),
 * then announces its sleep in the ring's wait word and sleeps; whoever
 * makes it runnable again stores first and checks the word after a
 * seq_cst fence (shm/ring.h), so no wake-up is lost.  What is chosen
 * here is only whether spinning pays, never whether to announce:
 *
 * - A spin that has found nothing for SHM_SPIN_SOLO_NS yields its CPU now
 *   and then (shm_spin_yield()): with more runnable threads than CPUs
 *   (one caller and a pool of two on two CPUs; a saturated pool), the
 *   thread it waits for may be queued behind it.
 * - A caller whose send found the worker asleep (tx's wait word not
 *   SHM_AWAKE) does not spin: the woken worker needs the CPU it would
 *   spin on; it sleeps on the reply ring at once (wait.c).
 * - A caller polls the reply ring while its send wakes the worker
 *   (start.c: a worker woken on the caller's CPU may run and answer at
 *   once), if the send cannot wait (pyproc__send_nowait(); a poller that
 *   waits for ring space drains nothing, and the worker may need its
 *   replies taken to make room).  Pollers above zero keep rx's word
 *   SHM_AWAKE, so an answer that beats the caller to its wait rings no
 *   doorbell.  The last poller re-arms the doorbell with
 *   shm_ring_doorbell_begin(); an answer found then is drained by the
 *   caller, who then tries to arm again; when another drainer holds
 *   rx_lock, or answers keep coming, it rings the doorbell itself and
 *   the service thread drains and arms (pyproc__poll_leave_draining()).
 * - pyproc_func_async() spins for its own answer while it is the pool's
 *   only asynchronous call in flight (async_out), so an event loop that
 *   makes one call at a time finds the pool's fd readable when it polls.
 * - The worker spins for the next request only after a short sleep (the
 *   host sends back to back) and a turn that served one request (a host
 *   that sends batches is busy with the answers before it sends again,
 *   and wants the CPU), and after a spin that did not pay (no
 *   request within its budget: the host is busy elsewhere, and wants the
 *   CPU) sleeps at once but one time in SPIN_PROBE_EVERY; embed/bridge.c.
 *   A spin ends by its budget, not by a guess that the host is busy: two
 *   sides sharing a CPU that sleep and wake each other stay pulled
 *   together on it.  Two that yield to each other stay together too (both
 *   cache-hot), so a worker whose yields keep running someone else moves
 *   itself off that CPU (move_off_this_cpu(), within its own affinity).
 *
 * The order is checked: make check runs the host under ThreadSanitizer,
 * whose lock-order detector (on by default) reports any two locks taken
 * in both orders as a potential deadlock, and a report fails the run.
 */
#ifndef PYPROC_HOST_CORE_H
#define PYPROC_HOST_CORE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../shm/buf.h"
#include "../shm/ring.h"
#include "../shm/segment.h"
#include "fork.h"
#include "lock.h"
#include "pyproc.h"

enum call_state {
    CALL_PENDING = 0,
    CALL_DONE = 1,
    CALL_SLEEPING = 2,      /* pending, and a waiter sleeps on the futex */
    CALL_RING_SLEEPING = 3, /* pending, and its waiter sleeps on the reply
                               ring's futex (see pyproc__call_wait_state) */
};

/*
 * A call outlives its pool (pyproc_pool_free() ends it with -ECANCELED and
 * the handle stays valid), so once it is done it touches neither the pool
 * nor the worker: what it needs afterwards is copied in.
 *
 * Who writes what:
 * - Set once by the starting thread in call_alloc()/call_send() (start.c)
 *   before anyone else can see the call, read-only afterwards: pool,
 *   worker (a reference, dropped by the last unref), index, fork_gen,
 *   spin_ns, is_stream, deadline_ns, stats, done, done_data.  id is set
 *   by pyproc__table_add() under calls_lock, before the frame is sent,
 *   and is read-only afterwards.  The table's calls_lock publishes all of
 *   them to the drainer, and returning the handle to its owner.
 * - refs: see below.
 * - state: see below; the waiting side and pyproc__call_signal() only.
 * - result, ret, ended: written once by whoever completes the call
 *   (pyproc__call_complete(): a drainer, the reaper, pyproc_pool_free()),
 *   under qlock for a stream; published by the release exchange of state
 *   in pyproc__call_signal() (acquire: pyproc__call_done() in call.h), or for an
 *   asynchronous call by pool->done_lock in pyproc__async_push().
 * - taken: the handle's owner only (pyproc_wait(), pyproc_next() under
 *   qlock, pyproc_dispatch()); the last unref reads it after the acq_rel
 *   decrement of refs.
 * - next_done: under pool->done_lock.
 * - expiry, kill_at_ns: the service thread (expire.c); expiry is also
 *   read by pyproc__call_complete().
 * - head, tail: under qlock.  since_credit: the stream's reader only.
 */
struct pyproc_call {
    pyproc_pool *pool;
    struct pp_worker *worker;
    uint64_t id;
    int index;
    unsigned fork_gen;
    int64_t spin_ns;
    /* Two references while the call is in flight: the caller's handle and
     * the worker's call table (one for an asynchronous call: the table's
     * moves to the completed list).  A new reference is taken from one
     * already held (relaxed); the decrement is acq_rel so that the last
     * one, which frees, sees every other holder's writes. */
    _Atomic int refs;
    /* CALL_PENDING until the answer is stored; the release store of
     * CALL_DONE in pyproc__call_signal() pairs with the acquire loads in
     * pyproc__call_done() (call.h).  The waiter moves PENDING to SLEEPING or
     * RING_SLEEPING and back; only pyproc__call_signal() stores DONE (and
     * a stream's reader puts it back to PENDING under qlock). */
    _Atomic uint32_t state;
    int result;      /* 0 or a negative errno, valid once CALL_DONE */
    pyproc_msg *ret; /* the answer, handed to the first pyproc_wait() */
    bool taken;      /* the answer was handed out */

    /* Asynchronous calls: run from pyproc_dispatch() when done. */
    pyproc_done_fn done;
    void *done_data;
    pyproc_call *next_done; /* in pool->completed */

    /*
     * Streams.  The reader takes items under qlock; the drainer appends
     * under qlock and then sets state to CALL_DONE, which for a stream
     * means "look again"; a reader that finds the queue empty puts it back
     * to CALL_PENDING under qlock before it waits.
     */
    bool is_stream;
    /* END or ERROR arrived; result and ret say which.  Stored with release
     * after them in pyproc__call_complete(); pyproc_cancel() and
     * pyproc_call_free() load it with acquire, the stream reader under
     * qlock. */
    _Atomic bool ended;

    /* The pool's call timeout: when it ends the call, and how far the
     * service thread has gone in ending it (see expire.c). */
    int64_t deadline_ns; /* 0: none */
    _Atomic int expiry;  /* EXPIRY_* */
    int64_t kill_at_ns;
    /* A stop (SHM_INTERRUPT_*) that found its worker's stop table full;
     * the service thread posts it when a slot frees (expire.c).  0: none. */
    _Atomic uint32_t stop_want;
    pthread_mutex_t qlock;
    pyproc_msg *head, *tail; /* linked through pyproc__msg_link() */
    /* Under qlock.  held: items the worker sent that we have not yet given
     * credit back for (queued, or taken since the last CREDIT); a batch
     * that would take it past SHM_STREAM_WINDOW breaks the protocol. */
    uint32_t held;
    uint32_t since_credit; /* items taken since the last CREDIT */

    /* Its index's counters, which count its end (see stats.c); NULL for
     * the pool's own requests (add_sub, set_attr, their replay). */
    struct pp_slot_stats *stats;

    /*
     * A callback the handle's owner set (events.c), run from
     * pyproc_dispatch().  cb (CB_*) is set once by the owner with a
     * compare-exchange (acq_rel) after hdone/item_fn and their data, which
     * whoever reads cb with acquire may then use.
     * - notify (NOTIFY_*, calls): the one handshake between the owner
     *   arming a done callback and whoever ends the call; both exchange it
     *   (acq_rel), and the one that comes second queues the call, so it is
     *   queued exactly once.
     * - queued (streams): under qlock; set by whoever queues the stream
     *   for its items, cleared by the dispatcher before it takes them.
     * - cb_freed: stored (release) by pyproc_call_free() before it drops
     *   the handle; the dispatcher loads it (acquire) before each callback
     *   and runs none once it is set.
     * - finished: the dispatcher only (the stream's last callback ran).
     */
    _Atomic int cb;
    _Atomic int notify;
    bool queued;
    _Atomic bool cb_freed;
    bool finished;
    pyproc_done_fn hdone;
    void *hdone_data;
    pyproc_item_fn item_fn;
    void *item_data;
    /* Its own deadline (pyproc_call_deadline()): its place in the pool's
     * heap plus one (0: none), under pool->deadline_lock.  has_deadline
     * is stored (release) once it is in the heap and loaded (acquire) by
     * pyproc__call_complete(), which then takes it out: a deadline set
     * while the call ends stays until it is due, and is dropped then. */
    size_t deadline_slot;
    _Atomic bool has_deadline;
    /* Maps (mapq.h): the handle of a map, or one of its chunks in flight,
     * each with a reference; set before the call is shared, read-only
     * afterwards.  NULL for everything else. */
    struct pp_map *map;
    struct pp_chunk *chunk;
    /* Items pyproc_next_at() handed out of a stream; its reader only. */
    uint64_t items_taken;
};

enum { CB_NONE, CB_DONE, CB_ITEMS };
enum { NOTIFY_NONE, NOTIFY_ARMED, NOTIFY_ENDED };

enum { EXPIRY_NONE, EXPIRY_ASKED, EXPIRY_KILLED };

/* One slot of a worker's call table; ids carry the slot's generation so a
 * late or forged answer never reaches a reused slot. */
struct call_slot {
    pyproc_call *call;
    uint32_t gen;
    uint32_t next_free;
};

/* What an epoll event of the service thread points at. */
struct service_event {
    int kind; /* EV_CONTROL, EV_BELL, EV_PIDFD, EV_STDOUT, EV_STDERR, EV_TEMPLATE */
    struct pp_worker *worker;
};

/*
 * Counters of one worker index, kept by the pool so that they outlive the
 * workers that hold the index in turn.  Each one is bumped with a relaxed
 * atomic add by whoever sees the event (a caller, a drainer, a respawn
 * thread) and read on its own by pyproc_stats(): no ordering between them
 * is promised, so none is needed.  Each index has its own cache line.
 */
struct pp_slot_stats {
    _Alignas(64) _Atomic uint64_t calls;
    _Atomic uint64_t errors;
    _Atomic uint64_t restarts;
    _Atomic uint64_t recycles; /* planned replacements (recycle.c) */
};

/*
 * The read end of a worker's stdout or stderr pipe, and the line being
 * gathered from it.  Service thread only (see output.c).
 */
struct pp_output {
    int fd; /* -1 once closed */
    struct service_event ev;
    char *buf; /* OUTPUT_LINE_MAX + 1 bytes, allocated on first read */
    size_t len;
};

/*
 * A worker process and everything of it on our side.  A respawn makes a
 * new one; the old one lives on, closed, until the last call that points
 * at it is freed: refs counts the pool's slot, each call, and whoever is
 * bringing it up or holds it for a moment (pyproc__pick_worker()).  A
 * pointer read from a slot is used only under pool->lock or after taking
 * a reference under it: a respawn may replace the slot and drop the old
 * worker at any time.
 *
 * Supervision fields:
 *   refs        atomic; taken relaxed (the taker already holds one or
 *               pool->lock), dropped acq_rel so the last dropper sees
 *               every write before freeing.
 *   published   set (seq_cst) once, as the worker is put in a slot,
 *               under pool->lock (by spawn_all() on the service thread
 *               before the pool is handed out); read by drain.c, which
 *               only needs to see it eventually.
 *   ready, ready_ns   written by the drainer on READY under pool->lock,
 *               which is what waiters read them under (with pool->changed);
 *               ready_ns rewritten by the bringer before placing.
 *   dead, death written by pyproc__worker_reap() on the service thread
 *               under pool->lock (death also by give_up() in workers.c);
 *               death read under pool->lock; dead, an atomic that only
 *               goes false to true, read (seq_cst) anywhere as a hint.
 *   pid         written on the service thread (spawn; reap, under
 *               pool->lock); read freely there, under pool->lock
 *               elsewhere (pyproc_stats()).
 *   rank        where a remote worker runs (struct pp_remote): its
 *               agent's MPI rank, -1 for a local worker.  Written by
 *               remote->spawn() before it returns, so before the worker
 *               is placed; constant afterwards (pyproc_stats() reads it
 *               under pool->lock, beside pid).
 *   serving     set by a drainer (relaxed) once a placed worker answered;
 *               read by its respawn thread after the death was reaped.
 *   fast_deaths, replayed   its bringer's (add_proc or respawn thread)
 *               alone, before it is placed; fast_deaths read again only by
 *               the respawn of its own death.
 *   ring_sleeper     exchanged by the caller that takes the role of
 *               sleeping on the reply ring (wait.c); it elects one sleeper
 *               and orders nothing else: relaxed.  The ring's wait word
 *               and its fences order the sleep itself.
 *   pollers     see below; relaxed, re-arming is ordered by the ring.
 *   pidfd, death_w, fd_sock, seg, rings, out   set before it is placed,
 *               then constant until pyproc__worker_free() (rings close, not
 *               change).
 */
struct pp_worker {
    pyproc_pool *pool;
    _Atomic int refs;
    struct service_event bell_ev, pid_ev;
    int64_t ready_ns;          /* when it said READY */
    _Atomic bool published;    /* put in its slot */
    _Atomic bool ring_sleeper; /* a caller sleeps on rx's futex */
    _Atomic bool serving;      /* in its slot and has answered a call since */
    int fast_deaths;           /* deaths in a row soon after start, at this index */
    size_t replayed;           /* history entries sent to it by its bringer */
    int index;
    uint32_t serial; /* unique in its pool; constant (see pool->loop_fd) */
    pid_t pid;
    int rank; /* a remote worker's agent's, -1: local */
    int pidfd;
    int death_w; /* write end of the pipe whose EOF tells the worker we died */
    int fd_sock; /* our end of the socket that passes buffers' fds */
    /* fds of shared buffers it sent that no reply has named yet, with
     * their tokens (send.c); under rx_lock. */
    struct {
        uint64_t token;
        int fd;
    } buf_pending[16];
    int nbuf_pending;
    struct shm_seg seg;
    struct shm_ring tx; /* requests; written by the writer token's holder */
    struct shm_ring rx; /* replies; we consume under rx_lock */
    /*
     * Writers of tx (see send.c).  tx_lock guards tx_busy, tx_free and the
     * outbox, and is never held across a wait for ring space: the token
     * (tx_busy) is, for every fragment of one message.
     */
    pthread_mutex_t tx_lock;
    bool tx_busy;           /* a thread holds the writer token */
    pthread_cond_t tx_free; /* the token or the outbox moved (CLOCK_MONOTONIC) */
    struct pp_outbox *outbox_head, *outbox_tail; /* frames not yet written */
    uint32_t outbox_ctl;                         /* control frames among them */
    /* Callbacks of this worker queued, running or with a reply in the
     * outbox; bounded by PYPROC__CALLBACK_QUEUE_MAX (drain.h). */
    _Atomic int cb_queued;
    pthread_mutex_t rx_lock;
    /* Guards the host's side of the segment's stop table (stop.c): held
     * only while it scans and fills it, never while waiting on the worker.
     * stop_posted[i] is the stop_seq that slot i's entry was posted with. */
    pthread_mutex_t stop_lock;
    uint64_t stop_posted[SHM_STOP_SLOTS];
    /* Callers spinning on rx right now.  While it is above zero the ring
     * says SHM_AWAKE, so the worker rings no doorbell; the last poller to
     * leave re-arms it (see pyproc__poll_leave()). */
    _Atomic int pollers;
    /*
     * A poller that stays one across its calls (a busy map's reader, see
     * chan.h): lease_owner names it (0: none), swapped by compare and
     * exchange, by it and by the service thread, which takes the lease
     * back from an owner whose lease_beat (the owner's, relaxed) stood
     * still for a whole check; the taker's exchange and the service
     * thread's load of it are seq_cst, with pool->leases.  lease_seen is
     * the beat it saw last (service thread only).
     */
    _Atomic uintptr_t lease_owner;
    _Atomic uint64_t lease_beat;
    uint64_t lease_seen;
    _Atomic bool ready;
    _Atomic bool dead;
    char *death; /* how it died, once dead */

    struct pp_output out[2]; /* its stdout and stderr */

    /* Service thread only: in the epoll set, and on the pool's list of
     * workers with replies left after their last batch (see service.c). */
    bool watched;
    bool busy;
    struct pp_worker *busy_next;
    /* Service thread only: doorbells after which the ring's consumed
     * position (bell_head when last seen) had not moved, in a row; too
     * many, and the doorbell is left unwatched until unmute_ns, on the
     * pool's list of muted workers. */
    bool rang;
    unsigned idle_bells;
    uint64_t bell_head;
    bool bell_muted;
    int64_t unmute_ns;
    struct pp_worker *muted_next;

    struct pp_slot_stats *stats; /* its index's, owned by the pool */

    /* A leaf, held for a few instructions; nothing waits on it with a
     * condition (lock.h). */
    struct pp_lock calls_lock;
    struct call_slot *slots;
    uint32_t nslots;
    uint32_t free_head; /* UINT32_MAX: none */
    /* Calls in the table: written under calls_lock; read without it as a
     * hint by the round robin that prefers the least loaded worker
     * (pyproc__pick_worker()), so relaxed both ways. */
    _Atomic uint32_t in_flight;
    /* Set under calls_lock by pyproc__table_take_next(), when the worker
     * died or the pool is freed, or by pyproc__table_close_idle() when a
     * retired worker has no call left: the table takes no call after
     * that, so none can wait there for an end that was already handed
     * out. */
    bool calls_closed;
    /* Closed by pyproc__table_close_idle(), under calls_lock: a sender
     * that picked the worker before it left its slot picks again. */
    bool calls_retired;

    /*
     * Planned replacement (recycle.c).
     *   retiring    set under pool->lock by the thread that replaces it
     *               (or removes its index), before it starts the
     *               replacement; cleared under pool->lock only if the
     *               replacement failed and it keeps its slot.  Read under
     *               pool->lock by the pickers (start.c), which route no
     *               new call to it, and as a hint by maps' picks.
     *               pool->changed is broadcast on every change.
     *   calls_started  application calls sent to it; relaxed adds by the
     *               callers, read relaxed by the pickers and the service
     *               thread (max_calls_per_worker, a hint).
     *   recycle     RECYCLE_*: exchanged (relaxed) by the service thread
     *               that starts a recycle and the thread that ends it.
     *   recycle_after_ns  no recycle before it (one failed); written by
     *               the recycle thread, read by the service thread,
     *               relaxed: a stale value only moves a retry.
     *   retired_next  in pool->retired, under pool->lock.
     */
    _Atomic bool retiring;
    _Atomic uint64_t calls_started;
    _Atomic int recycle;
    _Atomic int64_t recycle_after_ns;
    struct pp_worker *retired_next;
};

enum { RECYCLE_NONE, RECYCLE_RUNNING };

/*
 * A pool.  Constant after pyproc_pool_new() returns: name, id, owner_pid,
 * fork_gen, the options, the counters' array bar its growth.  Guarded by
 * lock: nworkers and workers (the slots), which grow only in
 * pyproc__workers_add_one() (add_proc, resize), shrink only in
 * pyproc_resize() (recycle.c), and change otherwise only when a respawn
 * or a planned replacement places a worker (pyproc__worker_publish() in
 * workers.c); all of them also hold history_lock for it, so a broadcast
 * sees a fixed set of slots, and all but the respawn hold grow_lock.  Whoever reads a slot takes a
 * reference before it lets go of lock (pyproc__pick_worker()).  closing
 * is true while the pool starts (no respawn before every worker started
 * once), false from the end of pyproc_pool_new() until
 * pyproc_pool_free() sets it again, first of all; written under lock,
 * with changed broadcast.  A respawn places nothing once it is set, so
 * pyproc_pool_free() and pool_destroy() then read settled slots.
 * respawning counts respawn threads, under lock; pyproc__respawn_wait()
 * waits for it to reach zero on changed.
 */
struct pp_service_ops;

/*
 * Workers that are not local processes (mpi/, remote.h): the pool's
 * transport starts them, signals them and says how they died.  NULL for
 * a local pool.  Such a worker has a segment in this process like any
 * other, which the transport moves frames in and out of; its pidfd is an
 * eventfd the transport makes readable when the worker is gone.
 */
struct pp_remote {
    /* After the segment and doorbells are set up: start the worker,
     * setting w->pid (> 0), w->pidfd and w->rank.  0 or -errno. */
    int (*spawn)(pyproc_pool *p, struct pp_worker *w);
    /* What pidfd_send_signal() does for a local worker. */
    void (*signal)(struct pp_worker *w, int sig);
    /* Once w->pidfd is readable, or to give up on it: how it ended
     * (malloc'd, may be NULL). */
    char *(*reap)(struct pp_worker *w);
    /* The pool is being destroyed: every worker reaped, the library's
     * threads stopped, its fields (name, output function) still whole. */
    void (*fini)(pyproc_pool *p);
};

struct pyproc_pool {
    char *name;
    uint64_t id;                   /* unique in the process: its buffers name it */
    struct pyproc_pool *next_pool; /* in the list of pools (pool.c), under pools_lock */
    pid_t owner_pid;
    unsigned fork_gen;
    int nworkers;
    struct pp_worker **workers;
    unsigned next; /* round robin, under lock (pyproc__pick_worker()): the
                      next slot, below nworkers but for a shrink since */
    pyproc_callback_fn callback;
    void *callback_data;
    char *worker_path;
    char *python_path; /* absolute entries */
    char *venv;        /* absolute, or NULL */
    uint64_t ring_bytes;
    uint64_t max_msg;
    int64_t spin_ns;
    int start_timeout_ms;
    int64_t call_timeout_ns;
    uint32_t map_window;    /* items a map may have pushed and unread */
    int64_t next_expire_ns; /* service thread only */
    /* Some call has a stop_want waiting for room: the service thread
     * ticks even without a call timeout.  Set after the stop_want, and
     * cleared by the service thread before it scans (expire.c). */
    _Atomic bool stops_waiting;

    /* How workers are started (see spawn.c). */
    char **env; /* NULL: the host's environ */
    char *cwd;  /* NULL: the host's */
    uint64_t mem_limit;
    int max_fds;
    bool no_new_privs;
    pyproc_output_fn output; /* NULL: the host's stderr */
    void *output_data;
    /* The template that forks workers (template.c), or NULL: each is
     * exec'd.  Set before the service thread starts. */
    struct pp_template *tmpl;
    /* Wired by pool.c: import a PYPROC_SUB_PRELOAD sub in the template. */
    void (*preload)(pyproc_pool *p, const char *name, const char *pypath);

    /* Counters per worker index; the array of pointers grows under lock,
     * the counters themselves never move (see stats.c). */
    struct pp_slot_stats **slot_stats;
    int nslot_stats;

    pthread_mutex_t lock;   /* guards what follows */
    pthread_cond_t changed; /* a worker became ready or died */

    /* The service thread. */
    pthread_t service;
    bool service_running;
    const struct pp_service_ops *service_ops; /* set before the thread starts */
    int epfd;
    int control_fd;           /* eventfd: commands waiting */
    struct service_cmd *cmds; /* queue, under lock */
    /* Workers whose reply rings still hold frames after a batch; service
     * thread only. */
    struct pp_worker *busy_head, *busy_tail;
    struct pp_worker *muted_head; /* service thread only */
    bool stopping;
    bool closing;   /* pyproc_pool_free() began: no more respawns */
    int respawning; /* respawn threads running, under lock */

    /* Every add_sub, add_native and set_attr so far, replayed to new
     * workers.  Appended by the holder of history_lock, under lock too;
     * read under lock.  An entry's payload never moves or goes until the
     * pool is freed. */
    struct history_entry *history;
    size_t nhistory;
    /* Makes a broadcast and a joining worker's catch-up and placing one
     * step each (see broadcast.c).  Slots are added only under it. */
    pthread_mutex_t history_lock;
    pthread_mutex_t grow_lock; /* one add_proc at a time */

    /* Asynchronous calls started and not yet on the completed list:
     * added (relaxed) as one is started, taken off as it is pushed or
     * dropped (start.c, call.c).  A hint for the starter's choice to spin
     * for its answer, ordering nothing. */
    _Atomic int async_out;
    /* Finished asynchronous calls, and handles whose callbacks are due,
     * waiting for pyproc_dispatch(). */
    pthread_mutex_t done_lock;
    pyproc_call *completed, *completed_tail;
    int done_fd; /* eventfd, written when a dispatch is not yet due */
    /*
     * Under done_lock: a pyproc_dispatch() is bound to take the completed
     * list after now, because done_fd was written since the last take
     * (the loop is woken for it) or because one is running and has not
     * taken it yet.  A push then needs no write of its own (async.c).
     */
    bool done_due;
    /* Whether the last asynchronous call that spun for its answer caught
     * it: the next one then signals done_fd before it spins, while the
     * worker works (pyproc__async_expect()).  A hint; relaxed. */
    _Atomic bool spin_caught;
    /*
     * The pool's fd for event loops (pyproc_pool_fd()): an epoll set of
     * done_fd and every watched worker's reply doorbell, edge-triggered,
     * so that a worker's answer wakes the loop itself, with no thread
     * between (see async.c).  Constant; its members change with the
     * service thread's (service.c).
     */
    int loop_fd;
    /* The next worker's serial (pyproc__worker_alloc()), which the loop's
     * events name workers by; relaxed, it orders nothing. */
    _Atomic uint32_t next_serial;

    /* Calls' own deadlines (pyproc_call_deadline()), a binary min-heap by
     * time, each entry holding a reference to its call; the service
     * thread ends those that come due (events.c).  A leaf lock. */
    pthread_mutex_t deadline_lock;
    struct pp_deadline *deadlines;
    size_t ndeadlines, deadlines_cap;

    /* Set (release) by pyproc_drain(); from then on no new call starts
     * (pyproc__pool_accepting(), acquire).  starting: calls between that
     * check and their worker's table (pyproc__call_start_ex()), which
     * pyproc_drain() waits for too; both seq_cst there (see start.c). */
    _Atomic bool draining;
    _Atomic int starting;

    /*
     * Recycling and retirement (recycle.c).  max_calls, max_rss: constant
     * options (0: no limit).  retired: workers taken out of their slot by
     * a recycle, a reload or a shrink, still finishing their calls, each
     * with the reference its slot had; under lock.  recycle_check: set
     * (relaxed) by a caller whose call reached max_calls, after which it
     * kicks the service thread, which exchanges it and looks; the kick's
     * eventfd orders it.  next_check_ns: service thread only.
     * dispatch_blind: blind round robin instead of the least loaded, set
     * before calls start (the bench's comparison; not public).
     */
    uint64_t max_calls;
    uint64_t max_rss;
    struct pp_worker *retired;
    _Atomic bool recycle_check;
    int64_t next_check_ns;
    /* Some worker's lease may be held (chan.h): set by a taker after it
     * took one, cleared by the service thread before it looks at them,
     * both seq_cst, so that it sees the lease or the taker kicks it.
     * next_lease_ns: the service thread's next look. */
    _Atomic bool leases;
    int64_t next_lease_ns;
    bool dispatch_blind;

    /* Set before the service thread starts, constant afterwards. */
    const struct pp_remote *remote; /* NULL: local worker processes */
    void *remote_data;

    /* Callbacks from workers, answered on their own thread. */
    pthread_t cb_thread;
    bool cb_running, cb_stopping;
    pthread_cond_t cb_cond; /* under lock */
    struct callback_req *cb_head, *cb_tail;
};

struct pp_deadline {
    int64_t at; /* shm_now_ns() clock */
    pyproc_call *call;
};

struct history_entry {
    uint16_t type;
    struct shm_buf payload;
};

/* A worker's request for the host's callback; in pool->cb_head's queue
 * under pool->lock, then the callback thread's alone. */
struct callback_req {
    struct callback_req *next;
    struct pp_worker *worker; /* a reference, dropped when answered */
    uint64_t id;
    pyproc_msg *payload;
};

/* How pool->loop_fd's events name a worker's doorbell: its index and
 * serial, looked up in the slots, since a pointer could outlive the
 * worker between epoll_wait() and its use.  done_fd is PYPROC__LOOP_DONE. */
#define PYPROC__LOOP_DONE UINT64_MAX
static inline uint64_t pyproc__loop_key(const struct pp_worker *w)
{
    return (uint64_t)w->serial << 32 | (uint32_t)w->index;
}

/* 0 when the pool may be used from this process, else -EINVAL / -ECHILD
 * (a forked child's copy of the parent's pool). */
static inline int pyproc__pool_check(pyproc_pool *p)
{
    if (!p)
        return -EINVAL;
    return p->fork_gen != pyproc__fork_gen() ? -ECHILD : 0;
}

/* pyproc__pool_check(), and -ESHUTDOWN once the pool drains: for whatever
 * would start work in the workers. */
static inline int pyproc__pool_accepting(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);

    if (err == 0 && atomic_load_explicit(&p->draining, memory_order_acquire))
        err = -ESHUTDOWN;
    return err;
}

#endif
