/*
 * Bringing workers up: at pool growth (pyproc_add_proc) and after a death.
 *
 * A new worker is spawned on the service thread (see service.c for why),
 * then waited for and brought up to date (every add_sub, add_native and
 * set_attr of the pool, in order) on the thread that asked, and only then
 * put in its slot, so no call reaches it before it has what the others
 * have.  The history is replayed in two passes: all of it without
 * history_lock, then, holding it, what the history gained meanwhile; the
 * worker is put in its slot before the lock goes (see broadcast.c).
 *
 * A worker that dies is respawned at once, unless it died soon after it
 * started without serving a call: then the next try waits, longer each
 * time, and after
 * MAX_FAST_DEATHS such deaths in a row its slot stays dead, with the reason
 * as the error of every call sent there.  A crash loop never spins.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "msg.h"
#include "chan.h"
#include "service.h"
#include "supervise.h"

#define STOP_GRACE_MS 2000 /* pyproc_pool_free(): a worker's time to exit */
#define READY_TIMEOUT_MS 10000
#define FAST_DEATH_NS (2000 * 1000000LL) /* died this soon after READY */
#define MAX_FAST_DEATHS 5
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

struct spawn_req {
    int index;
    struct pp_worker *w;
};

static int spawn_on_service(pyproc_pool *p, void *arg)
{
    struct spawn_req *r = arg;
    int err = pyproc__worker_spawn(p, r->index, &r->w);

    if (err == 0 && (err = pyproc__service_watch(p, r->w)) < 0) {
        pyproc__worker_unref(r->w);
        r->w = NULL;
    }
    return err;
}

static int stop_on_service(pyproc_pool *p, void *arg)
{
    struct pp_worker *w = arg;

    pyproc__service_unwatch(p, w);
    pyproc__worker_ask_stop(w);
    pyproc__worker_stop(w, 1000);
    return 0;
}

void pyproc__worker_discard(pyproc_pool *p, struct pp_worker *w)
{
    pyproc__service_run(p, stop_on_service, w);
    pyproc__worker_unref(w);
}

/* Describe a failed replay in *why (may be NULL). */
static void replay_failed(char **why, pyproc_msg *m, int err)
{
    if (why && asprintf(why, "replaying the pool's history failed: %s",
                        m && pyproc_msg_error(m) ? pyproc_msg_error(m) : pyproc_strerror(err)) < 0)
        *why = NULL;
}

int pyproc__worker_replay(pyproc_pool *p, struct pp_worker *w, char **why)
{
    for (;;) {
        struct history_entry e;
        pyproc_msg *m = NULL;
        pyproc_call *c;

        /* Entries never move their payload nor leave, so e's payload
         * stays valid unlocked; the array itself may be reallocated. */
        pthread_mutex_lock(&p->lock);
        bool more = w->replayed < p->nhistory;
        if (more)
            e = p->history[w->replayed];
        pthread_mutex_unlock(&p->lock);
        if (!more)
            return 0;
        int err = pyproc__call_send_raw_until(w, e.type, &e.payload,
                                              shm_now_ns() + READY_TIMEOUT_MS * 1000000LL, &c);
        if (err == 0) {
            err = pyproc__call_wait(c, &m, READY_TIMEOUT_MS);
            pyproc_call_free(c);
        }
        if (err < 0) {
            replay_failed(why, m, err);
            pyproc_msg_free(m);
            return err;
        }
        pyproc_msg_free(m);
        w->replayed++;
    }
}

