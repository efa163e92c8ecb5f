/*
 * pyproc-agent: one rank of an MPI job that runs workers for pools whose
 * host is another rank (relay.c), and relays between MPI and the rings
 * of those workers on its node.
 *
 *   mpirun -n 1 ./app : -n 4 pyproc-agent
 *
 * A worker here is started, watched and reaped with the host library's own
 * code (pyproc__worker_spawn(), a struct pp_worker with its segment,
 * doorbells, pidfd and output pipes) under a pool record that holds only
 * what starting a worker needs.  The agent writes the host's frames into
 * the worker's request ring, reads its replies and sends them on whole,
 * mirrors the host's stop table and shutdown word into its segment,
 * passes its output lines on, and reports its death with the exit status
 * and the node's name.  It decodes no payload: the worker checks what
 * it reads, the host what it gets.
 *
 * One thread, never spinning while idle: it sleeps in epoll on the reply
 * doorbells, pidfds and output pipes between polls of MPI (wire.h).
 * While it runs workers of a pool it sends that pool's host something
 * every PM_BEAT_NS, so that the host can tell a lost agent (wire.h).
 * When the host's rank dies, mpirun ends the job, and the workers follow
 * their agent (their death pipe, PR_SET_PDEATHSIG).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../host/chan.h"
#include "../host/output.h"
#include "../host/supervise.h"
#include "../shm/segment.h"
#include "wire.h"

enum { EV_BELL, EV_PIDFD, EV_OUT0, EV_OUT1 };

struct ag_pool;
struct ag_worker;

/* What an epoll event points at. */
struct ag_ev {
    int kind;
    struct ag_worker *aw;
};

struct ag_worker {
    struct ag_worker *next;
    struct ag_pool *pool;
    uint32_t wid;
    struct pp_worker *w;
    struct pm_queue requests; /* from the host, waiting for ring room */
    uint64_t dropped;         /* pm_cost() of the requests not queued */
    uint64_t credited;        /* the credit last sent (wire.h) */
    struct ag_ev ev[4];
    bool gone; /* exited, or broke the protocol and was killed */
};

struct ag_pool {
    struct ag_pool *next;
    int host, tag;
    pyproc_pool pp; /* what pyproc__worker_spawn() reads */
    bool params;
    struct ag_worker *workers;
    struct pm_out out;
    int64_t said_ns; /* something last sent to the host (wire.h: PM_BEAT) */
    bool beat_only;  /* what was last sent is a PM_BEAT alone: no work */
};

static struct ag_pool *pools;
static int epfd;
static char node[64];
static bool exiting;
static bool rank_lost; /* PM_EXIT said a rank of the job was lost */

static struct ag_pool *pool_of(int host, int tag)
{
    for (struct ag_pool *ap = pools; ap; ap = ap->next)
        if (ap->host == host && ap->tag == tag)
            return ap;
    return NULL;
}

static int send_rec(struct ag_pool *ap, uint32_t wid, uint16_t kind, uint16_t type, uint64_t id,
                    const void *pl, size_t n)
{
    int err = pm_batch_add(&ap->out.fill, wid, kind, type, id, pl, n);

    if (err < 0)
        fprintf(stderr, "pyproc-agent: out of memory; a message to the host is lost\n");
    return err;
}

/* A worker's output line goes to the host, which prints or hands it on.
 * A dying worker's last lines come before its death is reported, so the
 * worker at index is the one that wrote. */
static void output_line(pyproc_pool *pp, int index, int stream, const char *line, size_t len,
                        void *data)
{
    struct ag_pool *ap = data;
    (void)pp;
    for (struct ag_worker *aw = ap->workers; aw; aw = aw->next)
        if (aw->w->index == index && aw->w->pid > 0) {
            send_rec(ap, aw->wid, PM_OUTPUT, (uint16_t)stream, 0, line, len);
            return;
        }
}

/* ---- workers ---- */

static void watch(struct ag_worker *aw, int kind, int fd)
{
    aw->ev[kind].kind = kind;
    aw->ev[kind].aw = aw;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &aw->ev[kind]};
    if (fd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
}

static void unwatch(struct ag_worker *aw)
{
    struct pp_worker *w = aw->w;
    int fds[4] = {w->rx.doorbell_fd, w->pidfd, w->out[0].fd, w->out[1].fd};
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            epoll_ctl(epfd, EPOLL_CTL_DEL, fds[i], NULL);
}

