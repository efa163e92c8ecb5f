/*
 * End to end: shared buffers passed by reference.  The worker gets a
 * writable memoryview of exactly the range named, over the host's memory
 * (what it writes, the host sees; numpy works on it), on any worker,
 * respawned ones too; the host may free its reference while a call still
 * uses the buffer; the worker's mapping goes when its last Python user
 * does; bad ranges and places where buffers cannot go are errors.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "e2e.h"

#define MIB (1024 * 1024)

static pyproc_buf *new_buf(pyproc_pool *p, size_t size)
{
    pyproc_buf *b = NULL;

    assert_int_equal(pyproc_buf_new(p, size, &b), 0);
    assert_non_null(b);
    assert_int_equal(pyproc_buf_size(b), size);
    return b;
}

static int64_t call_int(pyproc_pool *p, int ind, const char *ref, const char *fmt, ...)
{
    pyproc_msg *m = NULL;
    int64_t v = -1;
    va_list ap;

    va_start(ap, fmt);
    int rc = pyproc_ind_funcv(p, ind, ref, &m, fmt, ap);
    va_end(ap);
    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    return v;
}

static void worker_gets_a_writable_view_of_the_range(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, 4 * MIB);
    unsigned char *data = pyproc_buf_data(b);
    const char *type, *obj;
    int len, readonly, contiguous;
    pyproc_msg *m = NULL;
    (void)state;

    for (size_t i = 0; i < 4 * MIB; i++)
        data[i] = (unsigned char)(i % 7);
    assert_int_equal(pyproc_func(p, "t.buffers.describe", &m, "B", b, (size_t)100, (size_t)1000),
                     0);
    assert_int_equal(pyproc_msg_read(m, "[ssibb]", &type, &obj, &len, &readonly, &contiguous), 0);
    assert_string_equal(type, "memoryview");
    assert_string_equal(obj, "SharedMapping");
    assert_int_equal(len, 1000);
    assert_false(readonly);
    assert_true(contiguous);
    pyproc_msg_free(m);

    /* It reads the host's bytes, and writes land in them, in range only. */
    int64_t want = 0;
    for (size_t i = 4096; i < 4096 + 10000; i++)
        want += data[i];
    assert_int_equal(call_int(p, 0, "t.buffers.total", "B", b, (size_t)4096, (size_t)10000), want);
    assert_int_equal(call_int(p, 0, "t.buffers.fill", "B|sI", b, (size_t)10, (size_t)5, "value",
                              (int64_t)200),
                     5);
    assert_int_equal(data[9], 9 % 7);
    for (int i = 10; i < 15; i++)
        assert_int_equal(data[i], 200);
    assert_int_equal(data[15], 15 % 7);
    pyproc_buf_free(b);
    pyproc_pool_free(p);
}

static void numpy_works_on_it(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, 16 * MIB);
    uint32_t *words = pyproc_buf_data(b);
    size_t n = 16 * MIB / 4;
    (void)state;

    for (size_t i = 0; i < n; i++)
        words[i] = (uint32_t)(i & 0xff);
    int64_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += 2 * (int64_t)(i & 0xff);
    assert_int_equal(call_int(p, 0, "t.buffers.numpy_double", "B", b, (size_t)0, 16 * (size_t)MIB),
                     want);
    for (size_t i = 0; i < n; i += 4099)
        assert_int_equal(words[i], 2 * (i & 0xff));
    pyproc_buf_free(b);
    pyproc_pool_free(p);
}

static void any_worker_respawned_ones_too(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_buf *a = new_buf(p, 8192), *b = new_buf(p, 8192);
    unsigned char *da = pyproc_buf_data(a), *db = pyproc_buf_data(b);
    pyproc_msg *m = NULL;
    (void)state;

    da[0] = 7;
    db[0] = 9;
    for (int i = 0; i < 200; i++) {
        int lens[2], firsts[2];
        assert_int_equal(pyproc_func(p, "t.buffers.two", &m, "BB", a, (size_t)0, (size_t)8192, b,
                                     (size_t)1, (size_t)3),
                         0);
        assert_int_equal(pyproc_msg_read(m, "[iiii]", &lens[0], &lens[1], &firsts[0], &firsts[1]),
                         0);
        assert_int_equal(lens[0], 8192);
        assert_int_equal(lens[1], 3);
        assert_int_equal(firsts[0], 7);
        assert_int_equal(firsts[1], 0);
        pyproc_msg_free(m);
    }
    /* In containers too. */
    assert_int_equal(pyproc_func(p, "t.buffers.nested", &m, "{s[BB]}", "views", a, (size_t)0,
                                 (size_t)1, b, (size_t)0, (size_t)1),
                     0);
    pyproc_msg_free(m);
    int pid = e2e_pid_of(p, 0);
    kill(pid, SIGKILL);
    assert_true(e2e_wait_respawned(p, 0, pid) > 0);
    assert_int_equal(call_int(p, 0, "t.buffers.total", "B", a, (size_t)0, (size_t)1), 7);
    pyproc_buf_free(a);
    pyproc_buf_free(b);
    pyproc_pool_free(p);
}

