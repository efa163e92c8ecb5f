/*
 * The host's end of a pool over MPI.
 *
 * Design.  A remote worker is an ordinary struct pp_worker: the host core
 * (calls, streams, callbacks, cancel, timeouts, replay, respawn) runs on
 * it unchanged, since it only ever reaches a worker through its segment
 * (host/chan.h).  The segment lives in this process alone, and a relay
 * thread per pool plays the worker's part on it: it reads whole messages
 * from the request ring and sends them to the worker's agent, and writes
 * what the agent sends back into the reply ring, waking the host's
 * readers as a worker would.  Its stop table and shutdown word are
 * mirrored to the agent, which writes them into the real worker's
 * segment.  The worker's pidfd is an eventfd that the relay makes
 * readable when the agent reports the death, so the service thread's
 * usual reap, fail and respawn path runs; the text of the death (exit
 * status, node) is what the calls in flight fail with.
 *
 * Per call: host ring -> relay -> MPI -> agent -> worker ring, and back:
 * the relay and the agent move frames only, decoding no payload; every
 * frame bound for one agent since the last flush goes in one MPI message.
 * MPI has no fd to sleep on, so the relay polls it: at once while there
 * is work, then in doubling sleeps (wire.h) in an epoll that the request
 * rings' doorbells also wake.
 *
 * The workers' output lines go to a thread of their own (lines.h), which
 * calls the pool's output function holding no lock of ours.
 *
 * An agent that dies under mpirun --enable-recovery is not reported by
 * MPI, so the relay gives up on an agent silent for pm->lost_ns while it
 * runs workers of the pool (wire.h): its workers die as if it had
 * reported their deaths, with a text naming its rank and node, it is
 * never picked again, and what was in flight to it is let go.  Its rank
 * is lost to every pool of the process and to pyproc_mpi_shutdown().
 *
 * Locking: pm->lock guards the list of workers and everything in them and
 * the agents' batches being filled; the relay holds it for a pass over
 * the rings, never across a sleep; the hooks (spawn, signal, reap) take
 * it briefly.  It is taken under nothing of the host core's but the
 * service thread's (which holds no lock when it spawns or reaps), and
 * under rx_lock by a drainer that condemns a worker (signal).  A remote
 * worker's pid (the agent's word for it, for stats) is written by the
 * relay under pm->lock before the spawner, which waits on it, returns it
 * to the core: from then on it is the core's, as any worker's pid.  Its
 * rank (its agent's) is written by the spawner itself as it picks the
 * agent, before the core places the worker.  The output queue's lock is
 * taken under pm->lock, and under nothing else.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../host/chan.h"
#include "../host/remote.h"
#include "../shm/segment.h"
#include "lines.h"
#include "pyproc-mpi.h"
#include "wire.h"

/* One remote worker, under pm->lock. */
struct rec {
    struct rec *next;
    struct pp_worker *w; /* a reference */
    uint32_t wid;
    int agent;
    struct shm_ring req, rep; /* the worker's side of w's rings */
    struct pm_queue replies;  /* received, waiting for room in rep */
    uint64_t sent, credited;  /* pm_cost() of requests sent; of those credited */
    uint64_t stops_sent;      /* stop_seq mirrored last */
    bool shutdown_sent;
    int kill_sig; /* a signal to send, 0: none */
    int started;  /* 0 until the agent answers SPAWN; 1, or -errno */
    bool dead;    /* reported (or given up on): nothing more moves */
    char *death;
    bool reaped; /* the core took the death: drop it */
};

struct agent {
    int rank;
    int cpus;
    char node[64];
    bool params_sent;
    bool freed;       /* answered PM_POOL_FREE; relay thread only */
    bool lost;        /* given up on (wire.h): never picked, never heard;
                       * written by the relay under pm->lock */
    bool told_exit;   /* lost, then heard from: sent PM_EXIT; relay thread */
    int64_t heard_ns; /* when it last sent, or had nothing to run, or the
                       * relay started: relay thread (meet_agents() before) */
    bool owes_spawn;  /* asked PM_SPAWN, not heard from since: it owes an
                       * answer; under pm->lock */
    struct pm_out out;
};

struct pm_pool {
    pyproc_pool *p;
    MPI_Comm comm;
    int tag;
    int nagents;
    struct agent *agents;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a worker started or failed to */
    struct rec *recs;
    uint32_t next_wid;
    int epfd, wake_fd;
    pthread_t thread;
    bool running;
    _Atomic bool stopping;
    int64_t checked_ns;     /* the agents' liveness last looked at; relay thread */
    int64_t lost_ns;        /* an agent silent this long is lost; constant */
    int64_t worker_spin_ns; /* opts.spin_us, for the remote workers */
    struct pm_batch in;
    struct pm_idle idle;
    struct pm_lines lines; /* the workers' output, passed on by its thread */
};