static void spawn(struct ag_pool *ap, uint32_t wid, uint64_t index)
{
    struct ag_worker *aw = calloc(1, sizeof *aw);
    int err = !aw ? -ENOMEM : !ap->params ? -EPROTO : 0; /* PM_PARAMS first */

    if (err == 0 && index > 1u << 20)
        err = -EINVAL;
    if (err == 0) {
        aw->pool = ap;
        aw->wid = wid;
        err = pyproc__worker_spawn(&ap->pp, (int)index, &aw->w);
    }
    if (err < 0) {
        send_rec(ap, wid, PM_FAILED, 0, (uint64_t)-err, NULL, 0);
        free(aw);
        return;
    }
    watch(aw, EV_BELL, aw->w->rx.doorbell_fd);
    watch(aw, EV_PIDFD, aw->w->pidfd);
    watch(aw, EV_OUT0, aw->w->out[0].fd);
    watch(aw, EV_OUT1, aw->w->out[1].fd);
    aw->next = ap->workers;
    ap->workers = aw;
    send_rec(ap, wid, PM_STARTED, 0, (uint64_t)aw->w->pid, NULL, 0);
}

/* Whatever the worker answered, on to the host; whether there was any. */
static bool replies(struct ag_worker *aw)
{
    struct pp_worker *w = aw->w;
    struct shm_msg m;
    int n = 0, r;

    while (n < 256 && (r = shm_ring_read(&w->rx, &m)) == 1) {
        send_rec(aw->pool, aw->wid, PM_FRAME, m.type, m.id, m.payload, m.len);
        shm_ring_done(&w->rx, &m);
        n++;
    }
    if (n < 256 && r < 0 && !aw->gone) { /* it broke the protocol */
        fprintf(stderr, "pyproc-agent: worker %d wrote a bad frame; stopping it\n", w->index);
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
        aw->gone = true;
    }
    return n > 0;
}

/* The worker exited: its last answers and words, then how it ended. */
static void reap(struct ag_worker *aw)
{
    struct pp_worker *w = aw->w;
    siginfo_t si = {0};
    char *why = NULL;

    replies(aw);
    pyproc__output_finish(w);
    if (waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED) == 0)
        why = pyproc__exit_text(w->index, &si);
    w->pid = -1;
    const char *s = why ? why : "the worker died";
    send_rec(aw->pool, aw->wid, PM_DIED, 0, 0, s, strlen(s));
    free(why);
}

static void worker_drop(struct ag_worker *aw)
{
    unwatch(aw);
    pm_queue_clear(&aw->requests);
    pyproc__worker_unref(aw->w); /* kills and reaps it if it still runs */
    free(aw);
}

/* The host's stop table, written into the worker's wherever it differs;
 * the worker is signalled if it runs a call just asked to stop. */
static void mirror_stops(struct pp_worker *w, const uint8_t *pl, size_t n)
{
    struct shm_seg_header *h = w->seg.hdr;
    struct pm_stop t[SHM_STOP_SLOTS];
    bool posted = false;

    if (n != sizeof t)
        return;
    memcpy(t, pl, sizeof t);
    for (unsigned i = 0; i < SHM_STOP_SLOTS; i++) {
        uint64_t cur = atomic_load_explicit(&h->stops[i].call, memory_order_relaxed);
        if (t[i].call == cur)
            continue;
        if (t[i].call == 0) {
            shm_seg_stop_clear(h, i);
        } else if (t[i].why == SHM_INTERRUPT_CANCEL || t[i].why == SHM_INTERRUPT_TIMEOUT) {
            shm_seg_stop_post(h, i, t[i].call, t[i].why);
            posted = true;
        }
    }
    if (!posted)
        return;
    shm_ring_notify(&w->tx);
    /* After the seq_cst fence of shm_seg_stop_post(), as in host/stop.c. */
    uint64_t running = atomic_load_explicit(&h->running_call, memory_order_relaxed);
    for (unsigned i = 0; running && i < SHM_STOP_SLOTS; i++)
        if (t[i].call == running)
            syscall(SYS_pidfd_send_signal, w->pidfd, SHM_INTERRUPT_SIGNAL, NULL, 0);
}

/* ---- what the host sends ---- */

static void free_env(char **env)
{
    for (char **e = env; e && *e; e++)
        free(*e);
    free(env);
}

