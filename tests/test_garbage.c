/*
 * End to end: a worker that writes garbage into its reply ring.
 *
 * The pool's worker_path is this very binary: started with the worker's
 * command line and PYPROC_TEST_FAKE=<mode> in its environment, it becomes a
 * fake worker without Python.  It maps its segment, says READY, answers
 * "pid" with its pid, and once two "garbage" calls are in flight (the
 * second may be a stream) worker 0 writes the malformed frames or values of
 * its mode (worker 1 stays well-behaved).
 * The host must end both calls with an error, kill and reap worker 0, read
 * nothing out of bounds (this test also runs under AddressSanitizer), and
 * keep serving worker 1 and every other pool.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "fake_worker.h"

#define FAKE_RING_BYTES 4096
#define FAKE_MAX_MSG (64 * 1024)
#define HDR SHM_FRAME_HEADER_BYTES

/* ---- the fake worker ---- */

/* The two "garbage" calls in flight; 3 once the garbage is written. */
static uint64_t garbage_ids[2];
static int ngarbage;

static uint64_t rep_tail(void)
{
    return atomic_load_explicit(&fake.rep.ctl->tail, memory_order_relaxed);
}

/* Wait until the host has read everything, so the garbage is next. */
static void wait_drained(void)
{
    for (int i = 0; i < 5000; i++) {
        if (atomic_load(&fake.rep.ctl->head) == rep_tail())
            return;
        usleep(1000);
    }
    fprintf(stderr, "fake worker: the host does not read its ring\n");
    _exit(2);
}

/* Write a frame header at counter position pos, without publishing it. */
static void raw_header(uint64_t pos, uint32_t len, uint16_t type, uint16_t flags, uint64_t id)
{
    struct shm_frame_header h = {.len = len, .type = type, .flags = flags, .id = id};

    memcpy(fake.rep.data + (pos & fake.rep.mask), &h, sizeof h);
}

static void raw_payload(uint64_t pos, const void *p, size_t n)
{
    memcpy(fake.rep.data + (pos & fake.rep.mask) + HDR, p, n);
}

static uint64_t aligned(uint64_t n)
{
    return (n + SHM_FRAME_ALIGN - 1) & ~(uint64_t)(SHM_FRAME_ALIGN - 1);
}

/* Publish everything up to tail as if it were well-formed. */
static void publish(uint64_t tail)
{
    atomic_store_explicit(&fake.rep.ctl->tail, tail, memory_order_release);
    shm_ring_notify(&fake.rep);
}

/*
 * Move the producer to offset `target` of the area with well-formed frames
 * that the host ignores (YIELDs for id 0, which no call ever has).
 */
static void fill_to(uint64_t target)
{
    static const uint8_t zeros[FAKE_RING_BYTES];

    while ((rep_tail() & fake.rep.mask) != target) {
        uint64_t d = target - (rep_tail() & fake.rep.mask);
        uint64_t s = d < fake.rep.max_frag + HDR ? d : fake.rep.max_frag + HDR;

        if (d < HDR || d > fake.rep.size) {
            fprintf(stderr, "fake worker: cannot fill to %llu\n", (unsigned long long)target);
            _exit(2);
        }
        if (d - s != 0 && d - s < HDR)
            s -= HDR; /* leave room for one more whole frame */
        fake_write(SHM_FRAME_YIELD, 0, zeros, s - HDR);
    }
}

/* One malformed frame of `type` at the tail: header only, then publish. */
static void bad_header(uint32_t len, uint16_t type, uint16_t flags, uint64_t id, uint64_t published)
{
    uint64_t pos = rep_tail();

    raw_header(pos, len, type, flags, id);
    publish(pos + published);
}

/* A well-formed frame with this payload, written by hand. */
static uint64_t put_frame(uint64_t pos, uint16_t type, uint16_t flags, uint64_t id, const void *p,
                          uint32_t n)
{
    raw_header(pos, n, type, flags, id);
    raw_payload(pos, p, n);
    return pos + HDR + aligned(n);
}