/* A remote worker's spin without opts.spin_us: a local pool's default. */
#define PM_WORKER_SPIN_US 50

static atomic_uint next_tag;

static void wake(struct pm_pool *pm)
{
    uint64_t one = 1;
    if (write(pm->wake_fd, &one, sizeof one) < 0) {
        /* A full counter wakes the relay as well. */
    }
}

static struct rec *rec_of(struct pm_pool *pm, const struct pp_worker *w)
{
    for (struct rec *r = pm->recs; r; r = r->next)
        if (r->w == w)
            return r;
    return NULL;
}

static struct rec *rec_by_wid(struct pm_pool *pm, uint32_t wid)
{
    for (struct rec *r = pm->recs; r; r = r->next)
        if (r->wid == wid)
            return r;
    return NULL;
}

/* ---- what the agents send ---- */

/* The agent's account is the last word: mark r dead and ring its pidfd. */
static void rec_died(struct pm_pool *pm, struct rec *r, char *why)
{
    uint64_t one = 1;

    if (r->dead) {
        free(why);
        return;
    }
    r->dead = true;
    r->death = why;
    pm_queue_clear(&r->replies);
    if (r->started == 0)
        r->started = -ECHILD;
    pthread_cond_broadcast(&pm->changed);
    if (write(r->w->pidfd, &one, sizeof one) < 0) {
        /* Readable already. */
    }
}

