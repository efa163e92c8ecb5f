/*
 * End to end: the worker's path for a call.  Arguments go on the stack or
 * in a tuple, with the hub in front or not, with keywords or not; scalar
 * results are encoded straight into the reply ring and every other value
 * by the scratch buffer, byte for byte as msgpack writes them; a loop alone
 * in its interpreter spins holding the GIL, one with a thread does not.
 */
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool; /* 1 worker */

static int setup(void **state)
{
    (void)state;
    pool = e2e_pool(1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

static void hub_and_arguments(void **state)
{
    pyproc_msg *m;
    int hub, v[9];

    (void)state;
    /* The hub in the slot before the stack, no arguments and a few. */
    assert_int_equal(pyproc_func(pool, "t.callpath.hub_args", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[b[]]", &hub), 0);
    assert_true(hub);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "t.callpath.hub_args", &m, "iii", 1, 2, 3), 0);
    assert_int_equal(pyproc_msg_read(m, "[b[iii]]", &hub, &v[0], &v[1], &v[2]), 0);
    assert_true(hub);
    assert_int_equal(v[0] * 100 + v[1] * 10 + v[2], 123);
    pyproc_msg_free(m);
    /* More than the stack holds: the tuple way, with and without the hub. */
    assert_int_equal(pyproc_func(pool, "t.callpath.nine", &m, "iiiiiiiii", 1, 2, 3, 4, 5, 6, 7, 8,
                                 9),
                     0);
    assert_int_equal(pyproc_msg_read(m, "[iiiiiiiii]", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                                     &v[6], &v[7], &v[8]),
                     0);
    for (int i = 0; i < 9; i++)
        assert_int_equal(v[i], i + 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "t.callpath.hub_args", &m, "iiiiiiiii", 1, 2, 3, 4, 5, 6, 7,
                                 8, 9),
                     0);
    assert_int_equal(pyproc_msg_read(m, "[b[iiiiiiiii]]", &hub, &v[0], &v[1], &v[2], &v[3], &v[4],
                                     &v[5], &v[6], &v[7], &v[8]),
                     0);
    assert_true(hub);
    assert_int_equal(v[8], 9);
    pyproc_msg_free(m);
}

/* References of every length: a str 8 in the frame, and one too long for
 * the reference cache, found in the dict every time. */
static void long_references(void **state)
{
    static const char *const refs[] = {
        "t.callpath.a_name_longer_than_a_fixstr_holds",
        "t.callpath.a_name_longer_than_the_reference_cache_holds_which_goes_through_the_dict_"
        "of_references_every_time_it_is_called_by_the_host",
    };
    pyproc_msg *m;
    int v;

    (void)state;
    assert_true(strlen(refs[1]) > 120);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2; i++) {
            assert_int_equal(pyproc_func(pool, refs[i], &m, "i", round * 10 + i), 0);
            assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
            assert_int_equal(v, round * 10 + i);
            pyproc_msg_free(m);
        }
    }
}

static void keywords_with_and_without_the_hub(void **state)
{
    pyproc_msg *m;
    int hub, a, b;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.callpath.hub_kw", &m, "i|si", 4, "b", 5), 0);
    assert_int_equal(pyproc_msg_read(m, "[bii]", &hub, &a, &b), 0);
    assert_true(hub);
    assert_int_equal(a, 4);
    assert_int_equal(b, 5);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "t.callpath.plain_kw", &m, "i|si", 6, "b", 7), 0);
    assert_int_equal(pyproc_msg_read(m, "[ii]", &a, &b), 0);
    assert_int_equal(a * 10 + b, 67);
    pyproc_msg_free(m);
    /* Keywords only. */
    assert_int_equal(pyproc_func(pool, "t.callpath.plain_kw", &m, "|sisi", "a", 8, "b", 9), 0);
    assert_int_equal(pyproc_msg_read(m, "[ii]", &a, &b), 0);
    assert_int_equal(a * 10 + b, 89);
    pyproc_msg_free(m);
}

/* The bytes of value `name` as they came back. */
static void result_is(const char *name, const void *want, size_t want_len)
{
    pyproc_msg *m;
    const void *got;
    size_t len;

    assert_int_equal(pyproc_func(pool, "t.callpath.value", &m, "s", name), 0);
    got = pyproc_msg_data(m, &len);
    if (len != want_len || memcmp(got, want, len) != 0)
        fail_msg("value %s: %zu bytes, not the %zu expected", name, len, want_len);
    pyproc_msg_free(m);
}

#define EXPECT(name, ...)                                                                          \
    do {                                                                                           \
        static const unsigned char want_[] = {__VA_ARGS__};                                        \
        result_is(name, want_, sizeof want_);                                                      \
    } while (0)

/* Head, then n copies of byte c. */
static void long_result_is(const char *name, const unsigned char *head, size_t hl, char c, size_t n)
{
    unsigned char *want = malloc(hl + n);

    assert_non_null(want);
    memcpy(want, head, hl);
    memset(want + hl, c, n);
    result_is(name, want, hl + n);
    free(want);
}