int pyproc__worker_bring_up(pyproc_pool *p, int index, struct pp_worker **ret, char **why)
{
    struct spawn_req r = {.index = index};
    int err = pyproc__service_run(p, spawn_on_service, &r);

    if (why)
        *why = NULL;
    if (err < 0) {
        if (why && asprintf(why, "worker %d could not be started: %s", index, strerror(-err)) < 0)
            *why = NULL;
        return err;
    }
    err = pyproc__worker_wait_ready(r.w, p->start_timeout_ms);
    if (err == 0)
        err = pyproc__worker_replay(p, r.w, why);
    if (err < 0) {
        pyproc__service_run(p, stop_on_service, r.w);
        if (why && !*why) {
            pthread_mutex_lock(&p->lock);
            *why = r.w->death ? strdup(r.w->death) : NULL;
            pthread_mutex_unlock(&p->lock);
        }
        pyproc__worker_unref(r.w);
        return err;
    }
    r.w->ready_ns = shm_now_ns();
    *ret = r.w;
    return 0;
}

/* ---- respawn ---- */

struct respawn {
    pyproc_pool *pool;
    struct pp_worker *dead; /* a reference */
};

static bool closing(pyproc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    bool c = p->closing;
    pthread_mutex_unlock(&p->lock);
    return c;
}

/* The CLOCK_MONOTONIC time ms from now, for pool->changed's waits. */
static struct timespec deadline_in(int ms)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000;
    if (t.tv_nsec >= 1000000000) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000;
    }
    return t;
}

/* Sleep ms, waking early when the pool closes.  False when it closed. */
static bool backoff(pyproc_pool *p, int ms)
{
    struct timespec until = deadline_in(ms);

    pthread_mutex_lock(&p->lock);
    while (!p->closing && pthread_cond_timedwait(&p->changed, &p->lock, &until) != ETIMEDOUT)
        ;
    bool open = !p->closing;
    pthread_mutex_unlock(&p->lock);
    return open;
}

/* Leave the slot dead for good, saying why in its calls' errors. */
static void give_up(pyproc_pool *p, struct pp_worker *dead, int tries, const char *last)
{
    char *why = NULL;

    if (asprintf(&why,
                 "worker %d keeps dying soon after it starts; gave up after %d tries"
                 " (last: %s)",
                 dead->index, tries, last ? last : "unknown") < 0)
        why = NULL;
    fprintf(stderr, "pyproc %s: %s\n", p->name, why ? why : "a worker keeps dying");
    pthread_mutex_lock(&p->lock);
    if (why) {
        free(dead->death);
        dead->death = why;
    }
    pthread_mutex_unlock(&p->lock);
}

/*
 * Put w in old's slot, unless the slot changed or the pool closes.  A
 * planned replacement moves old, with its slot's reference, to the
 * retired list, where it finishes its calls (recycle.c).
 */
static bool place(pyproc_pool *p, struct pp_worker *old, struct pp_worker *w, bool planned)
{
    bool placed = false;

    pthread_mutex_lock(&p->lock);
    if (old->index < p->nworkers && p->workers[old->index] == old && !p->closing) {
        w->published = true;
        p->workers[old->index] = w;
        if (planned) {
            old->retired_next = p->retired;
            p->retired = old;
        }
        atomic_fetch_add_explicit(planned ? &w->stats->recycles : &w->stats->restarts, 1,
                                  memory_order_relaxed);
        pthread_cond_broadcast(&p->changed); /* for pick_pinned() (start.c) */
        placed = true;
    }
    pthread_mutex_unlock(&p->lock);
    return placed;
}

int pyproc__worker_publish(pyproc_pool *p, struct pp_worker *old, struct pp_worker *w, bool planned,
                           bool *ret_placed, char **why)
{
    bool placed = false;

    pthread_mutex_lock(&p->history_lock);
    /* A closing pool will not take w: no need to bring it up to date. */
    int err = closing(p) ? 0 : pyproc__worker_replay(p, w, why);
    if (err == 0)
        placed = place(p, old, w, planned);
    pthread_mutex_unlock(&p->history_lock);
    /*
     * A w that found no slot is running and watched: stop and unwatch it
     * on the service thread first, or its pidfd event would reach it
     * after it is freed.
     */
    if (!placed)
        pyproc__service_run(p, stop_on_service, w);
    /* Placed after a death, the slot's reference to old is ours to drop
     * now; after a planned one, the retired list holds it. */
    if (!placed)
        pyproc__worker_unref(w);
    else if (!planned)
        pyproc__worker_unref(old);
    if (ret_placed)
        *ret_placed = placed;
    return err;
}