static char *died_text(struct pm_pool *pm, struct rec *r, const uint8_t *s, size_t n)
{
    char *t = NULL;
    if (asprintf(&t, "%.*s on node %s (rank %d)", (int)(n > 512 ? 512 : n), (const char *)s,
                 pm->agents[r->agent].node, pm->agents[r->agent].rank) < 0)
        return NULL;
    /* Text from the network goes to stderr and into error messages: no
     * control characters. */
    for (char *c = t; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = '?';
    return t;
}

/* One record from agent a: checked, then acted on.  Under pm->lock. */
static void take_record(struct pm_pool *pm, int a, const struct pm_hdr *h, const uint8_t *pl)
{
    struct rec *r = h->wid ? rec_by_wid(pm, h->wid) : NULL;

    if (h->kind == PM_POOL_FREED) {
        pm->agents[a].freed = true;
        return;
    }
    if (!r || r->agent != a || r->dead)
        return; /* a worker since reaped, or nonsense: nothing to do */
    switch (h->kind) {
    case PM_FRAME:
        if (shm_frame_type_to_host(h->type) && h->len <= pm->p->max_msg)
            pm_queue_add(&r->replies, h->type, h->id, pl, h->len);
        else
            r->kill_sig = SIGKILL; /* as a worker breaking the protocol */
        break;
    case PM_CREDIT:
        /* Clamped: credit for more than was sent only ends the wait. */
        if (h->id > r->credited)
            r->credited = h->id < r->sent ? h->id : r->sent;
        break;
    case PM_STARTED:
        r->started = 1;
        r->w->pid = h->id > 0 && h->id < INT32_MAX ? (pid_t)h->id : 1;
        pthread_cond_broadcast(&pm->changed);
        break;
    case PM_FAILED:
        r->started = h->id > 0 && h->id < 4096 ? -(int)h->id : -EIO;
        /* Dead already: no later loss of its agent may ring the pidfd
         * that remote_spawn() closes. */
        r->dead = true;
        pthread_cond_broadcast(&pm->changed);
        break;
    case PM_DIED:
        rec_died(pm, r, died_text(pm, r, pl, h->len));
        break;
    case PM_OUTPUT:
        if (h->type == 1 || h->type == 2)
            pm_lines_add(&pm->lines, r->w->index, h->type, pl, h->len);
        break;
    default:
        break;
    }
}

/* Write what r received into its reply ring, as far as it has room: as
 * pm_queue_push().  Under pm->lock. */
static int deliver(struct rec *r)
{
    int pushed = pm_queue_push(&r->replies, &r->rep);

    if (pushed < 0)
        pm_queue_clear(&r->replies); /* the host closed the ring */
    return pushed;
}

static int agent_of_rank(struct pm_pool *pm, int rank)
{
    for (int a = 0; a < pm->nagents; a++)
        if (pm->agents[a].rank == rank)
            return a;
    return -1;
}

/* PM_EXIT to a rank given up on, saying that a rank was lost: the host
 * gave up on this one, so the agent bounds its MPI_Finalize() (the host
 * may have ended without a word to it).  Not waited for, as MPI may never
 * complete a send to a dead rank: the record is static, the request let
 * go. */
static void exit_lost(MPI_Comm comm, int rank)
{
    static const struct pm_hdr bye = {.kind = PM_EXIT, .id = 1};
    MPI_Request req;

    if (MPI_Isend(&bye, sizeof bye, MPI_BYTE, rank, PM_TAG_CTL, comm, &req) == MPI_SUCCESS)
        MPI_Request_free(&req);
}

/* A lost agent that speaks again (it was stalled, not dead) is told to
 * exit, which stops its workers, so that the job can end. */
static void tell_exit(struct pm_pool *pm, int a)
{
    if (pm->agents[a].told_exit)
        return;
    pm->agents[a].told_exit = true;
    exit_lost(pm->comm, pm->agents[a].rank);
}

/* Every message waiting on the pool's tag; whether there was one that
 * is work (a PM_BEAT alone is not: it must not keep the relay awake). */
static bool receive(struct pm_pool *pm)
{
    bool any = false;
    int from, tag;

    while (pm_recv(pm->comm, MPI_ANY_SOURCE, pm->tag, &pm->in, &from, &tag) == 1) {
        int a = agent_of_rank(pm, from);
        struct pm_hdr h;
        const uint8_t *pl;
        size_t off = 0;
        if (a >= 0 && pm->agents[a].lost)
            tell_exit(pm, a); /* too late: its workers are gone */
        if (a < 0 || pm->agents[a].lost)
            continue;
        pm->agents[a].heard_ns = shm_now_ns();
        pthread_mutex_lock(&pm->lock);
        pm->agents[a].owes_spawn = false;
        while (pm_next(pm->in.buf, pm->in.len, &off, &h, &pl) == 1) {
            any |= h.kind != PM_BEAT;
            take_record(pm, a, &h, pl);
        }
        /* The answers go to their callers now, not after the next polls
         * of MPI (some microseconds each). */
        for (struct rec *r = pm->recs; r; r = r->next)
            if (!r->dead && !pm_queue_empty(&r->replies))
                deliver(r);
        pthread_mutex_unlock(&pm->lock);
    }
    return any;
}

/* ---- what goes to the agents ---- */

static int add(struct pm_pool *pm, struct rec *r, uint16_t kind, uint16_t type, uint64_t id,
               const void *pl, size_t n)
{
    if (pm->agents[r->agent].lost)
        return -EHOSTDOWN;
    return pm_batch_add(&pm->agents[r->agent].out.fill, r->wid, kind, type, id, pl, n);
}

/* The host's stop table as it is now, and the worker marked as having
 * seen it: the agent posts every entry before the worker's next look. */
static void mirror_stops(struct pm_pool *pm, struct rec *r)
{
    struct shm_seg_header *h = r->w->seg.hdr;
    uint64_t seq = atomic_load_explicit(&h->stop_seq, memory_order_acquire);
    struct pm_stop t[SHM_STOP_SLOTS];

    if (seq == r->stops_sent)
        return;
    for (int i = 0; i < SHM_STOP_SLOTS; i++) {
        t[i].call = atomic_load_explicit(&h->stops[i].call, memory_order_acquire);
        t[i].why = atomic_load_explicit(&h->stops[i].why, memory_order_relaxed);
        t[i].pad = 0;
    }
    if (add(pm, r, PM_STOPS, 0, seq, t, sizeof t) < 0)
        return;
    r->stops_sent = seq;
    /* Release: pairs with the host's acquire load in shm_seg_stop_seen(). */
    atomic_store_explicit(&h->stop_seen, seq, memory_order_release);
}

/* Whether r's requests wait for credit (wire.h).  Under pm->lock. */
static bool rec_blocked(const struct pm_pool *pm, const struct rec *r)
{
    return r->sent - r->credited >= PM_CREDIT_BOUND(pm->p->ring_bytes);
}

/* Move what r's rings hold: requests out, replies in.  Whether anything
 * moved or still waits.  Under pm->lock. */
static bool pump(struct pm_pool *pm, struct rec *r)
{
    struct shm_msg m;
    bool busy = false;
    int n = 0;

    /* A signal or a shutdown that could not be queued is tried again on
     * the next pass. */
    if (r->kill_sig && add(pm, r, PM_KILL, 0, (uint64_t)r->kill_sig, NULL, 0) == 0) {
        r->kill_sig = 0;
        busy = true;
    }
    while (n < 256 && !rec_blocked(pm, r) && shm_ring_read(&r->req, &m) == 1) {
        /* A frame read cannot go back into the ring: if it cannot be
         * queued, the worker is killed, which fails its calls, rather
         * than leave its caller waiting for ever. */
        if (add(pm, r, PM_FRAME, m.type, m.id, m.payload, m.len) == 0)
            r->sent += pm_cost(m.len);
        else
            r->kill_sig = SIGKILL;
        shm_ring_done(&r->req, &m);
        n++;
    }
    mirror_stops(pm, r);
    if (!r->shutdown_sent && atomic_load_explicit(&r->w->seg.hdr->shutdown, memory_order_acquire) &&
        add(pm, r, PM_SHUTDOWN, 0, 0, NULL, 0) == 0) {
        r->shutdown_sent = true;
        busy = true;
    }
    int pushed = deliver(r);
    return busy || n > 0 || pushed > 0 || !pm_queue_empty(&r->replies);
}

static void rec_free(struct pm_pool *pm, struct rec *r)
{
    epoll_ctl(pm->epfd, EPOLL_CTL_DEL, r->w->tx.doorbell_fd, NULL);
    shm_ring_detach(&r->req);
    shm_ring_detach(&r->rep);
    pm_queue_clear(&r->replies);
    pyproc__worker_unref(r->w);
    free(r->death);
    free(r);
}

/* One pass over every worker, then the sends; under pm->lock. */
static bool pass(struct pm_pool *pm)
{
    bool busy = false;

    for (struct rec **link = &pm->recs; *link;) {
        struct rec *r = *link;
        if (r->reaped) {
            *link = r->next;
            rec_free(pm, r);
            continue;
        }
        if (!r->dead)
            busy |= pump(pm, r);
        link = &r->next;
    }
    for (int a = 0; a < pm->nagents; a++)
        if (!pm->agents[a].lost)
            busy |= pm_out_flush(&pm->agents[a].out, pm->comm, pm->tag);
    return busy;
}

/* ---- liveness (wire.h) ---- */

/* Ranks given up on by any pool, for pyproc_mpi_shutdown(). */
static pthread_mutex_t lost_lock = PTHREAD_MUTEX_INITIALIZER;
static int *lost_ranks, nlost_ranks;

static bool rank_is_lost(int rank);

static void rank_lost(int rank)
{
    if (rank_is_lost(rank))
        return;
    pthread_mutex_lock(&lost_lock);
    int *t = realloc(lost_ranks, (size_t)(nlost_ranks + 1) * sizeof *t);
    if (t) {
        lost_ranks = t;
        lost_ranks[nlost_ranks++] = rank;
    }
    pthread_mutex_unlock(&lost_lock);
}

static bool rank_is_lost(int rank)
{
    bool lost = false;

    pthread_mutex_lock(&lost_lock);
    for (int i = 0; i < nlost_ranks && !lost; i++)
        lost = lost_ranks[i] == rank;
    pthread_mutex_unlock(&lost_lock);
    return lost;
}

/* Give up on agent a: each of its workers dies in the core's eyes, which
 * fails their calls and starts them again elsewhere.  A send to a dead
 * rank may never complete, and MPI may still read its buffer: the request
 * is let go and the buffer with it, never freed.  Under pm->lock. */
static void agent_lost(struct pm_pool *pm, int a, int64_t silent_ns)
{
    struct agent *ag = &pm->agents[a];

    ag->lost = true;
    rank_lost(ag->rank);
    fprintf(stderr, "pyproc: agent rank %d on node %s was lost: no word from it in %lld s\n",
            ag->rank, ag->node, (long long)(silent_ns / 1000000000));
    for (struct rec *r = pm->recs; r; r = r->next) {
        char *why = NULL;
        if (r->agent != a || r->dead)
            continue;
        if (r->started == 0)
            r->started = -EHOSTDOWN;
        if (asprintf(&why,
                     "worker %d: agent rank %d on node %s was lost: no word from it in %lld s",
                     r->w->index, ag->rank, ag->node, (long long)(silent_ns / 1000000000)) < 0)
            why = NULL;
        rec_died(pm, r, why);
    }
    if (ag->out.req != MPI_REQUEST_NULL) {
        MPI_Request_free(&ag->out.req);
        ag->out.flight = (struct pm_batch){0};
    }
    ag->out.fill.len = 0;
}

/* Every agent that runs a worker of the pool, or owes PM_POOL_FREED
 * (asked_free) or an answer to PM_SPAWN, must be heard from every pm->lost_ns: a free waits no
 * longer for a dead one.  Looked at every PM_CHECK_NS, taking pm->lock
 * only then. */
#define PM_CHECK_NS 100000000

static void check_agents(struct pm_pool *pm, bool asked_free)
{
    int64_t now = shm_now_ns();

    if (now - pm->checked_ns < PM_CHECK_NS)
        return;
    pm->checked_ns = now;
    pthread_mutex_lock(&pm->lock);
    for (int a = 0; a < pm->nagents; a++) {
        struct agent *ag = &pm->agents[a];
        bool runs = false;
        for (struct rec *r = pm->recs; r && !runs; r = r->next)
            runs = r->agent == a && !r->dead;
        if (ag->lost || ag->freed)
            continue;
        if (rank_is_lost(ag->rank)) /* another pool gave up on it */
            agent_lost(pm, a, pm->lost_ns);
        else if (!runs && !asked_free && !ag->owes_spawn)
            ag->heard_ns = now; /* nothing expected of it */
        else if (now - ag->heard_ns > pm->lost_ns)
            agent_lost(pm, a, now - ag->heard_ns);
    }
    pthread_mutex_unlock(&pm->lock);
}

/* Whether every agent answered PM_POOL_FREE, or was lost. */
static bool all_freed(const struct pm_pool *pm)
{
    for (int a = 0; a < pm->nagents; a++)
        if (!pm->agents[a].freed && !pm->agents[a].lost)
            return false;
    return true;
}

/* Sleep up to ns on the request rings' doorbells and the wake fd, unless
 * a request came meanwhile.  A ring whose requests wait for credit rings
 * no doorbell (it stays awake): the credit comes over MPI, polled as any
 * message, so a worker that holds its requests for long costs no more
 * than an idle one. */
static void nap(struct pm_pool *pm, int64_t ns)
{
    struct epoll_event ev[16];
    bool asleep = true;

    pthread_mutex_lock(&pm->lock);
    for (struct rec *r = pm->recs; r && asleep; r = r->next)
        if (!r->dead && !rec_blocked(pm, r) && shm_ring_sleep_begin(&r->req, SHM_SLEEP_DOORBELL))
            asleep = false;
    pthread_mutex_unlock(&pm->lock);
    if (asleep) {
        struct timespec t = {ns / 1000000000, ns % 1000000000};
        int n = epoll_pwait2(pm->epfd, ev, 16, &t, NULL);
        for (int i = 0; i < n; i++) {
            uint64_t v;
            if (read(ev[i].data.fd, &v, sizeof v) < 0) {
                /* Another wake-up took it. */
            }
        }
    }
    pthread_mutex_lock(&pm->lock);
    for (struct rec *r = pm->recs; r; r = r->next)
        if (!r->dead)
            shm_ring_sleep_end(&r->req);
    pthread_mutex_unlock(&pm->lock);
}

static void *relay_main(void *arg)
{
    struct pm_pool *pm = arg;
    bool asked_free = false;

    /* The HELLOs may be as old as the start timeout: silence counts from
     * here. */
    pthread_mutex_lock(&pm->lock);
    for (int a = 0; a < pm->nagents; a++)
        pm->agents[a].heard_ns = shm_now_ns();
    pthread_mutex_unlock(&pm->lock);
    for (;;) {
        pthread_mutex_lock(&pm->lock);
        bool busy = pass(pm);
        pthread_mutex_unlock(&pm->lock);
        busy |= receive(pm);
        check_agents(pm, asked_free);
        if (atomic_load_explicit(&pm->stopping, memory_order_acquire)) {
            if (!asked_free) {
                pthread_mutex_lock(&pm->lock);
                for (int a = 0; a < pm->nagents; a++)
                    if (!pm->agents[a].lost) {
                        pm_batch_add(&pm->agents[a].out.fill, 0, PM_POOL_FREE, 0, 0, NULL, 0);
                        pm->agents[a].heard_ns = shm_now_ns(); /* the answer is owed from now */
                    }
                pthread_mutex_unlock(&pm->lock);
                asked_free = true;
                continue;
            }
            if (all_freed(pm) && !busy)
                break;
        }
        int64_t ns = pm_idle_next(&pm->idle, busy);
        if (ns > 0)
            nap(pm, ns);
        else
            sched_yield();
    }
    for (int a = 0; a < pm->nagents; a++)
        if (!pm->agents[a].lost)
            pm_out_drain(&pm->agents[a].out, pm->comm, pm->tag);
    return NULL;
}

/* ---- the hooks the host core calls (struct pp_remote) ---- */

static void params_to(struct pm_pool *pm, struct agent *ag)
{
    pyproc_pool *p = pm->p;
    struct pm_params pr = {.ring_bytes = p->ring_bytes,
                           .max_msg = p->max_msg,
                           .mem_limit = p->mem_limit,
                           .spin_ns = pm->worker_spin_ns,
                           .max_fds = p->max_fds,
                           .no_new_privs = p->no_new_privs};
    const char *s[5] = {p->name, p->worker_path, p->python_path, p->venv, p->cwd};
    size_t n = sizeof pr;

    /* opts.env goes with them; without it the workers get their agent's
     * environment (mpirun's -x passes more), not this process's. */
    for (char **e = p->env; e && *e; e++)
        pr.nenv++;
    pr.has_env = p->env != NULL;
    for (int i = 0; i < 5; i++)
        n += (s[i] ? strlen(s[i]) : 0) + 1;
    for (uint32_t i = 0; i < pr.nenv; i++)
        n += strlen(p->env[i]) + 1;
    uint8_t *b = malloc(n);
    if (!b)
        return;
    memcpy(b, &pr, sizeof pr);
    size_t off = sizeof pr;
    for (uint32_t i = 0; i < 5 + pr.nenv; i++) {
        const char *t = i < 5 ? s[i] : p->env[i - 5];
        size_t k = t ? strlen(t) : 0;
        memcpy(b + off, t ? t : "", k + 1);
        off += k + 1;
    }
    if (pm_batch_add(&ag->out.fill, 0, PM_PARAMS, 0, 0, b, n) == 0)
        ag->params_sent = true;
    free(b);
}

static int rec_start(struct pm_pool *pm, struct rec *r)
{
    struct timespec until;
    int err = 0;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += pm->p->start_timeout_ms / 1000 + 1;
    pthread_mutex_lock(&pm->lock);
    struct agent *ag = &pm->agents[r->agent];
    if (!ag->params_sent)
        params_to(pm, ag);
    r->next = pm->recs;
    pm->recs = r;
    if (!ag->params_sent || add(pm, r, PM_SPAWN, 0, (uint64_t)r->w->index, NULL, 0) < 0)
        rec_died(pm, r, strdup("could not be asked to start"));
    else
        ag->owes_spawn = true; /* even if the start times out first */
    wake(pm);
    while (r->started == 0 && err == 0)
        err = pthread_cond_timedwait(&pm->changed, &pm->lock, &until);
    if (r->started == 0)
        rec_died(pm, r, strdup("its agent did not answer"));
    err = r->started < 0 ? r->started : 0;
    pthread_mutex_unlock(&pm->lock);
    return err;
}

/* The agent with the fewest workers alive, the index's turn of the round
 * robin first among equals: a pool starts spread round robin, a respawn
 * goes back where its worker was, and add_proc goes where there is room.
 * Never a lost agent; -1 when every agent is lost.  Under pm->lock. */
static int agent_for(struct pm_pool *pm, int index)
{
    int best = -1, least = INT32_MAX;

    for (int k = 0; k < pm->nagents; k++) {
        int a = (index + k) % pm->nagents, n = 0;
        if (pm->agents[a].lost)
            continue;
        for (struct rec *r = pm->recs; r; r = r->next)
            n += r->agent == a && !r->dead;
        if (n < least) {
            least = n;
            best = a;
        }
    }
    return best;
}

static int remote_spawn(pyproc_pool *p, struct pp_worker *w)
{
    struct pm_pool *pm = p->remote_data;
    struct rec *r = calloc(1, sizeof *r);
    int err = -ENOMEM;

    if (!r)
        return err;
    pthread_mutex_lock(&pm->lock);
    r->agent = agent_for(pm, w->index);
    pthread_mutex_unlock(&pm->lock);
    if (r->agent < 0) {
        free(r);
        return -EHOSTDOWN; /* every agent was lost */
    }
    w->pidfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->pidfd < 0) {
        err = -errno;
        free(r);
        return err;
    }
    pyproc__worker_ref(w);
    r->w = w;
    w->rank = pm->agents[r->agent].rank; /* for stats; the core's from here on */
    shm_ring_attach(&r->req, &w->seg.hdr->request, w->seg.request_data, p->ring_bytes, p->max_msg,
                    w->tx.doorbell_fd, shm_frame_type_to_worker);
    shm_ring_attach(&r->rep, &w->seg.hdr->reply, w->seg.reply_data, p->ring_bytes, p->max_msg,
                    w->rx.doorbell_fd, shm_frame_type_to_host);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = w->tx.doorbell_fd};
    epoll_ctl(pm->epfd, EPOLL_CTL_ADD, w->tx.doorbell_fd, &ev);
    pthread_mutex_lock(&pm->lock);
    pm->p = p; /* the first spawn comes before pyproc_pool_new_mpi() returns */
    pm->lines.p = p;
    r->wid = ++pm->next_wid;
    pthread_mutex_unlock(&pm->lock);
    err = rec_start(pm, r);
    if (err < 0) {
        /* The core drops w; its record goes with the next pass. */
        pthread_mutex_lock(&pm->lock);
        r->reaped = true;
        pthread_mutex_unlock(&pm->lock);
        close(w->pidfd);
        w->pidfd = -1;
        w->pid = -1;
    }
    return err;
}

