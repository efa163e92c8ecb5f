/*
 * The pool's service thread.
 *
 * It sleeps in epoll on every worker's doorbell (rung by a worker that wrote
 * an answer while nobody polled its reply ring), pidfd (readable when the
 * worker exits) and stdout and stderr pipes (see output.c), plus a control
 * eventfd through which other threads hand it
 * work that must run here: spawning and stopping workers.  Spawning here,
 * on a thread that lives as long as the pool, is what makes the workers'
 * PR_SET_PDEATHSIG mean "the host is gone" rather than "some thread ended".
 *
 * No worker can hold the thread: each pass of the loop takes every ready
 * event (a bounded read of each output pipe, the reaping of each dead
 * worker), then reads one batch of replies (SERVICE_BATCH_MSGS at most,
 * and no more than the ring held when the batch began) from each worker
 * whose doorbell rang or whose ring still held frames after its last
 * batch, round robin, and then runs the commands.  While any worker has
 * replies left the loop polls epoll without sleeping, so another worker's
 * death or output is seen between two batches of a worker that floods.
 * A doorbell is one event per ring (BELL_EVENTS), and one that keeps
 * ringing with nothing to read is muted for a while (IDLE_BELLS_MAX), so
 * that a worker cannot keep the thread busy with wake-ups either.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "service.h"
#include "chan.h"
#include "output.h"

enum { EV_CONTROL, EV_BELL, EV_PIDFD, EV_STDOUT, EV_STDERR, EV_TEMPLATE };

/*
 * One worker's turn: batches of SERVICE_BATCH_MSGS replies for at most
 * SERVICE_TURN_NS, then the others' turns and the epoll set's events.  The
 * time bound keeps a flooding worker from delaying another's death; the
 * batches make a long turn cheap for a busy stream, which would otherwise
 * go back to epoll every few dozen items.
 */
#define SERVICE_BATCH_MSGS 64
#define SERVICE_TURN_NS (1000 * 1000LL)

/*
 * A worker rings its doorbell only after it published a reply, so by the
 * time we have served a bell, its reply has been read, by us or by a
 * caller: the ring's consumed position has moved.  A worker that rings
 * IDLE_BELLS_MAX times in a row with nothing new is keeping the thread
 * busy on purpose: its doorbell goes unwatched for BELL_MUTE_MS, after
 * which its ring is read and the doorbell watched again.
 */
#define IDLE_BELLS_MAX 8
#define BELL_MUTE_MS 20

/*
 * A doorbell is an eventfd watched edge-triggered, here and in the pool's
 * fd for event loops (pool->loop_fd): each ring is one event in each set,
 * so the loop's thread and this one wake side by side, and whichever
 * takes rx_lock first reads the answer.  Nobody reads the counter, which
 * would race: a read here could clear the readiness the loop was woken
 * for before it looked.  A worker that rings without end costs one event
 * per pass (and is muted), never a loop that spins.
 */
#define BELL_EVENTS (EPOLLIN | EPOLLET)

/* The control eventfd's event, and the template's; workers carry their
 * own. */
static struct service_event control_event = {EV_CONTROL, NULL};
static struct service_event template_event = {EV_TEMPLATE, NULL};

/* One shot: a dead template's pidfd stays readable until the restart
 * thread reaps it, or for good while the pool is closing. */
int pyproc__service_watch_template(pyproc_pool *p, int pidfd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = &template_event};

    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0 ? -errno : 0;
}

void pyproc__service_unwatch_template(pyproc_pool *p, int pidfd)
{
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, pidfd, NULL);
}

struct service_cmd {
    int (*fn)(pyproc_pool *p, void *arg);
    void *arg;
    int result;
    bool done;
    struct service_cmd *next;
};