static void *respawn_main(void *arg)
{
    struct respawn *r = arg;
    pyproc_pool *p = r->pool;
    struct pp_worker *dead = r->dead, *w;
    /* A worker that served calls before it died was not failing to start. */
    /* serving is a hint for this choice only: relaxed (drain.c). */
    bool fast = !atomic_load_explicit(&dead->serving, memory_order_relaxed) &&
                (dead->ready_ns == 0 || shm_now_ns() - dead->ready_ns < FAST_DEATH_NS);
    int deaths = fast ? dead->fast_deaths + 1 : 0;
    char *last = NULL;

    pthread_mutex_lock(&p->lock);
    if (dead->death)
        last = strdup(dead->death);
    pthread_mutex_unlock(&p->lock);
    for (;;) {
        if (deaths >= MAX_FAST_DEATHS) {
            give_up(p, dead, deaths, last);
            break;
        }
        if (deaths > 0) {
            int ms = BACKOFF_FIRST_MS << (deaths - 1);
            if (!backoff(p, ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS))
                break;
        }
        if (closing(p))
            break;
        char *why = NULL;
        int err = pyproc__worker_bring_up(p, dead->index, &w, &why);
        if (err == 0) {
            w->fast_deaths = deaths;
            err = pyproc__worker_publish(p, dead, w, false, NULL, &why);
        }
        if (err == 0) {
            free(why);
            break;
        }
        free(last);
        last = why;
        deaths++;
    }
    free(last);
    pyproc__worker_unref(dead);
    free(r);
    pthread_mutex_lock(&p->lock);
    p->respawning--;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

void pyproc__respawn_later(pyproc_pool *p, struct pp_worker *dead)
{
    struct respawn *r = malloc(sizeof *r);
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;

    if (!r)
        return;
    *r = (struct respawn){p, dead};
    pthread_mutex_lock(&p->lock);
    bool go = !p->closing && dead->index < p->nworkers && p->workers[dead->index] == dead;
    if (go)
        p->respawning++;
    pthread_mutex_unlock(&p->lock);
    if (!go) {
        free(r);
        return;
    }
    pyproc__worker_ref(dead);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&t, &attr, respawn_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        pyproc__worker_unref(dead);
        free(r);
        pthread_mutex_lock(&p->lock);
        p->respawning--;
        pthread_mutex_unlock(&p->lock);
    }
}