static void remote_signal(struct pp_worker *w, int sig)
{
    struct pm_pool *pm = w->pool->remote_data;

    pthread_mutex_lock(&pm->lock);
    struct rec *r = rec_of(pm, w);
    if (r && !r->dead)
        r->kill_sig = sig;
    pthread_mutex_unlock(&pm->lock);
    wake(pm);
}

static char *remote_reap(struct pp_worker *w)
{
    struct pm_pool *pm = w->pool->remote_data;
    char *why = NULL;

    int rank = -1;

    pthread_mutex_lock(&pm->lock);
    struct rec *r = rec_of(pm, w);
    if (r) {
        if (!r->dead) { /* given up on: make sure it goes */
            add(pm, r, PM_KILL, 0, SIGKILL, NULL, 0);
            rec_died(pm, r, NULL);
        }
        why = r->death;
        r->death = NULL;
        r->reaped = true; /* freed by the relay's next pass */
        rank = pm->agents[r->agent].rank;
    }
    pthread_mutex_unlock(&pm->lock);
    wake(pm);
    if (!why && asprintf(&why, "worker %d on rank %d stopped answering", w->index, rank) < 0)
        why = NULL;
    return why;
}

static void pm_free(struct pm_pool *pm)
{
    if (pm->running) {
        atomic_store_explicit(&pm->stopping, true, memory_order_release);
        wake(pm);
        pthread_join(pm->thread, NULL);
    }
    pm_lines_stop(&pm->lines);
    while (pm->recs) {
        struct rec *r = pm->recs;
        pm->recs = r->next;
        rec_free(pm, r);
    }
    for (int a = 0; a < pm->nagents; a++)
        pm_out_free(&pm->agents[a].out);
    free(pm->agents);
    pm_batch_free(&pm->in);
    if (pm->epfd >= 0)
        close(pm->epfd);
    if (pm->wake_fd >= 0)
        close(pm->wake_fd);
    pthread_mutex_destroy(&pm->lock);
    pthread_cond_destroy(&pm->changed);
    free(pm);
}