static void set_params(struct ag_pool *ap, const uint8_t *pl, size_t n)
{
    struct pm_params pr;
    const char *s[5];
    size_t off = sizeof pr;

    if (ap->params || n < sizeof pr)
        return;
    memcpy(&pr, pl, sizeof pr);
    if (pr.nenv > 65536)
        return;
    char **env = pr.has_env ? calloc(pr.nenv + 1, sizeof *env) : NULL;
    if (pr.has_env && !env)
        return;
    for (uint32_t i = 0; i < 5 + pr.nenv; i++) {
        const uint8_t *end = off < n ? memchr(pl + off, 0, n - off) : NULL;
        if (!end) {
            free(env);
            return;
        }
        if (i < 5)
            s[i] = (const char *)pl + off;
        else if (env)
            env[i - 5] = (char *)pl + off; /* copied below */
        off = (size_t)(end - pl) + 1;
    }
    for (uint32_t i = 0; env && i < pr.nenv; i++)
        if (!(env[i] = strdup(env[i]))) {
            free_env(env);
            return;
        }
    if (pr.ring_bytes < SHM_RING_MIN_BYTES || pr.ring_bytes > SHM_RING_MAX_BYTES ||
        (pr.ring_bytes & (pr.ring_bytes - 1)) || pr.max_msg == 0 || !*s[0] || !*s[1]) {
        free_env(env);
        return;
    }
    pyproc_pool *p = &ap->pp;
    p->env = env;
    p->ring_bytes = pr.ring_bytes;
    p->max_msg = pr.max_msg;
    p->mem_limit = pr.mem_limit;
    p->spin_ns = pr.spin_ns;
    p->max_fds = pr.max_fds;
    p->no_new_privs = pr.no_new_privs != 0;
    p->name = strdup(s[0]);
    p->worker_path = strdup(s[1]);
    p->python_path = strdup(s[2]);
    p->venv = *s[3] ? strdup(s[3]) : NULL;
    p->cwd = *s[4] ? strdup(s[4]) : NULL;
    ap->params = p->name && p->worker_path && p->python_path;
}

static struct ag_worker *worker_of(struct ag_pool *ap, uint32_t wid)
{
    for (struct ag_worker *aw = ap->workers; aw; aw = aw->next)
        if (aw->wid == wid)
            return aw;
    return NULL;
}

static void take_record(struct ag_pool *ap, const struct pm_hdr *h, const uint8_t *pl)
{
    struct ag_worker *aw = worker_of(ap, h->wid);

    switch (h->kind) {
    case PM_PARAMS:
        set_params(ap, pl, h->len);
        return;
    case PM_SPAWN:
        if (!aw && h->wid)
            spawn(ap, h->wid, h->id);
        return;
    case PM_POOL_FREE:
        ap->tag = -ap->tag; /* freed at the end of this turn */
        return;
    default:
        break;
    }
    if (!aw || aw->gone)
        return;
    switch (h->kind) {
    case PM_FRAME:
        /* A frame not queued is credited at once: the host counts it. */
        if (!shm_frame_type_to_worker(h->type) || h->len > ap->pp.max_msg ||
            pm_queue_add(&aw->requests, h->type, h->id, pl, h->len) < 0)
            aw->dropped += pm_cost(h->len);
        break;
    case PM_STOPS:
        mirror_stops(aw->w, pl, h->len);
        break;
    case PM_SHUTDOWN:
        /* Pairs with the worker's acquire load, as in host/stop.c. */
        atomic_store_explicit(&aw->w->seg.hdr->shutdown, 1, memory_order_release);
        shm_ring_notify(&aw->w->tx);
        break;
    case PM_KILL:
        if (h->id == SIGKILL || h->id == SIGTERM || h->id == SHM_INTERRUPT_SIGNAL)
            syscall(SYS_pidfd_send_signal, aw->w->pidfd, (int)h->id, NULL, 0);
        break;
    default:
        break;
    }
}

static struct ag_pool *pool_new(int host, uint64_t tag)
{
    struct ag_pool *ap = calloc(1, sizeof *ap);

    if (!ap || tag < PM_TAG_POOL_FIRST || tag >= PM_TAG_POOL_FIRST + PM_TAG_POOLS) {
        free(ap);
        return NULL;
    }
    ap->host = host;
    ap->tag = (int)tag;
    pthread_mutex_init(&ap->pp.lock, NULL);
    ap->pp.epfd = -1;
    ap->pp.output = output_line;
    ap->pp.output_data = ap;
    pm_out_init(&ap->out, host);
    ap->next = pools;
    pools = ap;
    send_rec(ap, 0, PM_HELLO, 0, (uint64_t)sysconf(_SC_NPROCESSORS_ONLN), node, strlen(node));
    return ap;
}

