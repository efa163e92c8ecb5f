/*
 * Two-process stress test of the request ring.
 *
 * The test creates a segment and re-executes itself as a helper
 * (argv[1] = "helper") that maps the segment from an inherited fd, the way
 * a worker does.  The parent writes a long stream of messages of random
 * sizes, a few hundred of them larger than the ring; the helper checks the
 * type, id, length and checksum of each in order and answers on the reply
 * ring with what it saw.  Both sides draw the sizes from the same seed, so
 * the helper knows what must come next.
 *
 * Each side pauses now and then, so that the other runs dry (or fills the
 * ring) and goes to sleep; the helper alternates between sleeping on the
 * futex and on an eventfd doorbell.  A wake-up that goes missing shows as
 * a wait that ends by time-out with data there, and fails the test.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/segment.h"

#define RING_BYTES (32u << 10)
#define MAX_MSG (1u << 20)
#define MESSAGES 1000000u
#define SPIN_NS 20000
#define SEED 0x9e3779b97f4a7c15ull
#define CHILD_FD 10       /* the segment, in the helper */
#define CHILD_DOORBELL 11 /* the helper's eventfd */

/* Each side pauses this long every PAUSE_EVERY messages, out of step. */
#define PAUSE_EVERY 2000u
#define PAUSE_US 200

/*
 * The helper sleeps at most WAIT_MS at a time; no pause of the parent comes
 * close, so a wait that lasts LATE_MS and then finds data lost its wake-up.
 */
#define WAIT_MS 2000
#define LATE_MS 1500
/* A write this slow most likely slept out the producer's bounded nap. */
#define STALL_NS (90 * 1000000ll)

extern char **environ;

/* What the helper reports on the reply ring. */
struct summary {
    uint64_t messages;
    uint64_t bytes;
    uint64_t hash;   /* of every message's checksum, in order */
    uint64_t sleeps; /* waits that went past spinning */
    uint64_t late;   /* waits that ended by time-out with data there */
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Size and type of the next message; both sides call it in the same order. */
static size_t plan_next(uint64_t *rng, uint32_t max_frag, uint16_t *type)
{
    uint64_t r = splitmix(rng);
    unsigned pick = (unsigned)(r % 4000);
    uint64_t x = r >> 20;

    *type = (uint16_t)(SHM_FRAME_CALL + (r >> 12) % (SHM_FRAME_CREDIT - SHM_FRAME_CALL + 1));
    if (pick == 0)
        return RING_BYTES + x % (3 * RING_BYTES); /* fragmented */
    if (pick < 4)
        return max_frag - 1 + pick % 3; /* around the fragment limit */
    if (pick < 1200)
        return 0;
    if (pick < 2800)
        return x % 64;
    if (pick < 3700)
        return x % 1024;
    return 1024 + x % 3072;
}

static uint64_t frames_of(size_t len, uint32_t max_frag)
{
    return len <= max_frag ? 1 : (len + max_frag - 1) / max_frag;
}

/* Message bytes past the checksum: a stream drawn from the sequence number. */
static void fill(uint8_t *p, size_t len, uint64_t seq)
{
    uint64_t s = seq * 0x2545f4914f6cdd1dull + 1;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w = splitmix(&s);
        memcpy(p + i, &w, 8);
    }
    if (i < len) {
        uint64_t w = splitmix(&s);
        memcpy(p + i, &w, len - i);
    }
}

/* A checksum seeded with the sequence number, so a stale message fails. */
static uint64_t checksum(const uint8_t *p, size_t len, uint64_t seq)
{
    uint64_t h = seq ^ 0xcbf29ce484222325ull;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ len;
}

/*
 * Build message seq: bytes 8.. from fill(), bytes 0..7 their checksum.  A
 * message shorter than 8 bytes is all fill() and its checksum is implied.
 */
static uint64_t make_msg(uint8_t *p, size_t len, uint64_t seq)
{
    uint64_t sum;

    if (len < 8) {
        fill(p, len, seq);
        return checksum(p, len, seq);
    }
    fill(p + 8, len - 8, seq);
    sum = checksum(p + 8, len - 8, seq);
    memcpy(p, &sum, 8);
    return sum;
}

/* Check message seq; returns its checksum, or sets *bad. */
static uint64_t check_msg(const uint8_t *p, size_t len, uint64_t seq, bool *bad)
{
    uint64_t sum, want;

    if (len < 8) {
        uint8_t tmp[8];
        fill(tmp, len, seq);
        *bad = memcmp(tmp, p, len) != 0;
        return checksum(tmp, len, seq);
    }
    memcpy(&want, p, 8);
    sum = checksum(p + 8, len - 8, seq);
    *bad = sum != want;
    return sum;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

/* ---- helper process ---- */

static void helper_fail(struct shm_ring *reply, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "helper: %s\n", text);
    shm_ring_write(reply, SHM_FRAME_ERROR, 0, text, strlen(text), SPIN_NS);
    exit(1);
}

struct helper {
    struct shm_ring req, reply;
    struct summary sum;
    pid_t parent;
    int doorbell;
};