static void remote_fini(pyproc_pool *p)
{
    pm_free(p->remote_data);
}

static const struct pp_remote mpi_remote = {
    .spawn = remote_spawn,
    .signal = remote_signal,
    .reap = remote_reap,
    .fini = remote_fini,
};

/* ---- making a pool ---- */

/* A pool's relay thread talks MPI beside the application's threads: it
 * needs MPI_THREAD_MULTIPLE; pyproc_mpi_shutdown() only needs MPI. */
static int mpi_usable(MPI_Comm comm, int need_level, int *rank, int *size)
{
    int init = 0, level = 0, same = MPI_UNEQUAL;

    MPI_Initialized(&init);
    if (!init)
        return -EPROTONOSUPPORT;
    MPI_Query_thread(&level);
    if (level < need_level)
        return -EPROTONOSUPPORT;
    MPI_Comm_compare(comm, MPI_COMM_WORLD, &same);
    if (same != MPI_IDENT)
        return -EINVAL;
    MPI_Comm_rank(comm, rank);
    MPI_Comm_size(comm, size);
    return *size < 2 ? -EINVAL : 0;
}

/* Tell every agent of the new pool and wait for each one's HELLO.  A
 * rank an earlier pool gave up on is lost from the start: a send to it
 * may never complete, and it would never answer. */