static void pool_free(struct ag_pool *ap)
{
    while (ap->workers) {
        struct ag_worker *aw = ap->workers;
        ap->workers = aw->next;
        worker_drop(aw);
    }
    pm_out_free(&ap->out);
    pyproc_pool *p = &ap->pp;
    pthread_mutex_destroy(&p->lock);
    for (int i = 0; i < p->nslot_stats; i++)
        free(p->slot_stats[i]);
    free(p->slot_stats);
    free(p->name);
    free(p->worker_path);
    free(p->python_path);
    free(p->venv);
    free(p->cwd);
    free_env(p->env);
    free(ap);
}

static void take_control(int from, const struct pm_batch *in)
{
    struct pm_hdr h;
    const uint8_t *pl;
    size_t off = 0;

    while (pm_next(in->buf, in->len, &off, &h, &pl) == 1) {
        if (h.kind == PM_POOL_NEW && !pool_of(from, (int)h.id))
            pool_new(from, h.id);
        else if (h.kind == PM_EXIT) {
            exiting = true;
            rank_lost |= h.id != 0;
        }
    }
}

/* Write the requests queued for ap's workers into their rings, as far as
 * they have room: right as they come, not after the next polls of MPI
 * (some microseconds each). */
static void feed_pool(struct ag_pool *ap)
{
    for (struct ag_worker *aw = ap->workers; aw; aw = aw->next)
        if (!aw->gone && !pm_queue_empty(&aw->requests))
            pm_queue_push(&aw->requests, &aw->w->tx);
}

static bool receive(void)
{
    struct pm_batch in = {0};
    bool any = false;
    int from, tag;

    while (pm_recv(MPI_COMM_WORLD, MPI_ANY_SOURCE, MPI_ANY_TAG, &in, &from, &tag) == 1) {
        struct ag_pool *ap = pool_of(from, tag);
        struct pm_hdr h;
        const uint8_t *pl;
        size_t off = 0;
        any = true;
        if (tag == PM_TAG_CTL)
            take_control(from, &in);
        else if (ap)
            while (pm_next(in.buf, in.len, &off, &h, &pl) == 1)
                take_record(ap, &h, pl);
        if (ap)
            feed_pool(ap);
    }
    pm_batch_free(&in);
    return any;
}

/* ---- the loop ---- */

static void event(struct epoll_event *e)
{
    struct ag_ev *ev = e->data.ptr;
    struct ag_worker *aw = ev->aw;
    int kind = ev->kind;
    uint64_t v;

    if (kind == EV_BELL) {
        if (read(aw->w->rx.doorbell_fd, &v, sizeof v) < 0) {
            /* Cleared already. */
        }
    } else if (kind == EV_PIDFD && aw->w->pid > 0) {
        aw->gone = true;
        reap(aw);
    } else if (kind == EV_OUT0 || kind == EV_OUT1) {
        /* A pipe closed at EOF leaves the epoll set with its fd. */
        pyproc__output_read(aw->w, kind - EV_OUT0);
    }
}

/* The credit of ap's workers (wire.h): with whatever else goes to the
 * host, or alone once enough is owed. */
static void credit(struct ag_pool *ap)
{
    uint64_t report = PM_CREDIT_REPORT(ap->pp.ring_bytes);

    for (struct ag_worker *aw = ap->workers; aw; aw = aw->next) {
        uint64_t done = aw->requests.done + aw->dropped;
        if (aw->gone || done == aw->credited)
            continue;
        if (ap->out.fill.len == 0 && done - aw->credited < report)
            continue;
        if (send_rec(ap, aw->wid, PM_CREDIT, 0, done, NULL, 0) == 0)
            aw->credited = done; /* else owed still: sent next time */
    }
}

/* Send what ap's host is owed, with a PM_BEAT if it would otherwise hear
 * nothing for PM_BEAT_NS while ap has workers (wire.h).  Whether there is
 * work: a beat alone is none, and must not keep the agent awake. */