int pyproc__service_watch(pyproc_pool *p, struct pp_worker *w)
{
    w->bell_ev = (struct service_event){EV_BELL, w};
    w->pid_ev = (struct service_event){EV_PIDFD, w};
    struct epoll_event bell = {.events = BELL_EVENTS, .data.ptr = &w->bell_ev};
    struct epoll_event loop_bell = {.events = BELL_EVENTS, .data.u64 = pyproc__loop_key(w)};
    struct epoll_event pid = {.events = EPOLLIN, .data.ptr = &w->pid_ev};

    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, w->rx.doorbell_fd, &bell) < 0 ||
        epoll_ctl(p->loop_fd, EPOLL_CTL_ADD, w->rx.doorbell_fd, &loop_bell) < 0 ||
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, w->pidfd, &pid) < 0)
        return -errno;
    for (int k = 0; k < 2; k++) {
        w->out[k].ev = (struct service_event){EV_STDOUT + k, w};
        struct epoll_event out = {.events = EPOLLIN, .data.ptr = &w->out[k].ev};
        if (w->out[k].fd >= 0 && epoll_ctl(p->epfd, EPOLL_CTL_ADD, w->out[k].fd, &out) < 0)
            return -errno;
    }
    w->watched = true;
    return 0;
}

/* Queue w for a batch of its replies, unless it is queued already. */
static void busy_add(pyproc_pool *p, struct pp_worker *w)
{
    if (w->busy || !w->watched)
        return;
    w->busy = true;
    w->busy_next = NULL;
    if (p->busy_tail)
        p->busy_tail->busy_next = w;
    else
        p->busy_head = w;
    p->busy_tail = w;
}

static void busy_remove(pyproc_pool *p, struct pp_worker *w)
{
    struct pp_worker **link = &p->busy_head, *prev = NULL;

    if (!w->busy)
        return;
    while (*link != w) {
        prev = *link;
        link = &prev->busy_next;
    }
    *link = w->busy_next;
    if (p->busy_tail == w)
        p->busy_tail = prev;
    w->busy = false;
    w->busy_next = NULL;
}

/* Once it returns, no event of the epoll set points at w.  Its output
 * pipes are read on until it is reaped (pyproc__worker_stop()). */
/* Take w off the list of muted workers; its doorbell stays as it is. */
static void muted_remove(pyproc_pool *p, struct pp_worker *w)
{
    struct pp_worker **link = &p->muted_head;

    if (!w->bell_muted)
        return;
    while (*link != w)
        link = &(*link)->muted_next;
    *link = w->muted_next;
    w->bell_muted = false;
    w->muted_next = NULL;
}

void pyproc__service_unwatch(pyproc_pool *p, struct pp_worker *w)
{
    busy_remove(p, w);
    muted_remove(p, w);
    w->watched = false;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, w->rx.doorbell_fd, NULL);
    epoll_ctl(p->loop_fd, EPOLL_CTL_DEL, w->rx.doorbell_fd, NULL);
    if (w->pidfd >= 0)
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, w->pidfd, NULL);
    for (int k = 0; k < 2; k++)
        if (w->out[k].fd >= 0)
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, w->out[k].fd, NULL);
}

/* The doorbell rang: queue the worker.  Its counter is never read (see
 * BELL_EVENTS). */
static void bell(pyproc_pool *p, struct pp_worker *w)
{
    if (!w->watched)
        return;
    w->rang = true;
    busy_add(p, w);
}

/* Watch w's doorbell for events (BELL_EVENTS), or stop (0), in both sets. */
static int bell_watch(pyproc_pool *p, struct pp_worker *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = &w->bell_ev};
    struct epoll_event loop_ev = {.events = events, .data.u64 = pyproc__loop_key(w)};

    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, w->rx.doorbell_fd, &ev) < 0)
        return -errno;
    epoll_ctl(p->loop_fd, EPOLL_CTL_MOD, w->rx.doorbell_fd, &loop_ev);
    return 0;
}