static int meet_agents(struct pm_pool *pm, int timeout_ms)
{
    int64_t until = shm_now_ns() + (int64_t)timeout_ms * 1000000;
    struct pm_batch b = {0};
    int met = 0, alive = 0, from, tag;

    for (int a = 0; a < pm->nagents; a++) {
        pm->agents[a].lost = rank_is_lost(pm->agents[a].rank);
        alive += !pm->agents[a].lost;
    }
    if (alive == 0)
        return -EHOSTDOWN;
    if (pm_batch_add(&b, 0, PM_POOL_NEW, 0, (uint64_t)pm->tag, NULL, 0) < 0)
        return -ENOMEM;
    for (int a = 0; a < pm->nagents; a++)
        if (!pm->agents[a].lost)
            MPI_Send(b.buf, (int)b.len, MPI_BYTE, pm->agents[a].rank, PM_TAG_CTL, pm->comm);
    pm_batch_free(&b);
    while (met < alive) {
        struct pm_hdr h;
        const uint8_t *pl;
        size_t off = 0;
        if (pm_recv(pm->comm, MPI_ANY_SOURCE, pm->tag, &pm->in, &from, &tag) == 0) {
            if (shm_now_ns() > until)
                return -ETIMEDOUT;
            nanosleep(&(struct timespec){0, 100000}, NULL);
            continue;
        }
        int a = agent_of_rank(pm, from);
        if (a < 0 || pm->agents[a].lost || pm_next(pm->in.buf, pm->in.len, &off, &h, &pl) != 1 ||
            h.kind != PM_HELLO)
            continue;
        pm->agents[a].cpus = h.id > 0 && h.id < 65536 ? (int)h.id : 1;
        pm->agents[a].heard_ns = shm_now_ns();
        snprintf(pm->agents[a].node, sizeof pm->agents[a].node, "%.*s",
                 (int)(h.len < 63 ? h.len : 63), (const char *)pl);
        met++;
    }
    return 0;
}