static bool beat(struct ag_pool *ap)
{
    int64_t now = shm_now_ns();
    bool beating = false;

    if (ap->workers && ap->out.fill.len == 0 && now - ap->said_ns >= PM_BEAT_NS) {
        send_rec(ap, 0, PM_BEAT, 0, 0, NULL, 0);
        beating = true;
    }
    if (ap->out.fill.len) {
        ap->said_ns = now;
        ap->beat_only = beating;
    }
    return pm_out_flush(&ap->out, MPI_COMM_WORLD, ap->tag) && !ap->beat_only;
}

/* Requests in, replies out, for every worker; then the sends. */
static bool pass(void)
{
    bool busy = false;

    for (struct ag_pool **link = &pools; *link;) {
        struct ag_pool *ap = *link;
        for (struct ag_worker **wl = &ap->workers; *wl;) {
            struct ag_worker *aw = *wl;
            if (aw->gone && aw->w->pid < 0) {
                *wl = aw->next;
                worker_drop(aw);
                continue;
            }
            if (!aw->gone) {
                busy |= replies(aw);
                busy |= pm_queue_push(&aw->requests, &aw->w->tx) > 0;
                busy |= !pm_queue_empty(&aw->requests);
            }
            wl = &aw->next;
        }
        if (ap->tag < 0) { /* PM_POOL_FREE: every worker goes, then the answer */
            while (ap->workers) {
                struct ag_worker *aw = ap->workers;
                ap->workers = aw->next;
                worker_drop(aw);
            }
            send_rec(ap, 0, PM_POOL_FREED, 0, 0, NULL, 0);
            pm_out_drain(&ap->out, MPI_COMM_WORLD, -ap->tag);
            *link = ap->next;
            pool_free(ap);
            busy = true;
            continue;
        }
        credit(ap);
        busy |= beat(ap);
        link = &ap->next;
    }
    return busy;
}

/* Sleep up to ns on the workers' doorbells, pidfds and output pipes,
 * unless a reply came meanwhile.  While polling (ns 0) the reply rings
 * stay awake, so the workers ring no doorbell, and the fds are looked at
 * every few turns only: a death or a line can wait that long. */
static void nap(int64_t ns)
{
    static unsigned turns;
    struct epoll_event ev[32];
    bool asleep = ns > 0;

    if (!asleep && ++turns % 8)
        return;
    for (struct ag_pool *ap = pools; ap && asleep; ap = ap->next)
        for (struct ag_worker *aw = ap->workers; aw && asleep; aw = aw->next)
            if (!aw->gone && shm_ring_sleep_begin(&aw->w->rx, SHM_SLEEP_DOORBELL))
                asleep = false;
    struct timespec t = {ns / 1000000000, ns % 1000000000};
    int n = epoll_pwait2(epfd, ev, 32, asleep ? &t : &(struct timespec){0, 0}, NULL);
    for (struct ag_pool *ap = pools; ns > 0 && ap; ap = ap->next)
        for (struct ag_worker *aw = ap->workers; aw; aw = aw->next)
            if (!aw->gone)
                shm_ring_sleep_end(&aw->w->rx);
    for (int i = 0; i < n; i++)
        event(&ev[i]);
}

static void finalize_expired(int sig)
{
    static const char m[] =
        "pyproc-agent: MPI_Finalize() did not return within 10 s of a rank "
        "being lost; exiting without it\n";
    (void)sig;
    if (write(2, m, sizeof m - 1) < 0) {
        /* Exiting all the same. */
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    struct pm_idle idle = {0};
    int level;

    MPI_Init_thread(&argc, &argv, MPI_THREAD_SINGLE, &level);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    gethostname(node, sizeof node - 1);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("pyproc-agent: epoll_create1");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* A worker's death is read from its pidfd, not from SIGCHLD. */
    signal(SIGPIPE, SIG_IGN);
    while (!exiting) {
        bool busy = receive();
        busy |= pass();
        int64_t ns = pm_idle_next(&idle, busy);
        nap(ns);
        if (ns == 0)
            sched_yield();
    }
    while (pools) {
        struct ag_pool *ap = pools;
        pools = ap->next;
        pool_free(ap);
    }
    close(epfd);
    /* Open MPI 4.1's MPI_Finalize() ends in a fence of every rank, which
     * may wait for ever for a rank that died under --enable-recovery. */
    if (rank_lost) {
        signal(SIGALRM, finalize_expired);
        alarm(10);
    }
    MPI_Finalize();
    return 0;
}