static void host_may_free_while_a_call_uses_it(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, MIB);
    pyproc_call *c;
    pyproc_msg *m = NULL;
    int64_t sum = 0;
    (void)state;

    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.buffers.slow_fill", "Bid", b, (size_t)0,
                                       (size_t)1000, 3, 0.2),
                     0);
    pyproc_buf_free(b);
    assert_int_equal(pyproc_wait(c, &m, 5000), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &sum), 0);
    assert_int_equal(sum, 3000);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    /* The worker let go of it when the call's objects went. */
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 0);
    pyproc_pool_free(p);
}

static void mapping_lives_while_python_keeps_it(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, MIB);
    pyproc_msg *m = NULL;
    const void *bytes;
    size_t n;
    (void)state;

    memcpy(pyproc_buf_data(b), "kept", 4);
    assert_int_equal(call_int(p, 0, "t.buffers.keep", "B", b, (size_t)0, (size_t)MIB), 1);
    pyproc_buf_free(b);
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 1);
    assert_int_equal(pyproc_func(p, "t.buffers.read_kept", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "y", &bytes, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(bytes, "kept", 4);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(p, "t.buffers.drop_kept", NULL, NULL), 0);
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 0);
    pyproc_pool_free(p);
}

static void misuse_is_an_error(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, 4096), *z = NULL;
    pyproc_msg *m = NULL, **rets = NULL;
    (void)state;

    assert_int_equal(pyproc_buf_new(p, 0, &z), -EINVAL);
    assert_int_equal(pyproc_buf_new(NULL, 10, &z), -EINVAL);
    /* Ranges past the end. */
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", b, (size_t)4096, (size_t)1),
                     -ERANGE);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", b, (size_t)1, (size_t)4096),
                     -ERANGE);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", b, SIZE_MAX, (size_t)2), -ERANGE);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", NULL, (size_t)0, (size_t)1),
                     -EINVAL);
    /* Another pool's buffer, and one freed: refused, not followed. */
    pyproc_pool *other = e2e_pool(1);
    pyproc_buf *theirs = new_buf(other, 4096), *gone = new_buf(p, 4096);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", theirs, (size_t)0, (size_t)1),
                     -EINVAL);
    pyproc_buf_free(theirs);
    pyproc_pool_free(other);
    pyproc_buf_free(gone);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", gone, (size_t)0, (size_t)1),
                     -EINVAL);
    /* Where buffers cannot go. */
    assert_int_equal(pyproc_pub(p, "t.buffers.total", &rets, "B", b, (size_t)0, (size_t)1),
                     -EINVAL);
    assert_int_equal(pyproc_msg_new(&m, "B", b, (size_t)0, (size_t)1), -EINVAL);
    /* At most 16 in one call. */
    assert_int_equal(pyproc_func(p, "t.basic.echo", &m, "BBBBBBBBBBBBBBBBB", b, 0ul, 1ul, b, 0ul,
                                 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul,
                                 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul,
                                 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul, 1ul, b, 0ul,
                                 1ul),
                     -E2BIG);
    /* The worker goes on; a zero-length range is fine. */
    assert_int_equal(call_int(p, 0, "t.buffers.total", "B", b, (size_t)4096, (size_t)0), 0);
    pyproc_buf_free(b);
    pyproc_buf_free(NULL);
    pyproc_pool_free(p);
}

static void a_buffer_passed_again_stays_mapped(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, 4 * MIB);
    (void)state;

    int64_t first = call_int(p, 0, "t.buffers.mapping_id", "B", b, (size_t)0, (size_t)10);
    for (int i = 0; i < 100; i++)
        assert_int_equal(call_int(p, 0, "t.buffers.mapping_id", "B", b, (size_t)i, (size_t)10),
                         first);
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 1);
    /* Freed by the host: the worker lets go of it too. */
    pyproc_buf_free(b);
    int n = 1;
    for (int i = 0; i < 200 && (n = (int)e2e_int(p, "t.buffers.mapped_buffers")) != 0; i++)
        usleep(5000);
    assert_int_equal(n, 0);
    pyproc_pool_free(p);
}

static int count_fds(int pid)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int count_buffer_maps(int pid)
{
    char path[64], line[512];
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        n += strstr(line, "pyproc-buffer") != NULL;
    fclose(f);
    return n;
}

/* Ten thousand buffers made and freed, both ways: every fd and mapping
 * goes, in the host and in the worker. */
