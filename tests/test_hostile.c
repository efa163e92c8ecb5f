/*
 * End to end: workers that attack the host rather than merely break.
 *
 * The pool's worker_path is this very binary: started with the worker's
 * command line and PYPROC_TEST_FAKE=<mode> in its environment, worker 0
 * becomes a fake worker without Python that maps its segment, says READY,
 * answers "pid" with its pid, never answers "hang", and on the call named
 * after its mode misbehaves:
 *
 *   flip-yield    publishes stream items and rewrites them, a word at a
 *                 time, while the host reads them: the host reads nothing
 *                 out of bounds and hands out each item as one of its two
 *                 versions, never a mix;
 *   flood-yield   ignores its stream credit: the worker is killed, its
 *                 stream ends with PYPROC_EWORKER, and no more than the
 *                 stream window is ever queued;
 *   flood-result  fills its reply ring with answers nobody waits for, as
 *                 fast as it can;
 *   flood-stdout  writes its stdout as fast as it can;
 *   toggle-wait   keeps changing its reply ring's consumer_wait word while
 *                 a call of the host waits for an answer;
 *   wake-wait     keeps waking whoever sleeps on that word instead;
 *   ring-bell     keeps ringing the doorbell of its reply ring.
 *
 * With the two floods, another worker that dies must have its death
 * reported in a bounded time; with the last three, the waiting host must
 * not burn a CPU.  Other workers (index > 0) behave.  This test also runs
 * under AddressSanitizer.
 */
#include <errno.h>
#include <fcntl.h>
#include <msgpuck.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_worker.h"
#include "shm/fdpass.h"
#include "shm/futex.h"

/* ---- the fake worker ---- */

static void quit_if_closed(void)
{
    if (shm_ring_is_closed(&fake.rep) || fake_host_gone())
        _exit(0);
}

/*
 * One stream item, [nil, nil, s, x], in a YIELD batch of 13 bytes; the
 * word at offset 8 takes one of two values, each a well-formed batch:
 *   A: a2 'x' 'y' d9 00     s = "xy",      x = "" (str8)
 *   B: a3 'x' 'y' db c0     s = "xy\xdb",  x = nil
 * A reader that checks byte 11 as str8 (A) and then decodes it as str32
 * (B) takes the bytes after the batch (c0/00 ff ff ff) for a length.
 */
#define FLIP_LEN 13
static const uint8_t flip_head[8] = {0xdd, 0, 0, 0, 1, 0x94, 0xc0, 0xc0};
static const uint8_t flip_a[8] = {0xa2, 'x', 'y', 0xd9, 0x00, 0xff, 0xff, 0xff};
static const uint8_t flip_b[8] = {0xa3, 'x', 'y', 0xdb, 0xc0, 0xff, 0xff, 0xff};

/* Take the CREDIT frames the host sent, if any. */
static uint64_t take_credit(void)
{
    struct shm_msg m;
    uint64_t n = 0;

    while (shm_ring_read(&fake.req, &m) == 1) {
        const char *p = (const char *)m.payload;
        if (m.type == SHM_FRAME_CREDIT && m.len > 0 && mp_typeof(*p) == MP_UINT)
            n += mp_decode_uint(&p);
        shm_ring_done(&fake.req, &m);
    }
    return n;
}

/*
 * The words the flipper rewrites: flip_count of them, 0 while none.  To
 * take the words back, the writer stores 0, bumps flip_epoch and waits
 * until the flipper acknowledges that epoch in flip_ack: it loads the
 * epoch before the count, so an acknowledged epoch means it saw the 0.
 */
#define FLIP_FRAMES 32
static _Atomic uint64_t *flip_words[FLIP_FRAMES];
static _Atomic int flip_count;
static _Atomic unsigned flip_epoch, flip_ack;

static void *flipper(void *arg)
{
    uint64_t wa, wb;

    (void)arg;
    memcpy(&wa, flip_a, 8);
    memcpy(&wb, flip_b, 8);
    for (unsigned i = 0;; i++) {
        unsigned epoch = atomic_load(&flip_epoch);
        int n = atomic_load(&flip_count);
        for (int k = 0; k < n; k++)
            atomic_store_explicit(flip_words[k], (i + k) & 1 ? wa : wb, memory_order_relaxed);
        atomic_store(&flip_ack, epoch);
        if (n == 0)
            shm_cpu_relax();
    }
    return NULL;
}

