/*
 * Maps against fake workers (tests/fake_worker.h): the MAP_CHUNK and
 * MAP_ITEMS frames as the host writes and reads them, and what it does
 * with a worker that answers a chunk wrongly.
 *
 * The fake worker answers every MAP_CHUNK [ref, first, [items]] by its
 * mode: "good" answers each item with its index, in two MAP_ITEMS, then
 * END; "twice" answers the first item twice; "outside" answers an index
 * past the chunk; "other" answers through a MAP_ITEMS whose id is a plain
 * call's; "silent_end" ends the chunk with END and answers nothing.
 * An answer that breaks the rules (value FORGED) must never reach the
 * reader, and its worker is killed and replaced; an END that left items
 * unanswered ends them with -EPROTO.
 */
#include <errno.h>
#include <msgpuck.h>
#include <unistd.h>

#include "fake_worker.h"

/* ---- the fake worker ---- */

/* The value of an answer that breaks the rules: it must never be read. */
#define FORGED 666

/* The head of a MAP_ITEMS with n entries: [busy_ns, array32 n]. */
static char *items_head(char *p, uint32_t n)
{
    p = mp_encode_array(p, 2);
    *p++ = (char)0xcf;
    p = mp_store_u64(p, 1000);
    *p++ = (char)0xdd;
    return mp_store_u32(p, n);
}

static char *entry(char *p, uint64_t index, int64_t value)
{
    p = mp_encode_array(p, 3);
    p = mp_encode_uint(p, index);
    p = mp_encode_bool(p, true);
    return value < 0 ? mp_encode_int(p, value) : mp_encode_uint(p, (uint64_t)value);
}

static void send_items(uint64_t id, const char *buf, const char *end)
{
    fake_write(SHM_FRAME_MAP_ITEMS, id, buf, (size_t)(end - buf));
}

static uint64_t last_call_id; /* a plain call's id, for "other" */

static void serve_chunk(const struct shm_msg *m)
{
    const char *p = (const char *)m->payload;
    char buf[4096], *w;
    uint32_t len, n;
    uint64_t first;

    if (mp_decode_array(&p) != 3)
        _exit(3);
    mp_decode_str(&p, &len);
    first = mp_decode_uint(&p);
    n = mp_decode_array(&p);
    if (n > 100)
        _exit(3);

    if (!strcmp(fake.mode, "silent_end")) {
        fake_write(SHM_FRAME_END, m->id, "\xc0", 1);
        return;
    }
    if (!strcmp(fake.mode, "twice") || !strcmp(fake.mode, "outside") ||
        !strcmp(fake.mode, "other")) {
        uint64_t index = !strcmp(fake.mode, "outside") ? first + n : first;
        uint64_t id = !strcmp(fake.mode, "other") ? last_call_id : m->id;
        w = items_head(buf, 1);
        w = entry(w, first, 7);
        send_items(m->id, buf, w);
        w = items_head(buf, 1);
        w = entry(w, index, FORGED);
        send_items(id, buf, w);
        return; /* no END: the worker is condemned before */
    }
    /* good: the first half, then the rest, then END. */
    uint32_t half = n / 2;
    w = items_head(buf, half);
    for (uint32_t i = 0; i < half; i++)
        w = entry(w, first + i, (int64_t)(first + i));
    if (half)
        send_items(m->id, buf, w);
    w = items_head(buf, n - half);
    for (uint32_t i = half; i < n; i++)
        w = entry(w, first + i, (int64_t)(first + i));
    send_items(m->id, buf, w);
    fake_write(SHM_FRAME_END, m->id, "\xc0", 1);
}

static void fake_serve(struct shm_msg *m)
{
    if (m->type == SHM_FRAME_MAP_CHUNK) {
        serve_chunk(m);
    } else if (m->type == SHM_FRAME_CALL) {
        if (fake_call_named(m, "hold")) {
            last_call_id = m->id; /* answered never */
            return;
        }
        fake_write_pid(SHM_FRAME_RESULT, m->id);
    } else {
        fake_serve_default(m);
    }
}

static int fake_worker(int argc, char **argv)
{
    fake_attach(argc, argv);
    fake_run(fake_serve, NULL);
}

/* ---- the tests ---- */

/* One answer of a map into result[] and value[] by index, each index
 * answered once. */
