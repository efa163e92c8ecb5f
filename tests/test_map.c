/*
 * Maps end to end: pyproc_map(), pyproc_push(), pyproc_next_at() over
 * real workers running tests/py/e2e/mapping.py.  Every wait is bounded by
 * alarm().
 */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"

/* Results of a map: for each input index, how many answers came, the
 * result of the last and its value (or -1). */
struct seen {
    size_t n;
    int *count;
    int *result;
    int64_t *value;
    char **error;
    size_t order_breaks; /* answers that came before a lower index */
    size_t last;
    size_t total;
};

static struct seen *seen_new(size_t n)
{
    struct seen *s = calloc(1, sizeof *s);
    s->n = n;
    s->count = calloc(n, sizeof *s->count);
    s->result = calloc(n, sizeof *s->result);
    s->value = calloc(n, sizeof *s->value);
    s->error = calloc(n, sizeof *s->error);
    s->last = SIZE_MAX;
    return s;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->error[i]);
    free(s->count);
    free(s->result);
    free(s->value);
    free(s->error);
    free(s);
}

/* One answer of pyproc_next_at(): rc 1 or an item's error. */
static void seen_add(struct seen *s, int rc, pyproc_msg *m, size_t at)
{
    assert_true(at < s->n);
    if (s->last != SIZE_MAX && at < s->last)
        s->order_breaks++;
    s->last = at;
    s->count[at]++;
    s->total++;
    s->result[at] = rc == 1 ? 0 : rc;
    s->value[at] = -1;
    if (rc == 1)
        assert_int_equal(pyproc_msg_read(m, "I", &s->value[at]), 0);
    else if (m && pyproc_msg_error(m)) {
        free(s->error[at]);
        s->error[at] = strdup(pyproc_msg_error(m));
    }
    pyproc_msg_free(m);
}

/* Read one answer; false at the end.  An answer that is no item (-EAGAIN
 * or a bad handle) fails the test. */
static bool read_one(pyproc_call *map, struct seen *s)
{
    pyproc_msg *m = NULL;
    size_t at = SIZE_MAX;
    int rc = pyproc_next_at(map, &m, &at);

    if (rc == 0)
        return false;
    assert_true(rc == 1 || (rc < 0 && rc != -EAGAIN && rc != -EINVAL));
    seen_add(s, rc, m, at);
    return true;
}

/* Push n items of fmt's single int argument i (and extra ints after it),
 * reading whenever the window is full, then end the input and read the
 * rest. */