/* What shm_ring_wait() would answer now, without waiting. */
static int helper_ready(struct shm_ring *r)
{
    if (!shm_ring_empty(r))
        return 1;
    if (!shm_ring_is_closed(r))
        return 0;
    return shm_ring_empty(r) ? -EPIPE : 1;
}

/* Sleep in poll() on the doorbell, the way an event loop would. */
static int helper_wait_doorbell(struct helper *h)
{
    struct pollfd p = {.fd = h->doorbell, .events = POLLIN};
    uint64_t v;
    int rc = shm_ring_wait(&h->req, SPIN_NS, 0);

    if (rc)
        return rc;
    if (!shm_ring_sleep_begin(&h->req, SHM_SLEEP_DOORBELL)) {
        poll(&p, 1, WAIT_MS);
        shm_ring_sleep_end(&h->req);
    }
    /* Stale rings only make a later poll() return early; drop them. */
    while (read(h->doorbell, &v, sizeof v) > 0)
        ;
    return helper_ready(&h->req);
}

/* Wait for the next whole message; leave if the parent has gone. */
static void helper_read(struct helper *h, struct shm_msg *m, bool doorbell)
{
    int rc;

    while ((rc = shm_ring_read(&h->req, m)) == 0) {
        int64_t t0 = shm_now_ns(), ns;

        rc = doorbell ? helper_wait_doorbell(h) : shm_ring_wait(&h->req, SPIN_NS, WAIT_MS);
        ns = shm_now_ns() - t0;
        if (rc < 0)
            helper_fail(&h->reply, "request ring closed early (%d)", rc);
        if (ns > 2 * SPIN_NS + 50000)
            h->sum.sleeps++;
        if (rc == 1 && ns >= LATE_MS * 1000000ll)
            h->sum.late++;
        if (rc == 0 && getppid() != h->parent)
            exit(3);
    }
    if (rc < 0)
        helper_fail(&h->reply, "shm_ring_read: %s", strerror(-rc));
}

static int helper_main(int argc, char **argv)
{
    struct helper h = {.doorbell = CHILD_DOORBELL};
    struct shm_seg seg;
    uint64_t rng = SEED, count;
    int rc;

    if (argc != 5)
        return 2;
    h.parent = (pid_t)atol(argv[3]);
    count = strtoull(argv[4], NULL, 10);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != h.parent)
        return 3;
    rc = shm_seg_map(&seg, atoi(argv[2]), h.parent, 0);
    if (rc < 0) {
        fprintf(stderr, "helper: shm_seg_map: %s\n", strerror(-rc));
        return 1;
    }
    if (shm_ring_attach(&h.req, &seg.hdr->request, seg.request_data, seg.hdr->ring_bytes,
                        seg.hdr->max_msg_bytes, -1, shm_frame_type_to_worker) < 0 ||
        shm_ring_attach(&h.reply, &seg.hdr->reply, seg.reply_data, seg.hdr->ring_bytes,
                        seg.hdr->max_msg_bytes, -1, NULL) < 0)
        return 1;

    for (uint64_t seq = 0; seq < count; seq++) {
        struct shm_msg m;
        uint16_t type;
        size_t len = plan_next(&rng, h.req.max_frag, &type);
        bool bad;

        /* Let the ring fill up, so the parent has to sleep for space. */
        if (seq % PAUSE_EVERY == PAUSE_EVERY / 2)
            usleep(PAUSE_US);
        helper_read(&h, &m, (seq / PAUSE_EVERY) % 2);
        if (m.id != seq + 1 || m.type != type || m.len != len)
            helper_fail(&h.reply,
                        "message %" PRIu64 ": id %" PRIu64
                        " type %u len %zu, "
                        "want id %" PRIu64 " type %u len %zu",
                        seq, m.id, m.type, m.len, seq + 1, type, len);
        h.sum.hash = mix(h.sum.hash, check_msg(m.payload, m.len, seq, &bad));
        if (bad)
            helper_fail(&h.reply, "message %" PRIu64 " (len %zu): bad checksum", seq, len);
        h.sum.messages++;
        h.sum.bytes += m.len;
        shm_ring_done(&h.req, &m);
    }
    rc = shm_ring_write(&h.reply, SHM_FRAME_RESULT, 1, &h.sum, sizeof h.sum, SPIN_NS);
    shm_ring_detach(&h.req);
    shm_ring_detach(&h.reply);
    shm_seg_release(&seg);
    return rc < 0 ? 1 : 0;
}

/* ---- parent ---- */

struct watch {
    pid_t pid;
    int status;
    struct shm_ring *req, *reply;
};

/* When the helper exits, close both rings so the parent never waits on it. */
static void *watch_helper(void *arg)
{
    struct watch *w = arg;

    while (waitpid(w->pid, &w->status, 0) < 0 && errno == EINTR)
        ;
    shm_ring_close(w->req);
    shm_ring_close(w->reply);
    return NULL;
}