static void take(size_t n, int rc, pyproc_msg *m, size_t at, int *result, int64_t *value)
{
    assert_true(rc == 1 || rc < 0);
    assert_true(at < n);
    assert_int_equal(result[at], 1); /* not answered before */
    result[at] = rc == 1 ? 0 : rc;
    value[at] = -1;
    if (rc == 1)
        assert_int_equal(pyproc_msg_read(m, "I", &value[at]), 0);
    pyproc_msg_free(m);
}

/* Push n items to a map on p, end it, and read every answer into
 * result[] by index; returns how many answers came. */
static size_t run_map(pyproc_pool *p, size_t n, int *result, int64_t *value)
{
    pyproc_call *map;
    pyproc_msg *m = NULL;
    size_t at, got = 0;
    int rc;

    for (size_t i = 0; i < n; i++)
        result[i] = 1;
    assert_int_equal(pyproc_map(p, "any.ref", PYPROC_MAP_UNORDERED, &map), 0);
    for (size_t i = 0; i < n;) {
        if ((rc = pyproc_push(map, "i", (int)i)) == 0) {
            i++;
            continue;
        }
        assert_int_equal(rc, -EAGAIN);
        rc = pyproc_next_at(map, &m, &at);
        take(n, rc, m, at, result, value);
        got++;
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while ((rc = pyproc_next_at(map, &m, &at)) != 0) {
        take(n, rc, m, at, result, value);
        got++;
    }
    pyproc_call_free(map);
    return got;
}

static void good_frames_answer_every_item(void **state)
{
    (void)state;
    alarm(30);
    /* A small window keeps chunks within what the fake packs. */
    pyproc_pool *p = fake_pool_new("fake", (pyproc_opts){.workers = 2, .map_window = 64}, "good");
    int result[300];
    int64_t value[300];

    assert_int_equal(run_map(p, 300, result, value), 300);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(result[i], 0);
        assert_int_equal(value[i], i);
    }
    pyproc_pool_free(p);
    alarm(0);
}

/* The worker's answer breaks the rules: no value of it gets through, the
 * worker is killed and replaced, and the pool goes on. */
static void run_hostile(const char *mode)
{
    alarm(30);
    pyproc_pool *p = fake_pool_new("fake", (pyproc_opts){.workers = 1}, mode);
    int pid = fake_pid(p, 0);
    pyproc_call *held = NULL;
    int result[3];
    int64_t value[3];

    if (!strcmp(mode, "other")) /* a plain call for the forged answer */
        assert_int_equal(pyproc_track_func(p, NULL, &held, "hold", NULL), 0);
    assert_int_equal(run_map(p, 3, result, value), 3);
    /* Item 0's first answer came before the broken one; the others were
     * answered before the worker was killed (its last answers are read
     * as any dead worker's are), by its replacement, or failed with it. */
    assert_int_equal(result[0], 0);
    assert_int_equal(value[0], 7);
    for (int i = 1; i < 3; i++)
        assert_true(result[i] == PYPROC_EWORKER ||
                    (result[i] == 0 && (value[i] == 7 || value[i] == i)));
    if (held) {
        assert_int_equal(pyproc_wait(held, NULL, 10000), PYPROC_EWORKER);
        pyproc_call_free(held);
    }
    assert_true(e2e_wait_respawned(p, 0, pid) != pid);
    pyproc_pool_free(p);
    alarm(0);
}

static void an_item_answered_twice_condemns(void **state)
{
    (void)state;
    run_hostile("twice");
}

static void an_index_outside_the_chunk_condemns(void **state)
{
    (void)state;
    run_hostile("outside");
}

static void items_through_another_call_condemn(void **state)
{
    (void)state;
    run_hostile("other");
}

static void an_end_before_the_answers_fails_them(void **state)
{
    (void)state;
    alarm(30);
    pyproc_pool *p = fake_pool_new("fake", (pyproc_opts){.workers = 1}, "silent_end");
    int pid = fake_pid(p, 0);
    int result[5];
    int64_t value[5];

    assert_int_equal(run_map(p, 5, result, value), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(result[i], -EPROTO);
    assert_int_equal(fake_pid(p, 0), pid); /* a mistake, not an attack */
    pyproc_pool_free(p);
    alarm(0);
}

int main(int argc, char **argv)
{
    if (fake_started_as_worker(argc, argv))
        return fake_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_frames_answer_every_item),
        cmocka_unit_test(an_item_answered_twice_condemns),
        cmocka_unit_test(an_index_outside_the_chunk_condemns),
        cmocka_unit_test(items_through_another_call_condemn),
        cmocka_unit_test(an_end_before_the_answers_fails_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