static void results_encoded_as_msgpack_does(void **state)
{
    static const unsigned char str16[] = {0xda, 0x13, 0x88}, bin16[] = {0xc5, 0x13, 0x88};
    pyproc_msg *m;

    (void)state;
    /* Scalars, straight into the ring. */
    EXPECT("none", 0xc0);
    EXPECT("true", 0xc3);
    EXPECT("false", 0xc2);
    EXPECT("zero", 0x00);
    EXPECT("minus_one", 0xff);
    EXPECT("int64_min", 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    EXPECT("float", 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    EXPECT("ascii", 0xa5, 'a', 's', 'c', 'i', 'i');
    EXPECT("empty", 0xa0);
    EXPECT("bytes", 0xc4, 0x02, 0x00, 0x01);
    /* The others, by the scratch buffer. */
    EXPECT("uint64_max", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    EXPECT("non_ascii", 0xa6, 'd', 0xc3, 0xa9, 'j', 0xc3, 0xa0);
    EXPECT("int_enum", 0x07);
    EXPECT("str_subclass", 0xa3, 's', 'u', 'b');
    long_result_is("long_ascii", str16, sizeof str16, 'x', 5000);
    long_result_is("long_bytes", bin16, sizeof bin16, 'y', 5000);
    /* Beyond uint64: the call's error, not a result. */
    assert_int_equal(pyproc_func(pool, "t.callpath.value", &m, "s", "too_big"), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "OverflowError"));
    pyproc_msg_free(m);
}

static bool alone(void)
{
    pyproc_msg *m;
    int b = -1;

    assert_int_equal(pyproc_func(pool, "t.callpath.alone", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "b", &b), 0);
    pyproc_msg_free(m);
    return b;
}

static void spins_holding_the_gil_only_alone(void **state)
{
    pyproc_msg *m;
    bool again = false;

    (void)state;
    assert_true(alone());
    assert_int_equal(pyproc_func(pool, "t.callpath.start_thread", &m, NULL), 0);
    pyproc_msg_free(m);
    assert_false(alone());
    /* Calls back to back while the thread lives: served, as ever. */
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(pyproc_func(pool, "t.basic.pid", &m, NULL), 0);
        pyproc_msg_free(m);
    }
    assert_false(alone());
    assert_int_equal(pyproc_func(pool, "t.callpath.stop_thread", &m, NULL), 0);
    pyproc_msg_free(m);
    /* A joined thread's state goes a moment after join() returns. */
    for (int i = 0; i < 200 && !again; i++) {
        again = alone();
        if (!again) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(again);
}

/* Whether THP may back what asks for it (huge pages for the asking). */
static bool thp_for_the_asking(void)
{
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

    if (f) {
        if (!fgets(mode, sizeof mode, f))
            mode[0] = 0;
        fclose(f);
    }
    return strstr(mode, "[always]") || strstr(mode, "[madvise]");
}

/* The program's first text mapping in a worker of a new pool: anonymous
 * or not, and how much of it is on huge pages. */
static void text_mapping(int start, bool *anon, int *huge_kb, bool *advised)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .start = start});
    pyproc_msg *m;
    int a = -1, h = -1;

    assert_int_equal(pyproc_func(p, "t.callpath.text_mapping", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[bib]", &a, huge_kb, &h), 0);
    *anon = a;
    *advised = h;
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void template_text_on_a_huge_page(void **state)
{
    bool anon, advised;
    int huge_kb;

    (void)state;
    text_mapping(PYPROC_START_TEMPLATE, &anon, &huge_kb, &advised);
    if (thp_for_the_asking()) {
        /* The copy asks for a huge page; whether the kernel has one to
         * give (memory may be fragmented) is its own affair, but what it
         * gives is the whole 2 MiB. */
        assert_true(anon);
        assert_true(advised);
        assert_true(huge_kb == 0 || huge_kb == 2048);
    } else {
        assert_false(anon);
    }
    /* An exec'd worker keeps the program's own mapping, as does a
     * template told not to. */
    text_mapping(PYPROC_START_EXEC, &anon, &huge_kb, &advised);
    assert_false(anon);
    assert_int_equal(setenv("PYPROC_HUGE_TEXT", "0", 1), 0);
    text_mapping(PYPROC_START_TEMPLATE, &anon, &huge_kb, &advised);
    unsetenv("PYPROC_HUGE_TEXT");
    assert_false(anon);
    assert_false(advised);
    assert_int_equal(huge_kb, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hub_and_arguments),
        cmocka_unit_test(long_references),
        cmocka_unit_test(keywords_with_and_without_the_hub),
        cmocka_unit_test(results_encoded_as_msgpack_does),
        cmocka_unit_test(spins_holding_the_gil_only_alone),
        cmocka_unit_test(template_text_on_a_huge_page),
    };
    alarm(120);
    return cmocka_run_group_tests(tests, setup, teardown);
}