/* How long an agent may stay silent (wire.h): PM_LOST_MS, or what
 * $PYPROC_MPI_LOST_MS says (at least one beat and a half). */
static int64_t lost_ms(void)
{
    const char *s = getenv("PYPROC_MPI_LOST_MS");
    char *end;
    long long ms = s ? strtoll(s, &end, 10) : 0;

    if (!s || end == s || *end || ms < 1500 || ms > 86400000LL)
        return PM_LOST_MS;
    return ms;
}

static int pm_new(struct pm_pool **ret, MPI_Comm comm, int me, int size)
{
    struct pm_pool *pm = calloc(1, sizeof *pm);

    if (!pm)
        return -ENOMEM;
    pthread_mutex_init(&pm->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pm->changed, &ca);
    pthread_condattr_destroy(&ca);
    pm->comm = comm;
    pm->lost_ns = lost_ms() * 1000000LL;
    pm->tag = PM_TAG_POOL_FIRST + (int)(atomic_fetch_add(&next_tag, 1) % PM_TAG_POOLS);
    pm->epfd = epoll_create1(EPOLL_CLOEXEC);
    pm->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pm->agents = calloc((size_t)size, sizeof *pm->agents);
    *ret = pm;
    if (pm->epfd < 0 || pm->wake_fd < 0 || !pm->agents)
        return -ENOMEM;
    for (int r = 0; r < size; r++)
        if (r != me)
            pm_out_init(&pm->agents[pm->nagents++].out, r);
    for (int a = 0; a < pm->nagents; a++)
        pm->agents[a].rank = pm->agents[a].out.rank;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = pm->wake_fd};
    epoll_ctl(pm->epfd, EPOLL_CTL_ADD, pm->wake_fd, &ev);
    return 0;
}

