/*
 * Fake workers for end-to-end tests: the test binary, started again as the
 * pool's worker, plays a worker without Python.
 *
 * Host side: fake_pool_new() points worker_path at this binary and passes a
 * mode in FAKE_MODE_ENV.  Worker side: main() calls its own worker when
 * fake_started_as_worker(); that one calls fake_attach() (segment mapped,
 * both rings attached, READY sent with the pid) and then serves, e.g. with
 * fake_run().  What a fake worker does wrong is its test's own business.
 */
#ifndef PYPROC_TESTS_FAKE_WORKER_H
#define PYPROC_TESTS_FAKE_WORKER_H

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "e2e.h"
#include "shm/segment.h"

#define FAKE_MODE_ENV "PYPROC_TEST_FAKE"

/* The worker's state: one per process, written by fake_attach() only. */
static struct {
    const char *mode; /* FAKE_MODE_ENV, or "none" */
    int index;
    int death_fd; /* readable once the host is gone */
    struct shm_seg seg;
    struct shm_ring req, rep;
} fake;

/* Whether this process was started as a worker rather than as the test. */
static inline bool fake_started_as_worker(int argc, char **argv)
{
    return argc > 1 && strcmp(argv[1], "--fd") == 0;
}

static inline long fake_arg(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return strtol(argv[i + 1], NULL, 10);
    fprintf(stderr, "fake worker: no %s\n", name);
    _exit(2);
}

/* msgpack of a non-negative int below 2^32, always as uint32. */
static inline size_t fake_pack_uint(uint8_t out[5], uint32_t v)
{
    out[0] = 0xce;
    out[1] = (uint8_t)(v >> 24);
    out[2] = (uint8_t)(v >> 16);
    out[3] = (uint8_t)(v >> 8);
    out[4] = (uint8_t)v;
    return 5;
}

/* Nothing the host could send needs more than this to answer. */
static inline void fake_write(uint16_t type, uint64_t id, const void *p, size_t n)
{
    if (shm_ring_write(&fake.rep, type, id, p, n, 0) < 0)
        _exit(0); /* the host closed the ring: it is done with us */
}

/* A frame of `type` whose payload is this process's pid. */
static inline void fake_write_pid(uint16_t type, uint64_t id)
{
    uint8_t out[5];

    fake_write(type, id, out, fake_pack_uint(out, (uint32_t)getpid()));
}

static inline bool fake_host_gone(void)
{
    struct pollfd pfd = {.fd = fake.death_fd, .events = POLLIN};

    return poll(&pfd, 1, 0) != 0;
}

/*
 * Everything a worker does before its first request: die with the host,
 * map the segment, attach both rings and say READY.  Exits on failure.
 */
static inline void fake_attach(int argc, char **argv)
{
    pid_t host = (pid_t)fake_arg(argc, argv, "--host-pid");
    int seg_fd = (int)fake_arg(argc, argv, "--fd");

    fake.mode = getenv(FAKE_MODE_ENV) ? getenv(FAKE_MODE_ENV) : "none";
    fake.index = (int)fake_arg(argc, argv, "--index");
    fake.death_fd = (int)fake_arg(argc, argv, "--death-fd");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != host)
        _exit(0);
    if (shm_seg_map(&fake.seg, seg_fd, host, (uint32_t)fake.index) < 0)
        _exit(1);
    uint64_t n = fake.seg.hdr->ring_bytes, max = fake.seg.hdr->max_msg_bytes;
    if (shm_ring_attach(&fake.req, &fake.seg.hdr->request, fake.seg.request_data, n, max,
                        (int)fake_arg(argc, argv, "--request-bell"),
                        shm_frame_type_to_worker) < 0 ||
        shm_ring_attach(&fake.rep, &fake.seg.hdr->reply, fake.seg.reply_data, n, max,
                        (int)fake_arg(argc, argv, "--reply-bell"), shm_frame_type_to_host) < 0)
        _exit(1);
    fake_write_pid(SHM_FRAME_READY, 0);
}

/* Whether m calls name, which the host sends as a fixstr. */
static inline bool fake_call_named(const struct shm_msg *m, const char *name)
{
    size_t n = strlen(name);

    return m->len >= 3 + n && m->payload[2] == (0xa0 | n) && memcmp(m->payload + 3, name, n) == 0;
}

/* What every fake worker does with frames that are not calls. */
static inline void fake_serve_default(const struct shm_msg *m)
{
    switch (m->type) {
    case SHM_FRAME_SHUTDOWN:
        _exit(0);
    case SHM_FRAME_ADD_SUB:
    case SHM_FRAME_SET_ATTR:
        fake_write(SHM_FRAME_RESULT, m->id, "\xc0", 1);
        return;
    default:
        return; /* notes that get no answer */
    }
}

/*
 * Serve requests until the host goes: serve() each, then release it, then
 * after() (if any).  Never returns.
 */
static inline _Noreturn void fake_run(void (*serve)(struct shm_msg *m), void (*after)(void))
{
    for (;;) {
        struct shm_msg m;
        int rc = shm_ring_wait(&fake.req, 0, 100);

        if (rc < 0 || fake_host_gone())
            _exit(0);
        while ((rc = shm_ring_read(&fake.req, &m)) == 1) {
            serve(&m);
            shm_ring_done(&fake.req, &m);
            if (after)
                after();
        }
        if (rc < 0)
            _exit(1);
    }
}

/* ---- the host's side ---- */

/* This binary, which the pool starts as its workers. */
static inline const char *fake_self(void)
{
    static char self[PATH_MAX];

    if (!self[0]) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        assert_true(n > 0);
        self[n] = 0;
    }
    return self;
}

/* A pool named name of fake workers in mode (NULL: none). */
static inline pyproc_pool *fake_pool_new(const char *name, pyproc_opts opts, const char *mode)
{
    pyproc_pool *p = NULL;

    opts.worker_path = fake_self();
    /* It stands in for an exec'd worker: it speaks the rings, not a
     * template's socket. */
    opts.start = PYPROC_START_EXEC;
    if (mode)
        assert_int_equal(setenv(FAKE_MODE_ENV, mode, 1), 0);
    assert_int_equal(pyproc_pool_new(&p, name, &opts), 0);
    unsetenv(FAKE_MODE_ENV);
    return p;
}

/* What "pid" answers on worker ind. */
static inline int fake_pid(pyproc_pool *p, int ind)
{
    pyproc_msg *m = NULL;
    int pid = -1;
    int rc = pyproc_ind_func(p, ind, "pid", &m, NULL);

    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "i", &pid), 0);
    pyproc_msg_free(m);
    return pid;
}

#endif