static void nothing_leaks(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    int pid = e2e_pid_of(p, 0);
    pyproc_msg *m = NULL;
    (void)state;

    /* One of each first, so that lazily made things exist already. */
    pyproc_buf *warm = new_buf(p, 4096);
    assert_int_equal(call_int(p, 0, "t.buffers.total", "B", warm, (size_t)0, (size_t)1), 0);
    pyproc_buf_free(warm);
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 0);
    int host_fds = count_fds(getpid()), worker_fds = count_fds(pid);

    for (int i = 0; i < 10000; i++) {
        pyproc_buf *b = new_buf(p, 64 * 1024), *back;
        size_t off, len;
        ((unsigned char *)pyproc_buf_data(b))[0] = (unsigned char)i;
        assert_int_equal(call_int(p, 0, "t.buffers.total", "B", b, (size_t)0, (size_t)1), i % 256);
        pyproc_buf_free(b);
        if (i % 10 == 0) {
            assert_int_equal(pyproc_func(p, "t.buffers.make", &m, "ii", 4096, 1), 0);
            assert_int_equal(pyproc_msg_read(m, "B", &back, &off, &len), 0);
            pyproc_msg_free(m);
            pyproc_buf_free(back);
        }
    }
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 0);
    assert_int_equal(count_fds(getpid()), host_fds);
    assert_int_equal(count_fds(pid), worker_fds);
    assert_int_equal(count_buffer_maps(getpid()), 0);
    assert_int_equal(count_buffer_maps(pid), 0);
    pyproc_pool_free(p);
}

static void worker_killed_while_it_holds_a_view(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *b = new_buf(p, MIB);
    int pid = e2e_pid_of(p, 0);
    (void)state;

    memcpy(pyproc_buf_data(b), "live", 4);
    assert_int_equal(call_int(p, 0, "t.buffers.keep", "B", b, (size_t)0, (size_t)MIB), 1);
    kill(pid, SIGKILL);
    assert_true(e2e_wait_respawned(p, 0, pid) > 0);
    /* The host's memory is untouched, and the new worker takes it. */
    assert_memory_equal(pyproc_buf_data(b), "live", 4);
    assert_int_equal(call_int(p, 0, "t.buffers.fill", "B|sI", b, (size_t)0, (size_t)2, "value",
                              (int64_t)'L'),
                     2);
    assert_memory_equal(pyproc_buf_data(b), "LLve", 4);
    pyproc_buf_free(b);
    pyproc_pool_free(p);
}

/* Under a tight fd limit the worker keeps fewer mappings (each keeps its
 * fd), so passing many buffers never runs it out of fds. */
static void tight_fd_limit_bounds_kept_mappings(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .max_fds = 40});
    pyproc_buf *b[30];
    (void)state;

    for (int i = 0; i < 30; i++) {
        b[i] = new_buf(p, 4096);
        ((unsigned char *)pyproc_buf_data(b[i]))[0] = (unsigned char)i;
        assert_int_equal(call_int(p, 0, "t.buffers.total", "B", b[i], (size_t)0, (size_t)1), i);
    }
    /* All still held by the host: the worker kept only a quarter of 40. */
    assert_int_equal(e2e_int(p, "t.buffers.mapped_buffers"), 10);
    for (int i = 0; i < 30; i++)
        pyproc_buf_free(b[i]);
    pyproc_pool_free(p);
}

/* ---- buffers a worker makes ---- */

/* Read a buffer out of m (a new reference), checking its range. */
static pyproc_buf *read_buf(pyproc_msg *m, size_t want_off, size_t want_len)
{
    pyproc_buf *b = NULL;
    size_t off = 0, len = 0;

    assert_int_equal(pyproc_msg_type(m), PYPROC_BUF);
    assert_int_equal(pyproc_msg_read(m, "B", &b, &off, &len), 0);
    assert_non_null(b);
    assert_int_equal(off, want_off);
    assert_int_equal(len, want_len);
    return b;
}