static pid_t spawn_helper(int fd, int doorbell, uint64_t count)
{
    char fdstr[16], pidstr[16], countstr[24];
    char *argv[] = {"shm_test_ring_stress", "helper", fdstr, pidstr, countstr, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int rc;

    snprintf(fdstr, sizeof fdstr, "%d", CHILD_FD);
    snprintf(pidstr, sizeof pidstr, "%d", (int)getpid());
    snprintf(countstr, sizeof countstr, "%" PRIu64, count);
    /* Both fds are close-on-exec; their copies made for the child are not. */
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fd, CHILD_FD), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, doorbell, CHILD_DOORBELL), 0);
    rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);
    return pid;
}

/* Print the helper's ERROR text, if it left one. */
static void show_helper_error(struct shm_ring *reply)
{
    struct shm_msg m;

    if (shm_ring_read(reply, &m) == 1 && m.type == SHM_FRAME_ERROR)
        fprintf(stderr, "helper said: %.*s\n", (int)m.len, (const char *)m.payload);
}

static void test_stress(void **state)
{
    struct shm_ring req, reply;
    struct summary want = {0}, got;
    struct watch w = {0};
    struct shm_seg seg;
    struct shm_msg m;
    uint64_t rng = SEED, frames = 0, big = 0, waited = 0, stalls = 0;
    uint8_t *buf = malloc(MAX_MSG);
    int doorbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_t watcher;
    int64_t t0, t1;
    int rc;

    assert_non_null(buf);
    assert_true(doorbell >= 0);
    assert_int_equal(shm_seg_create(&seg, RING_BYTES, 0, MAX_MSG), 0);
    assert_int_equal(shm_ring_attach(&req, &seg.hdr->request, seg.request_data, RING_BYTES, MAX_MSG,
                                     doorbell, NULL),
                     0);
    assert_int_equal(shm_ring_attach(&reply, &seg.hdr->reply, seg.reply_data, RING_BYTES, MAX_MSG,
                                     -1, shm_frame_type_to_host),
                     0);
    w = (struct watch){
        .pid = spawn_helper(seg.fd, doorbell, MESSAGES),
        .req = &req,
        .reply = &reply,
    };
    assert_int_equal(pthread_create(&watcher, NULL, watch_helper, &w), 0);

    t0 = shm_now_ns();
    for (uint64_t seq = 0; seq < MESSAGES; seq++) {
        uint16_t type;
        size_t len = plan_next(&rng, req.max_frag, &type);
        int64_t ns;

        /* Let the helper run dry, so it has to sleep. */
        if (seq % PAUSE_EVERY == 0)
            usleep(PAUSE_US);
        want.hash = mix(want.hash, make_msg(buf, len, seq));
        ns = shm_now_ns();
        rc = shm_ring_write(&req, type, seq + 1, buf, len, SPIN_NS);
        ns = shm_now_ns() - ns;
        waited += ns > 2 * SPIN_NS + 50000;
        stalls += ns > STALL_NS;
        if (rc < 0) {
            fprintf(stderr, "write of message %" PRIu64 ": %s\n", seq, strerror(-rc));
            show_helper_error(&reply);
            fail();
        }
        want.messages++;
        want.bytes += len;
        frames += frames_of(len, req.max_frag);
        big += len > RING_BYTES;
    }

    while ((rc = shm_ring_read(&reply, &m)) == 0)
        assert_int_not_equal(shm_ring_wait(&reply, SPIN_NS, 10000), 0);
    t1 = shm_now_ns();
    assert_int_equal(rc, 1);
    if (m.type == SHM_FRAME_ERROR)
        fprintf(stderr, "helper said: %.*s\n", (int)m.len, (const char *)m.payload);
    assert_int_equal(m.type, SHM_FRAME_RESULT);
    assert_int_equal(m.len, sizeof got);
    memcpy(&got, m.payload, sizeof got);
    shm_ring_done(&reply, &m);
    assert_int_equal(got.messages, want.messages);
    assert_int_equal(got.bytes, want.bytes);
    assert_int_equal(got.hash, want.hash);
    assert_int_equal(got.late, 0);
    /*
     * A lost wake-up costs the producer a whole nap.  A loaded machine
     * causes a few such stalls too, so only a share of them fails.
     */
    assert_true(stalls <= 5 + waited / 50);

    assert_int_equal(pthread_join(watcher, NULL), 0);
    assert_true(WIFEXITED(w.status));
    assert_int_equal(WEXITSTATUS(w.status), 0);

    printf("shm ring stress: %" PRIu64 " messages (%" PRIu64
           " larger than the ring), "
           "%" PRIu64 " frames, %.1f MB in %.2f s: %.2f Mframes/s, %.0f MB/s\n",
           want.messages, big, frames, want.bytes / 1e6, (t1 - t0) / 1e9,
           frames * 1e3 / (double)(t1 - t0), want.bytes * 1e3 / (double)(t1 - t0));
    printf("shm ring stress: helper slept %" PRIu64 " times, parent waited for space %" PRIu64
           " times (%" PRIu64 " over 90 ms)\n",
           got.sleeps, waited, stalls);

    shm_ring_detach(&req);
    shm_ring_detach(&reply);
    shm_seg_release(&seg);
    close(doorbell);
    free(buf);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
    };

    if (argc > 1 && strcmp(argv[1], "helper") == 0)
        return helper_main(argc, argv);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