static void bell_mute(pyproc_pool *p, struct pp_worker *w)
{
    if (w->bell_muted || bell_watch(p, w, 0) < 0)
        return;
    w->bell_muted = true;
    w->unmute_ns = shm_now_ns() + BELL_MUTE_MS * 1000000LL;
    w->muted_next = p->muted_head;
    p->muted_head = w;
}

/* Watch the doorbells whose time is up again, and read their rings. */
static void bell_unmute_due(pyproc_pool *p)
{
    struct pp_worker **link = &p->muted_head;
    int64_t now = shm_now_ns();

    while (*link) {
        struct pp_worker *w = *link;
        if (w->unmute_ns > now || bell_watch(p, w, BELL_EVENTS) < 0) {
            link = &w->muted_next;
            continue;
        }
        *link = w->muted_next;
        w->bell_muted = false;
        w->muted_next = NULL;
        busy_add(p, w);
    }
}

/* After a batch: count a bell that brought nothing new, and mute the
 * doorbell of a worker that keeps ringing so. */
static void bell_count(pyproc_pool *p, struct pp_worker *w)
{
    uint64_t head = shm_ring_consumed(&w->rx);

    if (!w->rang)
        return;
    w->rang = false;
    if (head != w->bell_head) {
        w->bell_head = head;
        w->idle_bells = 0;
    } else if (++w->idle_bells >= IDLE_BELLS_MAX) {
        w->idle_bells = 0;
        bell_mute(p, w);
    }
}

/*
 * One batch of w's replies.  Returns true when w must be served again:
 * frames are left (its doorbell stays off meanwhile, since consumer_wait
 * stays SHM_AWAKE), or one slipped in as we re-armed the doorbell.  A
 * caller polling the ring drains it itself, and re-arms when it leaves.
 */
static bool serve_one(pyproc_pool *p, struct pp_worker *w)
{
    int64_t until = shm_now_ns() + SERVICE_TURN_NS;
    bool more;

    do {
        pthread_mutex_lock(&w->rx_lock);
        more = p->service_ops->drain(w, SERVICE_BATCH_MSGS, NULL);
        pthread_mutex_unlock(&w->rx_lock);
    } while (more && atomic_load_explicit(&w->pollers, memory_order_relaxed) == 0 &&
             shm_now_ns() < until);
    bell_count(p, w);
    /* A poller re-arms the doorbell itself when it leaves (worker.c). */
    if (atomic_load_explicit(&w->pollers, memory_order_relaxed) > 0 || shm_ring_is_closed(&w->rx))
        return false;
    return more || pyproc__chan_rearm(w);
}

/* One batch for each worker queued now; those with more go to the back. */
static void serve_busy(pyproc_pool *p)
{
    struct pp_worker *w = p->busy_head;

    p->busy_head = p->busy_tail = NULL;
    while (w) {
        struct pp_worker *next = w->busy_next;
        w->busy = false;
        w->busy_next = NULL;
        if (serve_one(p, w))
            busy_add(p, w);
        w = next;
    }
}

static void run_commands(pyproc_pool *p)
{
    uint64_t n;

    while (read(p->control_fd, &n, sizeof n) > 0)
        ;
    pthread_mutex_lock(&p->lock);
    while (p->cmds) {
        struct service_cmd *c = p->cmds;
        p->cmds = c->next;
        pthread_mutex_unlock(&p->lock);
        int result = c->fn(p, c->arg);
        pthread_mutex_lock(&p->lock);
        c->result = result;
        c->done = true;
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->lock);
}

/* A worker exited: fail its calls, and respawn it if it holds a slot. */
static void died(pyproc_pool *p, struct pp_worker *w)
{
    pyproc__service_unwatch(p, w);
    p->service_ops->died(p, w);
}

/* Drop the events of w later in this batch: it may be freed once its
 * respawn is done. */
static void forget_events(struct epoll_event *ev, int from, int n, struct pp_worker *w)
{
    for (int j = from; j < n; j++) {
        struct service_event *e = ev[j].data.ptr;
        if (e && e->worker == w)
            ev[j].data.ptr = NULL;
    }
}