static void worker_buffers_come_back_by_reference(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_msg *m = NULL;
    pyproc_buf *b;
    (void)state;

    /* The buffer itself. */
    assert_int_equal(pyproc_func(p, "t.buffers.make", &m, "ii", 3 * MIB, 0x5a), 0);
    b = read_buf(m, 0, 3 * MIB);
    pyproc_msg_free(m); /* the reference read is ours */
    assert_int_equal(pyproc_buf_size(b), 3 * MIB);
    for (size_t i = 0; i < 3 * MIB; i += 4093)
        assert_int_equal(((unsigned char *)pyproc_buf_data(b))[i], 0x5a);
    /* And it goes back to the worker like any other. */
    assert_int_equal(call_int(p, 0, "t.buffers.total", "B", b, (size_t)0, (size_t)10), 10 * 0x5a);
    pyproc_buf_free(b);

    /* A numpy array over one: the range it covers. */
    assert_int_equal(pyproc_func(p, "t.buffers.make_numpy", &m, "i", 100), 0);
    b = read_buf(m, 40, 40);
    for (int i = 0; i < 10; i++)
        assert_int_equal(((uint32_t *)pyproc_buf_data(b))[10 + i], 10 + i);
    pyproc_buf_free(b);
    pyproc_msg_free(m);

    /* A memoryview slice of one. */
    assert_int_equal(pyproc_func(p, "t.buffers.make_view", &m, "i", 1000), 0);
    b = read_buf(m, 100, 100);
    assert_memory_equal((char *)pyproc_buf_data(b) + 100, "vvvv", 4);
    pyproc_buf_free(b);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void host_buffer_comes_back_as_itself(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_buf *mine = new_buf(p, 8192), *back;
    pyproc_msg *m = NULL;
    (void)state;

    assert_int_equal(pyproc_func(p, "t.buffers.same_view", &m, "B", mine, (size_t)4096, (size_t)16),
                     0);
    back = read_buf(m, 4096, 16);
    pyproc_msg_free(m);
    /* Another mapping of the same memory. */
    ((char *)pyproc_buf_data(mine))[4096] = 'x';
    assert_int_equal(((char *)pyproc_buf_data(back))[4096], 'x');
    pyproc_buf_free(back);
    pyproc_buf_free(mine);
    pyproc_pool_free(p);
}

static void buffers_in_containers_and_streams(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_msg *m = NULL, *k, *v, *item;
    pyproc_buf *a, *b;
    pyproc_call *s;
    size_t off, len;
    int five = 0, r, n = 0;
    (void)state;

    assert_int_equal(pyproc_func(p, "t.buffers.make_nested", &m, NULL), 0);
    const char *ka, *kb;
    assert_int_equal(pyproc_msg_read(m, "{sBs[Bi]}", &ka, &a, &off, &len, &kb, &b, &off, &len,
                                     &five),
                     0);
    assert_int_equal(pyproc_buf_size(a), 10);
    assert_int_equal(pyproc_buf_size(b), 20);
    assert_int_equal(five, 5);
    pyproc_buf_free(a);
    pyproc_buf_free(b);
    /* Parts of the message carry the buffers too, and outlive it. */
    assert_int_equal(pyproc_msg_at(m, 1, &k, &v), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_at(v, 0, &item, NULL), 0);
    pyproc_msg_free(v);
    pyproc_msg_free(k);
    b = read_buf(item, 0, 20);
    pyproc_msg_free(item);
    pyproc_buf_free(b);

    assert_int_equal(pyproc_gen(p, "t.buffers.gen_buffers", &s, "i", 300), 0);
    while ((r = pyproc_next(s, &item)) == 1) {
        b = read_buf(item, 0, 16);
        assert_int_equal(((unsigned char *)pyproc_buf_data(b))[0], n % 256);
        pyproc_buf_free(b);
        pyproc_msg_free(item);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, 300);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

static void what_cannot_be_shared_says_so(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_msg *m = NULL;
    int ok = 0;
    (void)state;

    assert_int_equal(pyproc_func(p, "t.buffers.too_many", &m, NULL), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "at most 64 shared buffers"));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(p, "t.buffers.plain_numpy", &m, NULL), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "cannot send"));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(p, "t.buffers.bad_sizes", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "b", &ok), 0);
    assert_true(ok);
    pyproc_msg_free(m);
    /* A message that is not a buffer reads as one with -EBADMSG. */
    pyproc_buf *b;
    size_t off, len;
    assert_int_equal(pyproc_msg_new(&m, "i", 1), 0);
    assert_int_equal(pyproc_msg_read(m, "B", &b, &off, &len), -EBADMSG);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(worker_gets_a_writable_view_of_the_range),
        cmocka_unit_test(numpy_works_on_it),
        cmocka_unit_test(any_worker_respawned_ones_too),
        cmocka_unit_test(host_may_free_while_a_call_uses_it),
        cmocka_unit_test(mapping_lives_while_python_keeps_it),
        cmocka_unit_test(misuse_is_an_error),
        cmocka_unit_test(a_buffer_passed_again_stays_mapped),
        cmocka_unit_test(nothing_leaks),
        cmocka_unit_test(tight_fd_limit_bounds_kept_mappings),
        cmocka_unit_test(worker_killed_while_it_holds_a_view),
        cmocka_unit_test(worker_buffers_come_back_by_reference),
        cmocka_unit_test(host_buffer_comes_back_as_itself),
        cmocka_unit_test(buffers_in_containers_and_streams),
        cmocka_unit_test(what_cannot_be_shared_says_so),
    };
    alarm(120);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