/* More fragments of one message than max_msg allows, waiting for room. */
static void endless_fragments(uint64_t id)
{
    static const uint8_t zeros[FAKE_RING_BYTES];

    for (uint64_t sent = 0; sent <= 2 * FAKE_MAX_MSG; sent += fake.rep.max_frag) {
        void *dst;
        int rc;

        while ((rc = shm_ring_reserve(&fake.rep, fake.rep.max_frag, &dst)) == -EAGAIN) {
            if (shm_ring_is_closed(&fake.rep))
                return;
            usleep(100);
        }
        if (rc < 0)
            _exit(2);
        memcpy(dst, zeros, fake.rep.max_frag);
        shm_ring_commit(&fake.rep, SHM_FRAME_RESULT, SHM_FRAME_MORE, id, fake.rep.max_frag);
        shm_ring_notify(&fake.rep);
    }
}

static void write_garbage(const char *mode, uint64_t a, uint64_t b)
{
    uint64_t pos;

    wait_drained();
    pos = rep_tail();
    if (strcmp(mode, "huge-length") == 0) {
        bad_header(UINT32_MAX - 7, SHM_FRAME_RESULT, 0, a, HDR + 64);
    } else if (strcmp(mode, "length-over-fragment") == 0) {
        /* Just over what one frame may carry, with every byte published. */
        bad_header(fake.rep.max_frag + 8, SHM_FRAME_RESULT, 0, a,
                   HDR + aligned(fake.rep.max_frag + 8));
    } else if (strcmp(mode, "unknown-type") == 0) {
        bad_header(1, 99, 0, a, HDR + 8);
    } else if (strcmp(mode, "type-zero") == 0) {
        bad_header(1, 0, 0, a, HDR + 8);
    } else if (strcmp(mode, "request-type") == 0) {
        /* A frame only the host may send. */
        bad_header(1, SHM_FRAME_CALL, 0, a, HDR + 8);
    } else if (strcmp(mode, "unknown-flags") == 0) {
        bad_header(1, SHM_FRAME_RESULT, 0x80, a, HDR + 8);
    } else if (strcmp(mode, "past-tail") == 0) {
        /* The header claims 64 bytes; only 8 of them are published. */
        bad_header(64, SHM_FRAME_RESULT, 0, a, HDR + 8);
    } else if (strcmp(mode, "unaligned-tail") == 0) {
        bad_header(1, SHM_FRAME_RESULT, 0, a, 5);
    } else if (strcmp(mode, "tail-jump") == 0) {
        publish(pos + 2 * fake.rep.size);
    } else if (strcmp(mode, "tail-back") == 0) {
        publish(pos - HDR);
    } else if (strcmp(mode, "unaligned-head") == 0) {
        /* head is the host's, but it lies in memory we can write. */
        put_frame(pos, SHM_FRAME_RESULT, 0, a, "\xc0", 1);
        atomic_store(&fake.rep.ctl->head, pos + 4);
        publish(pos + HDR + 8);
    } else if (strcmp(mode, "cross-end") == 0) {
        /* 32 bytes before the end, a frame of 80 bytes. */
        fill_to(fake.rep.size - 32);
        wait_drained();
        bad_header(64, SHM_FRAME_RESULT, 0, a, HDR + 64);
    } else if (strcmp(mode, "pad-short") == 0) {
        /* A PAD in the middle of the area, which only the end may hold. */
        raw_header(pos, 0, SHM_FRAME_PAD, 0, 0);
        put_frame(pos + HDR, SHM_FRAME_RESULT, 0, a, "\xc0", 1);
        publish(pos + 2 * HDR + 8);
    } else if (strcmp(mode, "pad-long") == 0) {
        /* A PAD at the right place that claims to reach past the end. */
        fill_to(fake.rep.size - 64);
        wait_drained();
        bad_header(64, SHM_FRAME_PAD, 0, 0, 64 + HDR);
    } else if (strcmp(mode, "truncated-result") == 0) {
        /* [1, 2] missing its second item. */
        fake_write(SHM_FRAME_RESULT, a, "\x92\x01", 2);
    } else if (strcmp(mode, "truncated-error") == 0) {
        /* [errno, "Type", message, traceback] with the type cut short. */
        fake_write(SHM_FRAME_ERROR, a, "\x94\x05\xa4Ty", 5);
    } else if (strcmp(mode, "truncated-yield") == 0) {
        /* b is a stream: a batch of items cut short. */
        fake_write(SHM_FRAME_YIELD, b, "\x92\x01", 2);
    } else if (strcmp(mode, "truncated-callback") == 0) {
        fake_write(SHM_FRAME_CALLBACK, a, "\x92\x01", 2);
    } else if (strcmp(mode, "reserved-byte") == 0) {
        fake_write(SHM_FRAME_RESULT, a, "\xc1", 1);
    } else if (strcmp(mode, "trailing-bytes") == 0) {
        fake_write(SHM_FRAME_RESULT, a, "\x01\x02", 2);
    } else if (strcmp(mode, "interleaved-ids") == 0) {
        /* A fragment of a's answer, then one of b's before a's ends. */
        pos = put_frame(pos, SHM_FRAME_RESULT, SHM_FRAME_MORE, a, "\x92", 1);
        pos = put_frame(pos, SHM_FRAME_RESULT, SHM_FRAME_MORE, b, "\x92", 1);
        publish(pos);
    } else if (strcmp(mode, "interleaved-types") == 0) {
        pos = put_frame(pos, SHM_FRAME_RESULT, SHM_FRAME_MORE, a, "\x92", 1);
        pos = put_frame(pos, SHM_FRAME_ERROR, 0, a, "\x01\x02", 2);
        publish(pos);
    } else if (strcmp(mode, "endless-fragments") == 0) {
        endless_fragments(a);
    } else {
        fprintf(stderr, "fake worker: unknown mode %s\n", mode);
        _exit(2);
    }
}