/*
 * Worker events first, then a batch of replies for each busy worker,
 * commands last: a command may stop a worker and let its owner free it,
 * and a later event of this batch must not reach it.
 */
static void handle_batch(pyproc_pool *p, struct epoll_event *ev, int n)
{
    bool commands = false;

    for (int i = 0; i < n; i++) {
        struct service_event *e = ev[i].data.ptr;
        if (!e)
            continue;
        if (e->kind == EV_CONTROL) {
            commands = true;
        } else if (e->kind == EV_BELL) {
            bell(p, e->worker);
        } else if (e->kind == EV_TEMPLATE) {
            p->service_ops->template_died(p);
        } else if (e->kind == EV_PIDFD) {
            died(p, e->worker);
            forget_events(ev, i + 1, n, e->worker);
        } else {
            pyproc__output_read(e->worker, e->kind - EV_STDOUT);
        }
    }
    serve_busy(p);
    if (commands)
        run_commands(p);
}

static void *service_main(void *arg)
{
    pyproc_pool *p = arg;
    struct epoll_event ev[32];

    for (;;) {
        int ms = p->service_ops->tick(p), lease = pyproc__lease_check(p);
        if (p->muted_head && (ms < 0 || ms > BELL_MUTE_MS))
            ms = BELL_MUTE_MS;
        if (lease >= 0 && (ms < 0 || ms > lease))
            ms = lease;
        /* Replies left over: look for events without sleeping. */
        int n = epoll_wait(p->epfd, ev, 32, p->busy_head ? 0 : ms);
        if (p->muted_head)
            bell_unmute_due(p);
        if (n < 0 && errno != EINTR)
            break;
        handle_batch(p, ev, n > 0 ? n : 0);
        pthread_mutex_lock(&p->lock);
        bool stop = p->stopping && !p->cmds;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            break;
    }
    return NULL;
}

int pyproc__service_start(pyproc_pool *p, const struct pp_service_ops *ops)
{
    struct epoll_event ctl = {.events = EPOLLIN, .data.ptr = &control_event};
    sigset_t all, old;
    int err;

    p->service_ops = ops;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0)
        return -errno;
    p->control_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->control_fd < 0)
        return -errno;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->control_fd, &ctl) < 0)
        return -errno;
    /* The application's signal handlers should not run on our thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&p->service, NULL, service_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err < 0)
        return err;
    p->service_running = true;
    return 0;
}

static int stop_thread(pyproc_pool *p, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void pyproc__service_stop(pyproc_pool *p)
{
    if (p->service_running) {
        pyproc__service_run(p, stop_thread, NULL);
        pthread_join(p->service, NULL);
        p->service_running = false;
    }
    if (p->control_fd >= 0)
        close(p->control_fd);
    if (p->epfd >= 0)
        close(p->epfd);
    p->control_fd = p->epfd = -1;
}

int pyproc__service_run(pyproc_pool *p, int (*fn)(pyproc_pool *, void *), void *arg)
{
    struct service_cmd c = {.fn = fn, .arg = arg};
    uint64_t one = 1;

    if (pthread_equal(pthread_self(), p->service))
        return fn(p, arg);
    pthread_mutex_lock(&p->lock);
    struct service_cmd **tail = &p->cmds;
    while (*tail)
        tail = &(*tail)->next;
    *tail = &c;
    pthread_mutex_unlock(&p->lock);
    if (write(p->control_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return -errno;
    pthread_mutex_lock(&p->lock);
    while (!c.done)
        pthread_cond_wait(&p->changed, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return c.result;
}

void pyproc__service_kick(pyproc_pool *p)
{
    uint64_t one = 1;

    if (write(p->control_fd, &one, sizeof one) < 0) {
        /* A full counter: the service thread is due to wake anyway. */
    }
}