/* Publish up to FLIP_FRAMES frames of one item each; returns how many. */
static int flip_publish(uint64_t id, uint64_t credit)
{
    int n = 0;

    while (n < FLIP_FRAMES && (uint64_t)n < credit) {
        void *v;
        if (shm_ring_reserve(&fake.rep, FLIP_LEN + 3, &v) < 0)
            break;
        uint8_t *dst = v;
        memcpy(dst, flip_head, 8);
        memcpy(dst + 8, flip_a, 8);
        /* The flipper is at it before the host can see the frame. */
        flip_words[n++] = (_Atomic uint64_t *)(void *)(dst + 8);
        atomic_store(&flip_count, n);
        shm_ring_commit(&fake.rep, SHM_FRAME_YIELD, 0, id, FLIP_LEN);
    }
    return n;
}

/*
 * Items as long as there is credit, one per frame, a few frames at a
 * time; while the host reads them, another thread rewrites the word at
 * offset 8 of each, one 64-bit store at a time.
 */
static void flip_yield(uint64_t id)
{
    uint64_t credit = SHM_STREAM_WINDOW;
    pthread_t t;

    if (pthread_create(&t, NULL, flipper, NULL) != 0)
        _exit(2);
    for (;;) {
        credit += take_credit();
        quit_if_closed();
        int n = flip_publish(id, credit);
        if (n == 0) {
            shm_ring_wait(&fake.req, 0, 1);
            continue;
        }
        credit -= (uint64_t)n;
        shm_ring_notify(&fake.rep);
        uint64_t end = atomic_load(&fake.rep.ctl->tail);
        for (unsigned i = 1; (int64_t)(atomic_load(&fake.rep.ctl->head) - end) < 0; i++)
            if ((i & 0xfff) == 0)
                quit_if_closed();
        /* Stop the flipper before new frames are written there. */
        atomic_store(&flip_count, 0);
        unsigned epoch = atomic_fetch_add(&flip_epoch, 1) + 1;
        while (atomic_load(&flip_ack) != epoch)
            shm_cpu_relax();
    }
}

/* YIELD batches of 100 nils, whatever the credit. */
static void flood_yield(uint64_t id)
{
    uint8_t batch[5 + 100] = {0xdd, 0, 0, 0, 100};

    memset(batch + 5, 0xc0, 100);
    for (;;)
        fake_write(SHM_FRAME_YIELD, id, batch, sizeof batch);
}

/*
 * RESULTs for id 0, which no call has, each as large as max_msg allows and
 * in fragments whose bytes are never written: the host copies every
 * fragment, the worker only moves its tail, so the ring is always full.
 */
static void flood_result(void)
{
    uint32_t frag = fake.rep.max_frag < (1u << 20) ? fake.rep.max_frag : 1u << 20;
    uint64_t frags = fake.rep.max_msg / frag;

    for (uint64_t i = 0;; i++) {
        void *dst;

        /* Sleep for room the way shm_ring_write() does: a sleeper that
         * is woken is scheduled sooner than a spinner. */
        while (shm_ring_reserve(&fake.rep, frag, &dst) < 0) {
            quit_if_closed();
            atomic_store(&fake.rep.ctl->producer_wait, 1);
            if (shm_ring_reserve(&fake.rep, frag, &dst) == 0)
                break;
            shm_futex_wait(&fake.rep.ctl->producer_wait, 1, 10, true);
        }
        shm_ring_commit(&fake.rep, SHM_FRAME_RESULT, i % frags == frags - 1 ? 0 : SHM_FRAME_MORE, 0,
                        frag);
        shm_ring_notify(&fake.rep);
    }
}

static void flood_stdout(void)
{
    static char lines[65536];

    for (size_t i = 0; i < sizeof lines; i += 2)
        lines[i] = 'x', lines[i + 1] = '\n';
    for (;;) {
        if (write(STDOUT_FILENO, lines, sizeof lines) < 0 && errno != EINTR)
            _exit(0);
        quit_if_closed();
    }
}

static void toggle_wait(void)
{
    /* Never SHM_SLEEP_FUTEX, so that a FUTEX_WAIT on it never sleeps. */
    for (uint32_t i = 0;; i++) {
        atomic_store_explicit(&fake.rep.ctl->consumer_wait, i & 1 ? SHM_SLEEP_DOORBELL : SHM_AWAKE,
                              memory_order_relaxed);
        if ((i & 0xfff) == 0)
            quit_if_closed();
    }
}