static void fake_serve(struct shm_msg *m)
{
    if (m->type != SHM_FRAME_CALL) {
        fake_serve_default(m);
        return;
    }
    if (fake_call_named(m, "garbage")) {
        if (fake.index != 0 || ngarbage >= 2 || strcmp(fake.mode, "none") == 0)
            return; /* never answered */
        garbage_ids[ngarbage++] = m->id;
        return;
    }
    fake_write_pid(SHM_FRAME_RESULT, m->id);
}

/* Once both calls are in flight and released, the garbage follows. */
static void fake_after(void)
{
    if (ngarbage == 2) {
        write_garbage(fake.mode, garbage_ids[0], garbage_ids[1]);
        ngarbage = 3; /* done; wait to be killed */
    }
}

static int fake_worker(int argc, char **argv)
{
    fake_attach(argc, argv);
    fake_run(fake_serve, fake_after);
}

/* ---- the tests ---- */

static pyproc_pool *real; /* real workers, which must not notice a thing */

static int setup(void **state)
{
    (void)state;
    real = e2e_pool(1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(real);
    return 0;
}

/* True once the host has reaped pid (a zombie still answers kill(0)). */
static bool reaped(pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        usleep(10000);
    }
    return false;
}

static void expect_failed(pyproc_call *c, const char *what)
{
    pyproc_msg *m = NULL;
    int rc = pyproc_wait(c, &m, 20000);

    if (rc == -ETIMEDOUT)
        fail_msg("%s: the call did not end", what);
    assert_true(rc < 0);
    assert_non_null(m);
    assert_non_null(pyproc_msg_error(m));
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

/* A stream must end with an error too; a hang fails by SIGALRM. */
static void expect_stream_failed(pyproc_call *c, const char *what)
{
    pyproc_msg *m = NULL;
    int rc;

    alarm(20);
    while ((rc = pyproc_next(c, &m)) == 1) {
        pyproc_msg_free(m);
        m = NULL;
    }
    alarm(0);
    if (rc == 0)
        fail_msg("%s: the stream ended without an error", what);
    assert_non_null(m);
    assert_non_null(pyproc_msg_error(m));
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

static void run_mode(const char *mode)
{
    pyproc_opts opts = {
        .workers = 2,
        .ring_bytes = FAKE_RING_BYTES,
        .max_msg_bytes = FAKE_MAX_MSG,
    };
    pyproc_pool *p;
    pyproc_call *a, *b;
    int pid0, pid1, real_pid;

    real_pid = (int)e2e_int(real, "t.basic.pid");
    p = fake_pool_new("fake", opts, mode);
    pid0 = fake_pid(p, 0);
    pid1 = fake_pid(p, 1);

    bool stream = strcmp(mode, "truncated-yield") == 0;
    assert_int_equal(pyproc_ind_call(p, 0, &a, "garbage", NULL), 0);
    if (stream)
        assert_int_equal(pyproc_ind_gen(p, 0, "garbage", &b, NULL), 0);
    else
        assert_int_equal(pyproc_ind_call(p, 0, &b, "garbage", NULL), 0);
    expect_failed(a, mode);
    if (stream)
        expect_stream_failed(b, mode);
    else
        expect_failed(b, mode);
    if (!reaped(pid0))
        fail_msg("%s: worker 0 (pid %d) was not killed and reaped", mode, pid0);

    /* Worker 1 keeps answering, as the same process; so does the real pool. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(fake_pid(p, 1), pid1);
    assert_int_equal(e2e_int(real, "t.basic.pid"), real_pid);
    assert_int_equal(e2e_int(real, "t.basic.pid"), real_pid);
    pyproc_pool_free(p);
}

#define MODE(name, mode)                                                                           \
    static void name(void **state)                                                                 \
    {                                                                                              \
        (void)state;                                                                               \
        run_mode(mode);                                                                            \
    }

MODE(huge_length, "huge-length")
MODE(length_over_fragment, "length-over-fragment")
MODE(unknown_type, "unknown-type")
MODE(type_zero, "type-zero")
MODE(request_type, "request-type")
MODE(unknown_flags, "unknown-flags")
MODE(length_past_tail, "past-tail")
MODE(unaligned_tail, "unaligned-tail")
MODE(tail_beyond_area, "tail-jump")
MODE(tail_moves_back, "tail-back")
MODE(head_off_the_grid, "unaligned-head")
MODE(frame_crosses_end, "cross-end")
MODE(pad_in_the_middle, "pad-short")
MODE(pad_past_the_end, "pad-long")
MODE(truncated_result, "truncated-result")
MODE(truncated_error, "truncated-error")
MODE(truncated_stream_items, "truncated-yield")
MODE(truncated_callback, "truncated-callback")
MODE(reserved_byte_result, "reserved-byte")
MODE(result_with_trailing_bytes, "trailing-bytes")
MODE(interleaved_fragment_ids, "interleaved-ids")
MODE(interleaved_fragment_types, "interleaved-types")
MODE(fragments_beyond_max_msg, "endless-fragments")

int main(int argc, char **argv)
{
    /* Started as a worker, never run the tests: a worker that ran them
     * would start pools of its own, and so on without end. */
    if (fake_started_as_worker(argc, argv))
        return fake_worker(argc, argv);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(huge_length),
        cmocka_unit_test(length_over_fragment),
        cmocka_unit_test(unknown_type),
        cmocka_unit_test(type_zero),
        cmocka_unit_test(request_type),
        cmocka_unit_test(unknown_flags),
        cmocka_unit_test(length_past_tail),
        cmocka_unit_test(unaligned_tail),
        cmocka_unit_test(tail_beyond_area),
        cmocka_unit_test(tail_moves_back),
        cmocka_unit_test(head_off_the_grid),
        cmocka_unit_test(frame_crosses_end),
        cmocka_unit_test(pad_in_the_middle),
        cmocka_unit_test(pad_past_the_end),
        cmocka_unit_test(truncated_result),
        cmocka_unit_test(truncated_error),
        cmocka_unit_test(truncated_stream_items),
        cmocka_unit_test(truncated_callback),
        cmocka_unit_test(reserved_byte_result),
        cmocka_unit_test(result_with_trailing_bytes),
        cmocka_unit_test(interleaved_fragment_ids),
        cmocka_unit_test(interleaved_fragment_types),
        cmocka_unit_test(fragments_beyond_max_msg),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