static void run_ints(pyproc_call *map, struct seen *s, size_t n, const char *fmt, int extra1,
                     int extra2)
{
    for (size_t i = 0; i < n;) {
        int rc = pyproc_push(map, fmt, (int)i, extra1, extra2);
        if (rc == 0)
            i++;
        else if (rc == -EAGAIN)
            assert_true(read_one(map, s));
        else
            fail_msg("push: %s", pyproc_strerror(rc));
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
}

static void results_in_input_order(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(3000);

    assert_int_equal(pyproc_map(p, "t.mapping.square", 0, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    assert_int_equal(s->total, s->n);
    assert_int_equal(s->order_breaks, 0);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        assert_int_equal(s->value[i], (int64_t)(i * i));
    }
    /* After the end, the end again. */
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_next(map, &m), 0);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void unordered_answers_every_index_once(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(400);

    /* Items of uneven length, so that answers overtake each other. */
    assert_int_equal(pyproc_map(p, "t.mapping.sleepy", PYPROC_MAP_UNORDERED, &map), 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(pyproc_push(map, "ii", (int)i, i % 7 == 0 ? 5 : 0), 0);
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        assert_int_equal(s->result[i], 0);
        assert_int_equal(s->value[i], (int64_t)i);
    }
    assert_true(s->order_breaks > 0);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void an_item_that_raises_fails_alone(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    pyproc_msg *m = NULL;
    struct seen *s = seen_new(200);

    assert_int_equal(pyproc_map(p, "t.mapping.odd_fails", 0, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    /* The text a failed call has, for the same error. */
    assert_int_equal(pyproc_func(p, "t.mapping.odd_fails", &m, "i", 3), PYPROC_EREMOTE);
    const char *call_text = pyproc_msg_error(m);
    assert_non_null(call_text);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        if (i % 2) {
            assert_int_equal(s->result[i], PYPROC_EREMOTE);
            char want[64];
            snprintf(want, sizeof want, "ValueError: odd item %zu\nTraceback", i);
            assert_non_null(s->error[i]);
            assert_memory_equal(s->error[i], want, strlen(want));
        } else {
            assert_int_equal(s->result[i], 0);
            assert_int_equal(s->value[i], (int64_t)i);
        }
    }
    assert_memory_equal(s->error[3], call_text, strlen("ValueError: odd item 3\nTraceback"));
    pyproc_msg_free(m);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void keyword_arguments_and_bad_pushes(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(100);

    assert_int_equal(pyproc_map(p, "t.mapping.scaled", 0, &map), 0);
    for (size_t i = 0; i < s->n; i++) {
        /* A bad format or argument is refused, and the map goes on. */
        assert_int_equal(pyproc_push(map, "i|q", 1), -EINVAL);
        assert_int_equal(pyproc_push(map, "s", NULL), -EINVAL);
        assert_int_equal(pyproc_push(map, "i|sisi", (int)i, "scale", 3, "add", 1), 0);
    }
    assert_int_equal(pyproc_push_end(map), 0);
    assert_int_equal(pyproc_push(map, "i", 1), -EPIPE);
    while (read_one(map, s))
        ;
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->value[i], (int64_t)(3 * i + 1));
    pyproc_call_free(map);
    seen_free(s);

    /* The hub for a function that takes it; more positional arguments
     * than go on the stack; keywords with them. */
    s = seen_new(30);
    assert_int_equal(pyproc_map(p, "t.mapping.plus_hub", 0, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->value[i], (int64_t)i + 1);
    pyproc_call_free(map);
    seen_free(s);
    s = seen_new(30);
    assert_int_equal(pyproc_map(p, "t.mapping.total", 0, &map), 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(pyproc_push(map, "iiiiiiiiii|si", (int)i, 1, 1, 1, 1, 1, 1, 1, 1, 1, "k",
                                     i % 2 ? 100 : 0),
                         0);
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->value[i], (int64_t)i + 9 + (i % 2 ? 100 : 0));
    pyproc_call_free(map);
    seen_free(s);

    /* An unknown reference fails every item with -ENOENT. */
    s = seen_new(5);
    assert_int_equal(pyproc_map(p, "t.mapping.nothing_here", 0, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->result[i], -ENOENT);
        assert_non_null(strstr(s->error[i], "nothing_here"));
    }
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void a_dead_worker_fails_only_its_items_in_flight(void **state)
{
    (void)state;
    alarm(120);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(300);
    size_t failed = 0;

    /* Item 60 kills its worker; 2 ms items keep chunks small, so only a
     * few items are in flight on it then. */
    assert_int_equal(pyproc_map(p, "t.mapping.crash_on", PYPROC_MAP_UNORDERED, &map), 0);
    run_ints(map, s, s->n, "iii", 60, 2);
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        if (s->result[i] == 0) {
            assert_int_equal(s->value[i], (int64_t)i);
            continue;
        }
        assert_int_equal(s->result[i], PYPROC_EWORKER);
        assert_non_null(strstr(s->error[i], "worker"));
        failed++;
    }
    assert_int_equal(s->result[60], PYPROC_EWORKER);
    /* At most MAP_DEPTH chunks of a few items were in flight there. */
    assert_true(failed >= 1 && failed <= 40);
    /* The worker comes back, and the pool works. */
    assert_true(e2e_wait_respawned(p, 0, -1) > 0 && e2e_wait_respawned(p, 1, -1) > 0);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void a_worker_killed_mid_map_fails_only_its_items_in_flight(void **state)
{
    (void)state;
    alarm(120);
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .map_window = 64});
    pyproc_call *map;
    struct seen *s = seen_new(400);
    int victim = e2e_pid_of(p, 0);
    size_t failed = 0, pushed = 0;

    /* 3 ms items: chunks of one item, MAP_DEPTH of them on each worker. */
    assert_int_equal(pyproc_map(p, "t.mapping.sleepy", 0, &map), 0);
    while (pushed < s->n) {
        int rc = pyproc_push(map, "ii", (int)pushed, 3);
        if (rc == 0) {
            pushed++;
            continue;
        }
        assert_int_equal(rc, -EAGAIN);
        assert_true(read_one(map, s));
        if (s->total == 50)
            assert_int_equal(kill(victim, SIGKILL), 0);
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        if (s->result[i] == 0) {
            assert_int_equal(s->value[i], (int64_t)i);
            continue;
        }
        assert_int_equal(s->result[i], PYPROC_EWORKER);
        assert_non_null(strstr(s->error[i], "worker 0"));
        failed++;
    }
    /* Only what was in flight on worker 0: a few chunks of one item. */
    assert_true(failed >= 1 && failed <= 16);
    assert_true(e2e_wait_respawned(p, 0, victim) > 0);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

/* Both workers answer plain calls again. */
static void pool_still_works(pyproc_pool *p)
{
    for (int i = 0; i < 2; i++) {
        pyproc_msg *m = NULL;
        int64_t v = 0;
        assert_int_equal(pyproc_ind_func(p, i, "t.mapping.square", &m, "i", 7), 0);
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        assert_int_equal(v, 49);
        pyproc_msg_free(m);
    }
}

static void cancel_ends_the_whole_map(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(12);

    /* Plain items stuck in sleep(10): interrupted in the workers. */
    assert_int_equal(pyproc_map(p, "t.mapping.sleepy", 0, &map), 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(pyproc_push(map, "ii", (int)i, 10000), 0);
    usleep(100 * 1000);
    double t0 = e2e_now();
    assert_int_equal(pyproc_cancel(map), 0);
    assert_int_equal(pyproc_push(map, "ii", 0, 0), -ECANCELED);
    while (read_one(map, s))
        ;
    assert_true(e2e_now() - t0 < 5.0);
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->result[i], -ECANCELED);
    pyproc_call_free(map);
    seen_free(s);
    pool_still_works(p);

    /* Coroutine items: their tasks are cancelled. */
    s = seen_new(6);
    assert_int_equal(pyproc_map(p, "t.mapping.aio_wait", PYPROC_MAP_UNORDERED, &map), 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(pyproc_push(map, "i", (int)i), 0);
    usleep(100 * 1000);
    assert_int_equal(pyproc_cancel(map), 0);
    assert_int_equal(pyproc_cancel(map), -EALREADY);
    while (read_one(map, s))
        ;
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++) {
        char name[24];
        assert_int_equal(s->result[i], -ECANCELED);
        snprintf(name, sizeof name, "%zu", i);
        assert_true(e2e_saw(p, 0, "t.mapping.seen_cancelled", name) ||
                    e2e_saw(p, 1, "t.mapping.seen_cancelled", name));
    }
    seen_free(s);
    pyproc_call_free(map);
    pyproc_pool_free(p);
    alarm(0);
}

static void free_mid_map_stops_the_workers(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;

    assert_int_equal(pyproc_map(p, "t.mapping.sleepy", PYPROC_MAP_UNORDERED, &map), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(pyproc_push(map, "ii", i, 10000), 0);
    usleep(100 * 1000);
    double t0 = e2e_now();
    pyproc_call_free(map);
    /* Each worker had a chunk running 10 s; it was interrupted. */
    pool_still_works(p);
    assert_true(e2e_now() - t0 < 5.0);
    pyproc_pool_free(p);
    alarm(0);
}

static void a_full_window_says_eagain(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .map_window = 16});
    pyproc_call *map;
    pyproc_msg *m = NULL;
    size_t at = SIZE_MAX;
    int pushed = 0, rc;

    assert_int_equal(pyproc_map(p, "t.mapping.noop", 0, &map), 0);
    while ((rc = pyproc_push(map, "i", pushed)) == 0)
        pushed++;
    assert_int_equal(rc, -EAGAIN);
    assert_int_equal(pushed, 16);
    assert_int_equal(pyproc_next_at(map, &m, &at), 1);
    assert_int_equal(at, 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_push(map, "i", pushed++), 0);
    assert_int_equal(pyproc_push(map, "i", pushed), -EAGAIN);
    /* Read everything pushed: then nothing is left, and since the input
     * has not ended, -EAGAIN rather than a wait. */
    for (int i = 1; i < pushed; i++) {
        assert_int_equal(pyproc_next_at(map, &m, &at), 1);
        assert_int_equal(at, (size_t)i);
        pyproc_msg_free(m);
    }
    assert_int_equal(pyproc_next(map, &m), -EAGAIN);
    assert_int_equal(pyproc_push_end(map), 0);
    assert_int_equal(pyproc_next(map, &m), 0);
    pyproc_call_free(map);
    pyproc_pool_free(p);
    alarm(0);
}

static void an_empty_map_ends_at_once(void **state)
{
    (void)state;
    alarm(30);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc_map(p, "t.mapping.noop", 0, &map), 0);
    assert_int_equal(pyproc_next(map, &m), -EAGAIN);
    assert_int_equal(pyproc_push_end(map), 0);
    assert_int_equal(pyproc_next(map, &m), 0);
    assert_int_equal(pyproc_wait(map, &m, 0), -EINVAL);
    pyproc_call_free(map);
    assert_int_equal(pyproc_map(p, "t.mapping.noop", 0x8, &map), -EINVAL);
    assert_int_equal(pyproc_map(p, NULL, 0, &map), -EINVAL);
    pyproc_pool_free(p);
    alarm(0);
}

static void coroutine_items(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(500);
    double t0 = e2e_now();

    /* Each sleeps 1 ms: they run concurrently, not one after another. */
    assert_int_equal(pyproc_map(p, "t.mapping.aio_square", 0, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        assert_int_equal(s->value[i], (int64_t)(i * i));
    }
    assert_int_equal(s->order_breaks, 0);
    pyproc_call_free(map);
    seen_free(s);
    (void)t0;

    s = seen_new(50);
    assert_int_equal(pyproc_map(p, "t.mapping.aio_odd_fails", PYPROC_MAP_UNORDERED, &map), 0);
    run_ints(map, s, s->n, "i", 0, 0);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->count[i], 1);
        assert_int_equal(s->result[i], i % 2 ? PYPROC_EREMOTE : 0);
        if (i % 2)
            assert_non_null(strstr(s->error[i], "ValueError: odd item"));
    }
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void slow_items_spread_over_both_workers(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(40);
    int ran[2] = {0, 0};

    assert_int_equal(pyproc_map(p, "t.mapping.where", 0, &map), 0);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(pyproc_push(map, "i", 10), 0);
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->result[i], 0);
        assert_true(s->value[i] == 0 || s->value[i] == 1);
        ran[s->value[i]]++;
    }
    /* Least loaded first: each worker took about half. */
    assert_true(ran[0] >= 10 && ran[1] >= 10);
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static void next_at_numbers_a_generator(void **state)
{
    (void)state;
    alarm(30);
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *gen;
    pyproc_msg *m = NULL;
    size_t at = SIZE_MAX, n = 0;
    int rc;

    assert_int_equal(pyproc_gen(p, "t.proc.gen_range", &gen, "ii", 10, 2010), 0);
    while ((rc = pyproc_next_at(gen, &m, &at)) == 1) {
        int64_t v;
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        assert_int_equal(at, n);
        assert_int_equal(v, (int64_t)(10 + n));
        pyproc_msg_free(m);
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 2000);
    pyproc_call_free(gen);
    pyproc_pool_free(p);
    alarm(0);
}

/* Frees every other answer, from the end, on a thread of its own. */
static void *free_odd_answers(void *arg)
{
    pyproc_msg **kept = arg;

    for (size_t i = 2999; i < 3000; i -= 2)
        pyproc_msg_free(kept[i]);
    return NULL;
}

/*
 * The answers a map hands out share their memory a frame at a time, yet
 * each outlives its map and its pool, reads as it did, and is freed on
 * its own, in any order and on any thread (ASan finds a block freed too
 * early or twice).
 */
static void answers_outlive_their_map_and_pool(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    pyproc_msg *kept[3000] = {0}, *m = NULL;
    size_t at, got = 0;
    pthread_t t;

    assert_int_equal(pyproc_map(p, "t.mapping.square", PYPROC_MAP_UNORDERED, &map), 0);
    for (size_t i = 0; i < 3000; i++)
        while (pyproc_push(map, "i", (int)i) == -EAGAIN) {
            assert_int_equal(pyproc_next_at(map, &m, &at), 1);
            kept[at] = m;
            got++;
        }
    assert_int_equal(pyproc_push_end(map), 0);
    while (pyproc_next_at(map, &m, &at) == 1) {
        kept[at] = m;
        got++;
    }
    assert_int_equal(got, 3000);
    pyproc_call_free(map);
    pyproc_pool_free(p);
    for (size_t i = 0; i < 3000; i++) {
        int64_t v;
        assert_int_equal(pyproc_msg_read(kept[i], "I", &v), 0);
        assert_int_equal(v, (int64_t)(i * i));
    }
    assert_int_equal(pthread_create(&t, NULL, free_odd_answers, kept), 0);
    /* The even ones meanwhile, in a shuffled order. */
    for (size_t k = 0; k < 1500; k++)
        pyproc_msg_free(kept[2 * ((k * 7919) % 1500)]);
    pthread_join(t, NULL);
    alarm(0);
}

/*
 * A push reads its format again when the text changed, even at the same
 * address: a buffer rewritten between pushes, and a bad format in the
 * middle, which fails that push alone.
 */
static void a_changed_format_is_read_again(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    struct seen *s = seen_new(200);
    char fmt[16];

    assert_int_equal(pyproc_map(p, "t.mapping.scaled", 0, &map), 0);
    for (size_t i = 0; i < s->n; i++) {
        strcpy(fmt, i % 2 ? "i|si" : "i");
        if (i == 100) {
            strcpy(fmt, "i|s");
            assert_int_equal(pyproc_push(map, fmt, 1, "scale"), -EINVAL);
            strcpy(fmt, "i");
        }
        assert_int_equal(pyproc_push(map, fmt, (int)i, "scale", 3), 0);
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while (read_one(map, s))
        ;
    assert_int_equal(s->total, s->n);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->value[i], (int64_t)(i % 2 ? 3 * i : i));
    pyproc_call_free(map);
    seen_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note_done(pyproc_pool *pool, int result, pyproc_msg *ret, void *data)
{
    (void)pool;
    *(int *)data = result == 0 ? 1 : -1;
    pyproc_msg_free(ret);
}

/*
 * A map's reader polls its workers across its calls while it reads, and
 * their doorbells stay quiet; one that stops reading gives them back, so
 * that an answer to someone else (an event loop's call here, which waits
 * on the pool's fd) still wakes its waiter.
 */
static void a_reader_that_stops_reading_gives_its_workers_back(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *map;
    pyproc_msg *m = NULL;
    int done = 0;

    assert_int_equal(pyproc_map(p, "t.mapping.noop", PYPROC_MAP_UNORDERED, &map), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(pyproc_push(map, "i", i), 0);
    assert_int_equal(pyproc_next(map, &m), 1);
    pyproc_msg_free(m);
    /* Slower than the call's own spin: its answer comes while nobody
     * but the map's reader, which is not reading, polls the worker. */
    assert_int_equal(pyproc_func_async(p, "t.mapping.sleepy", note_done, &done, "ii", 1, 50), 0);
    for (int64_t until = now_ms() + 5000; !done && now_ms() < until;) {
        struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
        if (poll(&fd, 1, 100) > 0)
            assert_true(pyproc_dispatch(p) >= 0);
    }
    assert_int_equal(done, 1);
    /* And the map reads on. */
    for (int n = 1; n < 200; n++) {
        assert_int_equal(pyproc_next(map, &m), 1);
        pyproc_msg_free(m);
    }
    pyproc_call_free(map);
    pyproc_pool_free(p);
    alarm(0);
}

/* An event loop on its own thread: one async call at a time, counted. */
struct loop {
    pyproc_pool *p;
    atomic_bool stop;
    int calls, failed;
};

static void *loop_main(void *arg)
{
    struct loop *l = arg;

    while (!atomic_load(&l->stop)) {
        int done = 0;
        if (pyproc_func_async(l->p, "t.mapping.noop", note_done, &done, "i", 1) < 0) {
            l->failed++;
            break;
        }
        for (int64_t until = now_ms() + 10000; !done && now_ms() < until;) {
            struct pollfd fd = {.fd = pyproc_pool_fd(l->p), .events = POLLIN};
            if (poll(&fd, 1, 100) > 0 && pyproc_dispatch(l->p) < 0)
                l->failed++;
        }
        if (done != 1)
            l->failed++;
        l->calls++;
        usleep(2000);
    }
    return NULL;
}

/*
 * A reader that keeps reading, slowly, holds its workers' polling; a call
 * of someone else's on the same worker takes it back, so its answer rings
 * the doorbell at once rather than when the reader next drains.  With the
 * reader's lease kept, the loop got about one call through in half a
 * second; without, one every few milliseconds.
 */
static void a_steady_reader_does_not_hold_back_others_answers(void **state)
{
    (void)state;
    alarm(120);
    struct loop l = {.p = e2e_pool(1)};
    pyproc_call *map;
    pyproc_msg *m = NULL;
    pthread_t t;
    int got = 0;

    assert_int_equal(pyproc_map(l.p, "t.mapping.noop", 0, &map), 0);
    assert_int_equal(pthread_create(&t, NULL, loop_main, &l), 0);
    for (int i = 0; i < 6000;) {
        int rc = pyproc_push(map, "i", i);
        if (rc == 0) {
            i++;
            continue;
        }
        assert_int_equal(rc, -EAGAIN);
        assert_int_equal(pyproc_next(map, &m), 1);
        pyproc_msg_free(m);
        got++;
        usleep(300); /* a reader with work of its own per item */
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while (pyproc_next(map, &m) == 1) {
        pyproc_msg_free(m);
        got++;
    }
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    fprintf(stderr, "reader: %d items; the loop meanwhile: %d calls\n", got, l.calls);
    assert_int_equal(got, 6000);
    assert_int_equal(l.failed, 0);
    /* About 2 s of reading, a call every 2 ms or so: far over 50. */
    assert_true(l.calls >= 50);
    pyproc_call_free(map);
    pyproc_pool_free(l.p);
    alarm(0);
}

/* A map outlives its pool: reading its last answers after the pool was
 * freed touches nothing of the pool's (AddressSanitizer would say). */
static void a_map_is_read_after_its_pool_is_freed(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *map;
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc_map(p, "t.mapping.noop", 0, &map), 0);
    assert_int_equal(pyproc_push(map, "i", 3), 0);
    assert_int_equal(pyproc_next(map, &m), 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_next(map, &m), -EAGAIN); /* nothing in flight: polling let go */
    assert_int_equal(pyproc_push(map, "i", 4), 0);
    assert_int_equal(pyproc_push_end(map), 0);
    usleep(200 * 1000);
    pyproc_pool_free(p);
    int rc = pyproc_next(map, &m);
    assert_true(rc == 1 || rc < 0); /* its answer, or its end by the pool's */
    pyproc_msg_free(m);
    while (pyproc_next(map, &m) != 0) /* then the end */
        pyproc_msg_free(m);
    pyproc_call_free(map);
    alarm(0);
}

/* Under AddressSanitizer, whose allocator mallinfo2() does not see. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/* Bytes the host has allocated now. */
static size_t heap_in_use(void)
{
    if (__sanitizer_get_current_allocated_bytes)
        return __sanitizer_get_current_allocated_bytes();
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void a_million_items_in_flat_memory(void **state)
{
    (void)state;
    alarm(240);
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *map;
    pyproc_msg *m = NULL;
    size_t at, got = 0, heap_100k = 0, n = 1000000;
    uint64_t sum = 0;

    assert_int_equal(pyproc_map(p, "t.mapping.noop", PYPROC_MAP_UNORDERED, &map), 0);
    for (size_t i = 0; i < n;) {
        int rc = pyproc_push(map, "i", (int)i);
        if (rc == 0) {
            i++;
            if (i == 100000)
                heap_100k = heap_in_use();
            continue;
        }
        assert_int_equal(rc, -EAGAIN);
        assert_int_equal(pyproc_next_at(map, &m, &at), 1);
        sum += at;
        got++;
        pyproc_msg_free(m);
    }
    size_t heap_1m = heap_in_use();
    assert_true(heap_100k > 0);
    assert_int_equal(pyproc_push_end(map), 0);
    while (pyproc_next_at(map, &m, &at) == 1) {
        sum += at;
        got++;
        pyproc_msg_free(m);
    }
    assert_int_equal(got, n);
    assert_true(sum == (uint64_t)n * (n - 1) / 2);
    fprintf(stderr, "heap after 100k items %zu, after 1M %zu\n", heap_100k, heap_1m);
    /* Ten times the input, the same memory: within 2 MiB. */
    assert_true(heap_1m < heap_100k + (2u << 20));
    pyproc_call_free(map);
    pyproc_pool_free(p);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(results_in_input_order),
        cmocka_unit_test(unordered_answers_every_index_once),
        cmocka_unit_test(an_item_that_raises_fails_alone),
        cmocka_unit_test(keyword_arguments_and_bad_pushes),
        cmocka_unit_test(a_dead_worker_fails_only_its_items_in_flight),
        cmocka_unit_test(a_worker_killed_mid_map_fails_only_its_items_in_flight),
        cmocka_unit_test(cancel_ends_the_whole_map),
        cmocka_unit_test(free_mid_map_stops_the_workers),
        cmocka_unit_test(a_full_window_says_eagain),
        cmocka_unit_test(an_empty_map_ends_at_once),
        cmocka_unit_test(coroutine_items),
        cmocka_unit_test(slow_items_spread_over_both_workers),
        cmocka_unit_test(next_at_numbers_a_generator),
        cmocka_unit_test(answers_outlive_their_map_and_pool),
        cmocka_unit_test(a_changed_format_is_read_again),
        cmocka_unit_test(a_reader_that_stops_reading_gives_its_workers_back),
        cmocka_unit_test(a_steady_reader_does_not_hold_back_others_answers),
        cmocka_unit_test(a_map_is_read_after_its_pool_is_freed),
        cmocka_unit_test(a_million_items_in_flat_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