/* Wake whoever sleeps on the reply ring's wait word, over and over. */
static void wake_wait(void)
{
    for (uint32_t i = 0;; i++) {
        shm_futex_wake(&fake.rep.ctl->consumer_wait, INT32_MAX, true);
        if ((i & 0xfff) == 0)
            quit_if_closed();
    }
}

/* Ring the host's doorbell for the reply ring, over and over. */
static void ring_bell(void)
{
    uint64_t one = 1;

    for (uint32_t i = 0;; i++) {
        if (write(fake.rep.doorbell_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            _exit(0);
        if ((i & 0xfff) == 0)
            quit_if_closed();
    }
}

/* Answer with a shared buffer the host must refuse: one not sealed
 * against shrinking, one too small for the range named, or one never
 * sent.  Then stay, so that only the host can end this worker. */
static void bad_buffer(uint64_t id, const char *how)
{
    char payload[27] = {(char)0xc7, 24, 0x42};
    int fd = memfd_create("pyproc-buffer", MFD_ALLOW_SEALING);
    bool send = strcmp(how, "missing") != 0;
    size_t size = strcmp(how, "small") == 0 ? 4 : 4096;

    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        _exit(3);
    if (strcmp(how, "unsealed") != 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        _exit(3);
    payload[3 + 7] = 1;  /* token 1 */
    payload[19 + 6] = 1; /* length 256 at offset 0 */
    if (send) {
        unsigned char tok[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        if (shm_fd_send(7, tok, sizeof tok, fd, true) < 0)
            _exit(3);
    }
    fake_write(SHM_FRAME_RESULT, id, payload, sizeof payload);
    for (;;) {
        quit_if_closed();
        usleep(1000);
    }
}

static void misbehave(uint64_t id)
{
    if (strncmp(fake.mode, "buffer-", 7) == 0)
        bad_buffer(id, fake.mode + 7);
    if (strcmp(fake.mode, "flip-yield") == 0)
        flip_yield(id);
    else if (strcmp(fake.mode, "flood-yield") == 0)
        flood_yield(id);
    else if (strcmp(fake.mode, "flood-result") == 0)
        flood_result();
    else if (strcmp(fake.mode, "flood-stdout") == 0)
        flood_stdout();
    else if (strcmp(fake.mode, "toggle-wait") == 0)
        toggle_wait();
    else if (strcmp(fake.mode, "wake-wait") == 0)
        wake_wait();
    else if (strcmp(fake.mode, "ring-bell") == 0)
        ring_bell();
    fprintf(stderr, "fake worker: unknown mode %s\n", fake.mode);
    _exit(2);
}

static void fake_serve(struct shm_msg *m)
{
    if (m->type != SHM_FRAME_CALL) {
        fake_serve_default(m);
        return;
    }
    if (fake_call_named(m, "hang"))
        return;
    if (fake_call_named(m, "pid")) {
        fake_write_pid(SHM_FRAME_RESULT, m->id);
        return;
    }
    if (fake.index == 0 && fake_call_named(m, fake.mode)) {
        uint64_t id = m->id;
        shm_ring_done(&fake.req, m);
        misbehave(id);
    }
    fake_write(SHM_FRAME_ERROR, m->id, "\x94\x02\xa0\xa0\xa0", 5);
}

static int fake_worker(int argc, char **argv)
{
    fake_attach(argc, argv);
    fake_run(fake_serve, NULL);
}

/* ---- the host ---- */

static _Atomic uint64_t output_bytes;

static void count_output(pyproc_pool *p, int ind, int fd, const char *line, size_t len, void *data)
{
    (void)p, (void)ind, (void)fd, (void)line, (void)data;
    atomic_fetch_add_explicit(&output_bytes, len + 1, memory_order_relaxed);
}

static bool stdout_to_stderr; /* the pool's default output */

static size_t fake_max_msg = 1 << 20;

static pyproc_pool *fake_pool(const char *mode, int workers, size_t ring_bytes)
{
    pyproc_opts opts = {
        .workers = workers,
        .ring_bytes = ring_bytes,
        .max_msg_bytes = fake_max_msg,
        .output = stdout_to_stderr ? NULL : count_output,
    };

    return fake_pool_new("hostile", opts, mode);
}

static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Stream items from a worker that rewrites them as they are read, for two
 * seconds.  The host must check and decode a copy that it read once, each
 * aligned word whole: then every item is one of the two versions, and
 * none is ever refused.  A host that parses the ring in place sees a mix
 * of both: it refuses the batch (and kills the worker), or takes a length
 * from past the frame and reads out of bounds (which AddressSanitizer or
 * the end of the mapping reports).
 */
static void rewritten_items_are_read_safely(void **state)
{
    static const uint8_t item_a[8] = {0x94, 0xc0, 0xc0, 0xa2, 'x', 'y', 0xd9, 0x00};
    static const uint8_t item_b[8] = {0x94, 0xc0, 0xc0, 0xa3, 'x', 'y', 0xdb, 0xc0};
    pyproc_pool *p = fake_pool("flip-yield", 1, 4096);
    double until = e2e_now() + 2.0;
    long items = 0;
    pyproc_call *s;
    pyproc_msg *m = NULL;
    int rc = 1;

    (void)state;
    alarm(30);
    assert_int_equal(pyproc_ind_gen(p, 0, "flip-yield", &s, NULL), 0);
    while (e2e_now() < until && (rc = pyproc_next(s, &m)) == 1) {
        size_t len;
        const uint8_t *d = pyproc_msg_data(m, &len);
        assert_non_null(d);
        assert_int_equal(len, 8);
        if (memcmp(d, item_a, 8) != 0 && memcmp(d, item_b, 8) != 0)
            fail_msg("item %ld mixes the two versions", items);
        pyproc_msg_free(m);
        m = NULL;
        items++;
    }
    alarm(0);
    fprintf(stderr, "flip-yield: %ld items read\n", items);
    if (rc != 1)
        fail_msg("the stream ended (%d: %s) after %ld items", rc,
                 m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "", items);
    assert_true(items > 0);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

/* A worker that ignores its credit is killed once it exceeds the window. */
static void credit_is_enforced(void **state)
{
    pyproc_pool *p = fake_pool("flood-yield", 1, 1 << 16);
    pyproc_call *s;
    pyproc_msg *m = NULL;
    long items = 0;
    int rc;

    (void)state;
    alarm(30);
    assert_int_equal(pyproc_ind_gen(p, 0, "flood-yield", &s, NULL), 0);
    /* Nobody reads for a while; the worker keeps sending. */
    usleep(500 * 1000);
    while ((rc = pyproc_next(s, &m)) == 1) {
        pyproc_msg_free(m);
        m = NULL;
        if (++items > 4 * SHM_STREAM_WINDOW)
            fail_msg("the host queued %ld items of a stream, past its window", items);
    }
    alarm(0);
    assert_int_equal(rc, PYPROC_EWORKER);
    assert_true(items <= SHM_STREAM_WINDOW);
    pyproc_msg_free(m);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

/*
 * Worker 0 floods (mode); workers 1 and 2 each have a call in flight and
 * are killed one after the other: returns the longer time their calls
 * took to end with PYPROC_EWORKER (99: one did not, in 5 s).  Asserts
 * nothing itself, so that it can run while stderr points elsewhere.
 */
static double death_report_time(const char *mode, size_t ring_bytes)
{
    pyproc_pool *p = fake_pool(mode, 3, ring_bytes);
    pyproc_call *flood = NULL;
    double worst = 0;

    alarm(30);
    if (pyproc_ind_call(p, 0, &flood, mode, NULL) != 0)
        worst = 99;
    usleep(200 * 1000); /* the flood is under way */
    for (int ind = 1; ind <= 2 && worst < 99; ind++) {
        pyproc_call *hang;
        pyproc_msg *m = NULL;
        int pid = fake_pid(p, ind);
        double took = 99;
        if (pyproc_ind_call(p, ind, &hang, "hang", NULL) == 0) {
            double t0 = e2e_now();
            kill(pid, SIGKILL);
            if (pyproc_wait(hang, &m, 5000) == PYPROC_EWORKER)
                took = e2e_now() - t0;
            pyproc_msg_free(m);
            pyproc_call_free(hang);
        }
        worst = took > worst ? took : worst;
    }
    pyproc_call_free(flood);
    pyproc_pool_free(p);
    alarm(0);
    return worst;
}

static void death_reported_during_reply_flood(void **state)
{
    /* A ring of 64 fragments, each of which the host copies. */
    fake_max_msg = 64 << 20;
    double took = death_report_time("flood-result", 64 << 20);

    (void)state;
    fake_max_msg = 1 << 20;
    fprintf(stderr, "flood-result: death reported in %.3f s\n", took);
    if (took > 1.0)
        fail_msg("a death took %.2f s to report", took);
}

/*
 * The pool passes its workers' output to our stderr, a line per write:
 * pointed at /dev/null, it is slower than the worker's writes of 32768
 * lines at a time, so the pipe is never empty.
 */
static void death_reported_during_stdout_flood(void **state)
{
    int saved = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY);

    (void)state;
    assert_true(saved >= 0 && null >= 0);
    assert_true(dup2(null, STDERR_FILENO) >= 0);
    close(null);
    stdout_to_stderr = true;
    double took = death_report_time("flood-stdout", 4096);
    stdout_to_stderr = false;
    dup2(saved, STDERR_FILENO);
    close(saved);
    fprintf(stderr, "flood-stdout: death reported in %.3f s\n", took);
    if (took > 1.0)
        fail_msg("a death took %.2f s to report", took);
}

/*
 * A caller waits a second for a worker that, instead of answering, plays
 * with its reply ring's wait word (mode): the host must sleep anyway.
 */
static void waiting_does_not_spin(const char *mode)
{
    pyproc_pool *p = fake_pool(mode, 1, 4096);
    pyproc_call *c;
    pyproc_msg *m = NULL;

    alarm(30);
    assert_int_equal(pyproc_ind_call(p, 0, &c, mode, NULL), 0);
    usleep(50 * 1000);
    double cpu0 = cpu_now(), t0 = e2e_now();
    assert_int_equal(pyproc_wait(c, &m, 1000), -ETIMEDOUT);
    double cpu = cpu_now() - cpu0, wall = e2e_now() - t0;
    alarm(0);
    fprintf(stderr, "%s: %.3f s of CPU in %.3f s\n", mode, cpu, wall);
    /* A host that sleeps uses well under 1%; this is no speed claim. */
    if (cpu > 0.1 * wall)
        fail_msg("the host used %.0f%% of a CPU while waiting", 100 * cpu / wall);
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

/* It keeps changing the word, so that a FUTEX_WAIT on it may not sleep. */
static void toggled_wait_word_does_not_spin(void **state)
{
    (void)state;
    waiting_does_not_spin("toggle-wait");
}

/* It keeps waking whoever sleeps on the word. */
static void woken_wait_word_does_not_spin(void **state)
{
    (void)state;
    waiting_does_not_spin("wake-wait");
}

/* It keeps ringing the doorbell that the service thread sleeps on. */
static void rung_doorbell_does_not_spin(void **state)
{
    (void)state;
    waiting_does_not_spin("ring-bell");
}

/* A worker that answers with a buffer the host may not map is killed and
 * its call fails.  (An unsealed one could be shrunk under the host's
 * mapping, and reading it would then be SIGBUS.) */
static void bad_buffers_condemn_the_worker(void **state)
{
    static const char *const modes[] = {"buffer-unsealed", "buffer-small", "buffer-missing"};
    (void)state;

    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        pyproc_pool *p = fake_pool(modes[i], 1, 0);
        pyproc_msg *m = NULL;
        int pid = fake_pid(p, 0);

        alarm(30);
        assert_int_equal(pyproc_func(p, modes[i], &m, NULL), PYPROC_EWORKER);
        assert_non_null(strstr(pyproc_msg_error(m), "shared buffer"));
        pyproc_msg_free(m);
        /* Killed: its process is gone. */
        for (int k = 0; k < 500 && kill(pid, 0) == 0; k++)
            usleep(10 * 1000);
        assert_int_equal(kill(pid, 0), -1);
        pyproc_pool_free(p);
        alarm(0);
    }
}

int main(int argc, char **argv)
{
    /* Started as a worker, never run the tests. */
    if (fake_started_as_worker(argc, argv))
        return fake_worker(argc, argv);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_buffers_condemn_the_worker),
        cmocka_unit_test(rewritten_items_are_read_safely),
        cmocka_unit_test(credit_is_enforced),
        cmocka_unit_test(death_reported_during_reply_flood),
        cmocka_unit_test(death_reported_during_stdout_flood),
        cmocka_unit_test(toggled_wait_word_does_not_spin),
        cmocka_unit_test(woken_wait_word_does_not_spin),
        cmocka_unit_test(rung_doorbell_does_not_spin),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
