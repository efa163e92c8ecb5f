/*
 * End to end: a worker resolves each reference once and then finds it
 * from the frame's bytes (embed/refcache.c); many references that share
 * cache slots, and references too long for it, still reach their own
 * function; mounting a sub again makes the same reference mean the new
 * function.
 */
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool;

static int setup(void **state)
{
    (void)state;
    alarm(120); /* a hang is a failure */
    pool = e2e_pool(1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

static void resolved_once(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++)
        assert_int_equal(e2e_int(pool, "t.refs.hit"), 1);
    assert_int_equal(e2e_int(pool, "t.refs.resolutions"), 1);
}

/* More references than the cache has slots, in turn, twice over. */
static void many_refs_each_reach_their_function(void **state)
{
    char ref[64];

    (void)state;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 200; i++) {
            snprintf(ref, sizeof ref, "t.refs.f%d", i);
            assert_int_equal(e2e_int(pool, ref), i);
        }
}

static void long_ref(void **state)
{
    char ref[256] = "t.refs.long_";
    size_t n = strlen(ref);

    (void)state;
    memset(ref + n, 'x', 200);
    ref[n + 200] = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(e2e_int(pool, ref), (int64_t)strlen(ref + 7));
}

static const char *which(void)
{
    static char out[8];
    pyproc_msg *m = NULL;
    const char *s = "";

    assert_int_equal(pyproc_func(pool, "r.which", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    snprintf(out, sizeof out, "%s", s);
    pyproc_msg_free(m);
    return out;
}

static void remount_changes_what_a_ref_means(void **state)
{
    (void)state;
    assert_int_equal(pyproc_add_sub(pool, "r", "refs_a", 0), 0);
    assert_string_equal(which(), "a");
    assert_string_equal(which(), "a");
    assert_int_equal(pyproc_add_sub(pool, "r", "refs_b", 0), 0);
    assert_string_equal(which(), "b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resolved_once),
        cmocka_unit_test(many_refs_each_reach_their_function),
        cmocka_unit_test(long_ref),
        cmocka_unit_test(remount_changes_what_a_ref_means),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