void pyproc__respawn_wait(pyproc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->closing = true;
    pthread_cond_broadcast(&p->changed);
    while (p->respawning > 0)
        pthread_cond_wait(&p->changed, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* Put w, brought up at index nworkers, in a new slot (pool->lock held). */
static int append_slot(pyproc_pool *p, struct pp_worker *w)
{
    struct pp_worker **ws = realloc(p->workers, (size_t)(p->nworkers + 1) * sizeof *ws);

    if (!ws)
        return -ENOMEM;
    p->workers = ws;
    w->published = true;
    ws[p->nworkers++] = w; /* the slot takes our reference */
    return 0;
}

int pyproc__workers_add_one(pyproc_pool *p, int *ind)
{
    struct pp_worker *w = NULL;
    int index = pyproc_workers(p);
    int err = pyproc__worker_bring_up(p, index, &w, NULL);

    if (err < 0)
        return err;
    /* What the history gained since, then the slot, in one step as seen
     * by pyproc__broadcast(). */
    pthread_mutex_lock(&p->history_lock);
    err = pyproc__worker_replay(p, w, NULL);
    if (err == 0) {
        pthread_mutex_lock(&p->lock);
        err = append_slot(p, w);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->history_lock);
    if (err < 0)
        pyproc__worker_discard(p, w);
    else if (ind)
        *ind = index;
    return err;
}

PYPROC_EXPORT int pyproc_add_proc(pyproc_pool *p, int *ind)
{
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    pthread_mutex_lock(&p->grow_lock);
    err = pyproc__workers_add_one(p, ind);
    pthread_mutex_unlock(&p->grow_lock);
    return err;
}

/* On the service thread: every worker's segment, rings and fds. */
static int prepare_all(pyproc_pool *p, void *arg)
{
    struct pp_spawn *s = arg;

    for (int i = 0; i < p->nworkers; i++) {
        int err = pyproc__worker_prepare(p, i, &s[i]);
        if (err < 0)
            return err;
    }
    return 0;
}

/* On the service thread: start and watch every worker prepared. */
static int launch_all(pyproc_pool *p, void *arg)
{
    struct pp_spawn *s = arg;

    for (int i = 0; i < p->nworkers; i++) {
        int err = pyproc__worker_launch(p, &s[i]);
        /* Launched (maybe anew, with new fds), or dropped by the launch. */
        struct pp_worker *w = s[i].w;
        s[i].w = NULL;
        if (err < 0)
            return err;
        p->workers[i] = w;
        w->published = true;
        if ((err = pyproc__service_watch(p, w)) < 0)
            return err;
    }
    return 0;
}

/*
 * On the service thread: ask all to stop at once, then wait for each.
 * The slots are read without the lock: the pool is closing and no respawn
 * runs any more (pyproc__respawn_wait()), so nothing changes them.
 */
static int stop_all(pyproc_pool *p, void *arg)
{
    (void)arg;
    for (int i = 0; i < p->nworkers; i++)
        if (p->workers[i])
            pyproc__worker_ask_stop(p->workers[i]);
    for (int i = 0; i < p->nworkers; i++)
        if (p->workers[i])
            pyproc__worker_stop(p->workers[i], STOP_GRACE_MS);
    return 0;
}

/*
 * Wait until workers [0, n) are ready, one has died, or time runs out; with
 * until_closing, also until the pool starts closing (-ECANCELED), so that
 * pyproc_pool_free() need not wait out the start of a worker it will stop.
 */
static int wait_ready(pyproc_pool *p, struct pp_worker **ws, int n, int timeout_ms,
                      bool until_closing)
{
    struct timespec until = deadline_in(timeout_ms);
    int err = 0;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        int ready = 0;
        for (int i = 0; i < n; i++) {
            /* Acquire: pairs with the reaper's release store (spawn.c). */
            if (atomic_load_explicit(&ws[i]->dead, memory_order_acquire))
                err = PYPROC_EWORKER;
            ready += atomic_load_explicit(&ws[i]->ready, memory_order_acquire);
        }
        if (err || ready == n)
            break;
        if (until_closing && p->closing) {
            err = -ECANCELED;
            break;
        }
        if (pthread_cond_timedwait(&p->changed, &p->lock, &until) == ETIMEDOUT) {
            err = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return err;
}

int pyproc__worker_wait_ready(struct pp_worker *w, int timeout_ms)
{
    return wait_ready(w->pool, &w, 1, timeout_ms, true);
}

/*
 * A pool's template starts Python meanwhile (pyproc__template_begin()),
 * so the workers are prepared first and launched once it is up.
 */
int pyproc__workers_start(pyproc_pool *p)
{
    struct pp_spawn *s = calloc((size_t)p->nworkers, sizeof *s);
    int err = s ? pyproc__service_run(p, prepare_all, s) : -ENOMEM;

    if (err == 0 && p->tmpl)
        pyproc__template_finish(p);
    if (err == 0)
        err = pyproc__service_run(p, launch_all, s);
    for (int i = 0; s && i < p->nworkers; i++)
        if (s[i].w)
            pyproc__spawn_abandon(&s[i]);
    free(s);
    if (err == 0)
        err = wait_ready(p, p->workers, p->nworkers, p->start_timeout_ms, false);
    return err;
}

void pyproc__workers_stop(pyproc_pool *p)
{
    pyproc__service_run(p, stop_all, NULL);
}