PYPROC_EXPORT int pyproc_pool_new_mpi(pyproc_pool **ret, const char *name, const pyproc_opts *opts,
                                      MPI_Comm comm)
{
    pyproc_opts o = opts ? *opts : (pyproc_opts){0};
    struct pm_pool *pm = NULL;
    int me, size, err;

    if (!ret || !name || !*name)
        return -EINVAL;
    if (o.max_rss_bytes)
        return -EOPNOTSUPP; /* a remote worker's pid names nothing here */
    err = mpi_usable(comm, MPI_THREAD_MULTIPLE, &me, &size);
    if (err < 0)
        return err;
    err = pm_new(&pm, comm, me, size);
    if (err == 0)
        err = meet_agents(pm, o.start_timeout_ms > 0 ? o.start_timeout_ms : 30000);
    if (err == 0)
        err = pm_lines_start(&pm->lines);
    if (err == 0)
        err = -pthread_create(&pm->thread, NULL, relay_main, pm);
    if (err < 0) {
        pm_free(pm);
        return err;
    }
    pm->running = true;
    /* The remote workers spin as opts.spin_us says; the host's callers do
     * not: an answer takes a network round trip, and a spinning caller
     * takes a CPU that the relay, the agent and the worker need to bring
     * it (on 2 CPUs a sync call took 46 us with callers spinning, 39
     * without). */
    pm->worker_spin_ns = o.spin_us == -1
                             ? 0
                             : (int64_t)(o.spin_us ? o.spin_us : PM_WORKER_SPIN_US) * 1000;
    o.spin_us = -1;
    if (o.workers == 0)
        for (int a = 0; a < pm->nagents; a++)
            o.workers += pm->agents[a].cpus;
    /* From here on the pool owns pm (remote_fini()), also on failure. */
    return pyproc__pool_new_remote(ret, name, &o, &mpi_remote, pm);
}

PYPROC_EXPORT int pyproc_mpi_shutdown(MPI_Comm comm)
{
    struct pm_batch b = {0};
    int me, size, err = mpi_usable(comm, MPI_THREAD_SINGLE, &me, &size);

    if (err < 0)
        return err;
    MPI_Request *req = calloc((size_t)size, sizeof *req);
    int64_t until = shm_now_ns() + 10 * 1000000000LL;
    int done = 0, skipped = 0;

    for (int r = 0; r < size; r++)
        skipped += r != me && rank_is_lost(r);
    /* id: whether a rank was lost (the agents then bound MPI_Finalize()). */
    if (!req || pm_batch_add(&b, 0, PM_EXIT, 0, (uint64_t)skipped, NULL, 0) < 0) {
        free(req);
        return -ENOMEM;
    }
    /* Synchronous sends, waited for: a plain send may still sit in this
     * process (a connection not yet made) when MPI_Finalize() follows,
     * which does not move it on. */
    for (int r = 0; r < size; r++)
        req[r] = MPI_REQUEST_NULL;
    /* A rank a pool gave up on is told too, since it may be alive (only
     * stalled) and its pools freed before it spoke again, but not waited
     * for: MPI may never complete a send to it. */
    for (int r = 0; r < size; r++)
        if (r != me && !rank_is_lost(r))
            MPI_Issend(b.buf, (int)b.len, MPI_BYTE, r, PM_TAG_CTL, comm, &req[r]);
        else if (r != me)
            exit_lost(comm, r);
    while (!done && shm_now_ns() < until) {
        MPI_Testall(size, req, &done, MPI_STATUSES_IGNORE);
        if (!done)
            nanosleep(&(struct timespec){0, 100000}, NULL);
    }
    for (int r = 0; !done && r < size; r++)
        if (req[r] != MPI_REQUEST_NULL) {
            MPI_Cancel(&req[r]);
            MPI_Request_free(&req[r]);
        }
    free(req);
    pm_batch_free(&b);
    return !done ? -ETIMEDOUT : skipped ? -EHOSTDOWN : 0;
}
