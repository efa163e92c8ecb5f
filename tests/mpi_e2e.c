/*
 * End to end against pools over MPI: run by tests/mpi.sh as
 *
 *   mpirun --oversubscribe --mca btl tcp,self -n 1 mpi_e2e [MODE] : -n 2 pyproc-agent
 *
 * so that every frame crosses TCP.  Without MODE: the tests below, each
 * with pools of its own on MPI_COMM_WORLD, then pyproc_mpi_shutdown().
 * MODE "host-dies": start a pool, print the pids of its workers and
 * agents on stdout, and die by SIGKILL in the middle of calls.  MODE
 * "agent-dies": kill an agent in the middle of a call, and say on stdout
 * what came of it (if this process still lives to say anything).
 * MODE "hostile" with MODE "fake-agent" as the other rank: an agent that
 * sends the host junk of every shape and a worker's answer that is no
 * msgpack value; the host must live on.  MODE "refusals", with
 * PYPROC_E2E_MPI_SINGLE set: MPI initialised without threads.
 */
#define PYPROC_E2E_MPI 1
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "e2e.h"
#include "mpi/wire.h"

static const char *error_of(pyproc_pool *p, const char *ref, const char *fmt, const char *arg,
                            int want, char *buf, size_t n)
{
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc_func(p, ref, &m, fmt, arg), want);
    snprintf(buf, n, "%s", pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
    pyproc_msg_free(m);
    return buf;
}

/* Results, and Python's errors with the very text a local pool gives. */
static void sync_calls(void **state)
{
    pyproc_pool *p = e2e_pool(2), *local = NULL;
    char remote_err[4096], local_err[4096];
    pyproc_msg *m = NULL;
    const char *s;
    int64_t a, b;

    assert_int_equal(pyproc_func(p, "t.basic.echo", &m, "is", 7, "seven"), 0);
    assert_int_equal(pyproc_msg_read(m, "[Is]", &a, &s), 0);
    assert_int_equal(a, 7);
    assert_string_equal(s, "seven");
    pyproc_msg_free(m);
    /* Large enough to be fragmented in both rings and batched whole. */
    assert_int_equal(pyproc_func(p, "t.basic.make_bytes", &m, "i", 3 << 20), 0);
    const void *data;
    size_t len;
    assert_int_equal(pyproc_msg_read(m, "y", &data, &len), 0);
    assert_int_equal(len, 3 << 20);
    pyproc_msg_free(m);

    error_of(p, "t.basic.fail", "s", "nope", PYPROC_EREMOTE, remote_err, sizeof remote_err);
    assert_int_equal(pyproc_pool_new(&local, "test",
                                     &(pyproc_opts){.workers = 1, .python_path = "tests/py"}),
                     0);
    assert_int_equal(pyproc_add_sub(local, "t", "e2e", PYPROC_SUB_INIT), 0);
    error_of(local, "t.basic.fail", "s", "nope", PYPROC_EREMOTE, local_err, sizeof local_err);
    assert_string_equal(remote_err, local_err);
    assert_non_null(strstr(remote_err, "KeyError"));
    pyproc_pool_free(local);

    /* Indexed calls land where they are sent. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pyproc_ind_func(p, i, "t.basic.where", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "[II]", &a, &b), 0);
        assert_int_equal(a, i);
        pyproc_msg_free(m);
    }
    int ind = -1;
    pyproc_call *c;
    assert_int_equal(pyproc_track_func(p, &ind, &c, "t.basic.where", NULL), 0);
    assert_int_equal(pyproc_wait(c, &m, 10000), 0);
    assert_int_equal(pyproc_msg_read(m, "[II]", &a, &b), 0);
    assert_int_equal(a, ind);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

/* A stream far longer than the credit window: credit flows back. */
static void generator_flow(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *s = NULL;
    pyproc_msg *item = NULL;
    int64_t v, n = 0;

    assert_int_equal(pyproc_gen(p, "t.calls.count", &s, "id", 5000, 0.0), 0);
    while (pyproc_next(s, &item) == 1) {
        assert_int_equal(pyproc_msg_read(item, "I", &v), 0);
        assert_int_equal(v, n);
        n++;
        pyproc_msg_free(item);
        item = NULL;
        if (n == 10)
            usleep(300000); /* the worker stops at the window meanwhile */
    }
    assert_int_equal(n, 5000);
    pyproc_msg_free(item);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

static int add_one(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    int n = 0;
    pyproc_msg_read(payload, "i", &n);
    return pyproc_msg_new(reply, "i", n + 1);
}

/* pub and set_attr reach every worker; callbacks come home. */
static void broadcast_and_callbacks(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 3, .callback = add_one});
    pyproc_msg **rets = NULL, *m = NULL;
    const char *s;
    int n;

    assert_int_equal(pyproc_set_attr(p, "t.FLAVOUR", "s", "mint"), 0);
    n = pyproc_pub(p, "t.proc.get_attr", &rets, "s", "t.FLAVOUR");
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pyproc_msg_read(rets[i], "s", &s), 0);
        assert_string_equal(s, "mint");
        pyproc_msg_free(rets[i]);
    }
    free(rets);
    assert_int_equal(pyproc_func(p, "t.calls.call_home", &m, "i", 40), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &n), 0);
    assert_int_equal(n, 42);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

/* Cancel and the call timeout reach the remote worker's stop table, and
 * the call timeout's kill reaches what cannot be interrupted. */
static void cancel_and_timeout(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .call_timeout_ms = 300});
    int pid = e2e_pid_of(p, 0);
    pyproc_call *c;
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_wait(c, &m, 100), -ETIMEDOUT);
    assert_int_equal(pyproc_cancel(c), 0);
    assert_int_equal(pyproc_wait(c, &m, 5000), -ECANCELED);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    m = NULL;
    /* Interrupted by the signal the agent sends: same worker after. */
    assert_int_equal(pyproc_func(p, "t.cancel.spin_forever", &m, NULL), -ETIMEDOUT);
    assert_non_null(strstr(pyproc_msg_error(m), "CallTimeout"));
    pyproc_msg_free(m);
    m = NULL;
    assert_int_equal(e2e_pid_of(p, 0), pid);
    /* Signals blocked: killed, as a local one is, and respawned. */
    assert_int_equal(pyproc_func(p, "t.cancel.sleep_blocked", &m, "d", 30.0), -ETIMEDOUT);
    assert_non_null(strstr(pyproc_msg_error(m), "signal 9"));
    pyproc_msg_free(m);
    int now = -1;
    for (int i = 0; i < 1000 && (now <= 0 || now == pid); i++) {
        now = e2e_pid_of(p, 0);
        usleep(10000);
    }
    assert_true(now > 0 && now != pid);
    pyproc_worker_stats st;
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_true(st.errors >= 3);
    assert_int_equal(st.restarts, 1);
    assert_int_equal(st.pid, now);
    pyproc_pool_free(p);
}

/* A remote worker killed mid-call: PYPROC_EWORKER naming the signal and
 * the node, a respawn with the history replayed, and the pool goes on. */
static void remote_worker_killed(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *c;
    pyproc_msg *m = NULL;
    int pid = e2e_pid_of(p, 1);

    assert_int_equal(pyproc_set_attr(p, "t.FLAVOUR", "s", "mint"), 0);
    assert_int_equal(pyproc_ind_call(p, 1, &c, "t.calls.block", "d", 30.0), 0);
    usleep(200000);
    assert_true(pid > 0);
    kill(pid, SIGKILL); /* one machine: the test can reach it */
    assert_int_equal(pyproc_wait(c, &m, 10000), PYPROC_EWORKER);
    assert_non_null(strstr(pyproc_msg_error(m), "worker 1 was killed by signal 9"));
    assert_non_null(strstr(pyproc_msg_error(m), "on node"));
    pyproc_msg_free(m);
    pyproc_call_free(c);
    int again = -1;
    for (int i = 0; i < 1000 && (again <= 0 || again == pid); i++) {
        again = e2e_pid_of(p, 1);
        usleep(10000);
    }
    assert_true(again > 0 && again != pid);
    const char *s;
    assert_int_equal(pyproc_ind_func(p, 1, "t.proc.get_attr", &m, "s", "t.FLAVOUR"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "mint");
    pyproc_msg_free(m);
    assert_int_equal(pyproc_ind_func(p, 1, "t.basic.inits", &m, NULL), 0);
    pyproc_msg_free(m);
    pyproc_worker_stats st;
    assert_int_equal(pyproc_stats(p, 1, &st), 0);
    assert_int_equal(st.restarts, 1);
    pyproc_pool_free(p);
}

struct lines {
    pthread_mutex_t lock;
    char text[512];
};

static void keep_line(pyproc_pool *p, int ind, int fd, const char *line, size_t len, void *data)
{
    struct lines *l = data;
    pthread_mutex_lock(&l->lock);
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%d/%d:%.*s|", ind, fd, (int)len, line);
    pthread_mutex_unlock(&l->lock);
}

/* A remote worker's output reaches the host's output function, line by
 * line, with its index and stream; shared buffers are refused. */
static void output_and_buffers(void **state)
{
    struct lines l = {PTHREAD_MUTEX_INITIALIZER, ""};
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = 2, .output = keep_line, .output_data = &l});
    pyproc_msg *m = NULL;
    pyproc_buf *b = NULL;

    assert_int_equal(pyproc_ind_func(p, 1, "t.hygiene.say", &m, NULL), 0);
    pyproc_msg_free(m);
    m = NULL;
    bool seen = false;
    for (int i = 0; i < 500 && !seen; i++) {
        pthread_mutex_lock(&l.lock);
        seen = strstr(l.text, "1/1:second line|") != NULL;
        pthread_mutex_unlock(&l.lock);
        usleep(10000);
    }
    assert_true(seen);
    assert_non_null(strstr(l.text, "1/1:first line|"));
    assert_int_equal(pyproc_buf_new(p, 4096, &b), 0);
    assert_int_equal(pyproc_func(p, "t.buffers.total", &m, "B", b, (size_t)0, (size_t)4096),
                     -EOPNOTSUPP);
    pyproc_msg_free(m);
    pyproc_buf_free(b);
    pyproc_pool_free(p);
    pthread_mutex_lock(&l.lock); /* nothing writes any more */
    pthread_mutex_unlock(&l.lock);
}

/* An output function that blocks (until the test opens its gate). */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t opened;
    bool open;
    int lines;
};

static void gate_line(pyproc_pool *p, int ind, int fd, const char *line, size_t len, void *data)
{
    struct gate *g = data;
    pthread_mutex_lock(&g->lock);
    g->lines++;
    while (!g->open)
        pthread_cond_wait(&g->opened, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static int gate_lines(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    int n = g->lines;
    pthread_mutex_unlock(&g->lock);
    return n;
}

/* A call waited for at most 10 s: its result code. */
static int bounded_call(pyproc_pool *p, const char *ref)
{
    pyproc_call *c;
    pyproc_msg *m = NULL;
    int rc = pyproc_track_func(p, NULL, &c, ref, NULL);

    if (rc == 0) {
        rc = pyproc_wait(c, &m, 10000);
        pyproc_msg_free(m);
        pyproc_call_free(c);
    }
    return rc;
}

/* An output function stuck on a remote worker's line holds up no call:
 * the lines are passed on by a thread of their own.  Once it returns, the
 * lines held back follow, in order. */
static void slow_output(void **state)
{
    struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = 1, .output = gate_line, .output_data = &g});
    int rc[3];

    rc[0] = bounded_call(p, "t.hygiene.say");
    for (int i = 0; i < 500 && gate_lines(&g) == 0; i++)
        usleep(10000);
    rc[1] = gate_lines(&g);
    rc[2] = 0;
    for (int i = 0; i < 20 && rc[2] == 0; i++)
        rc[2] = bounded_call(p, "t.calls.ping");
    pthread_mutex_lock(&g.lock); /* open before asserting: nothing hangs */
    g.open = true;
    pthread_cond_broadcast(&g.opened);
    pthread_mutex_unlock(&g.lock);
    assert_int_equal(rc[0], 0);
    assert_int_equal(rc[1], 1); /* the first line, stuck in the function */
    assert_int_equal(rc[2], 0);
    for (int i = 0; i < 500 && gate_lines(&g) < 2; i++)
        usleep(10000);
    assert_int_equal(gate_lines(&g), 2); /* stdout's two lines */
    pyproc_pool_free(p);
}

static void send_raw(int rank, int tag, const void *p, size_t n)
{
    MPI_Send(p, (int)n, MPI_BYTE, rank, tag, MPI_COMM_WORLD);
}

/* Batches no host would send, to every agent on the control tag and every
 * pool's tag this run may use: each is dropped whole or record by record,
 * and the agents and workers go on as before. */
static void garbage_to_agents(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    int pid[2] = {e2e_pid_of(p, 0), e2e_pid_of(p, 1)};
    struct pm_batch b = {0};
    uint8_t junk[100] = {1, 2, 3, 4, 5};
    struct pm_hdr lie = {.wid = 1, .kind = PM_FRAME, .type = SHM_FRAME_CALL, .len = 1000};
    struct pm_hdr huge = {.wid = 1,
                          .kind = PM_FRAME,
                          .type = SHM_FRAME_CALL,
                          .len = UINT64_MAX - 3};

    memcpy(junk, &lie, sizeof lie);
    for (uint32_t wid = 0; wid < 12; wid++) {
        pm_batch_add(&b, wid, PM_FRAME, 99, 1, "x", 1);               /* not a request */
        pm_batch_add(&b, wid, PM_FRAME, SHM_FRAME_READY, 1, NULL, 0); /* a reply's type */
        pm_batch_add(&b, wid, PM_SPAWN, 0, UINT64_MAX, NULL, 0);      /* no such index */
        pm_batch_add(&b, wid, PM_PARAMS, 0, 0, "short", 5);           /* cut short */
        pm_batch_add(&b, wid, PM_STOPS, 0, 1, junk, 17);              /* wrong size */
        pm_batch_add(&b, wid, PM_KILL, 0, 77, NULL, 0);               /* not a signal we send */
        pm_batch_add(&b, wid, 999, 0, 0, junk, 8);                    /* no such kind */
        pm_batch_add(&b, wid, PM_POOL_NEW, 0, 5, NULL, 0);            /* tag out of range */
    }
    for (int rank = 1; rank <= 2; rank++) {
        for (int tag = PM_TAG_POOL_FIRST; tag < PM_TAG_POOL_FIRST + 40; tag++) {
            send_raw(rank, tag, junk, 5);
            send_raw(rank, tag, junk, sizeof junk);
            send_raw(rank, tag, &huge, sizeof huge);
            send_raw(rank, tag, b.buf, b.len);
        }
        send_raw(rank, PM_TAG_CTL, junk, sizeof junk);
        send_raw(rank, PM_TAG_CTL, b.buf, b.len);
    }
    pm_batch_free(&b);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(e2e_pid_of(p, i), pid[i]);
        pyproc_worker_stats st;
        assert_int_equal(pyproc_stats(p, i, &st), 0);
        assert_int_equal(st.restarts, 0);
    }
    pyproc_pool_free(p);
}

/* A remote worker that dies in the middle of its call (killing itself,
 * so that no pid crosses a pid namespace): PYPROC_EWORKER with the node,
 * then a respawn. */
static void worker_kills_itself(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc_ind_func(p, 1, "t.crash.kill_self", &m, "i", SIGKILL), PYPROC_EWORKER);
    assert_non_null(strstr(pyproc_msg_error(m), "worker 1 was killed by signal 9"));
    assert_non_null(strstr(pyproc_msg_error(m), "on node"));
    pyproc_msg_free(m);
    int rc = -1;
    for (int i = 0; i < 1000 && rc != 0; i++) {
        m = NULL;
        rc = pyproc_ind_func(p, 1, "t.basic.inits", &m, NULL);
        pyproc_msg_free(m);
        if (rc != 0)
            usleep(10000);
    }
    assert_int_equal(rc, 0);
    pyproc_pool_free(p);
}

/* opts.env reaches the remote workers, which get nothing else of it. */
static void environment(void **state)
{
    const char *env[] = {"PYPROC_MPI_TEST=yes", "PATH=/usr/bin:/bin", NULL};
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .env = env});
    const char *s;

    for (int i = 0; i < 2; i++) {
        pyproc_msg *m = NULL;
        assert_int_equal(pyproc_ind_func(p, i, "t.mpi.env", &m, "s", "PYPROC_MPI_TEST"), 0);
        assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
        assert_string_equal(s, "yes");
        pyproc_msg_free(m);
        m = NULL;
        assert_int_equal(pyproc_ind_func(p, i, "t.mpi.env", &m, "s", "OMPI_COMM_WORLD_RANK"), 0);
        assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
        assert_string_equal(s, "");
        pyproc_msg_free(m);
    }
    pyproc_pool_free(p);
}

/* The rank its agent runs worker ind on, as the worker's environment
 * (its agent's, without opts.env) says. */
static int rank_seen_by(pyproc_pool *p, int ind)
{
    pyproc_msg *m = NULL;
    const char *s;
    int rank;

    assert_int_equal(pyproc_ind_func(p, ind, "t.mpi.env", &m, "s", "OMPI_COMM_WORLD_RANK"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_true(*s);
    rank = atoi(s);
    pyproc_msg_free(m);
    return rank;
}

/* pyproc_stats() names the rank of each worker's agent: the one it runs
 * on, spread over both agents, also after a respawn and an add_proc. */
static void stats_say_the_rank(void **state)
{
    pyproc_pool *p = e2e_pool(4);
    pyproc_worker_stats st;
    bool seen[3] = {false};
    int ind;

    for (int i = 0; i < 4; i++) {
        assert_int_equal(pyproc_stats(p, i, &st), 0);
        assert_true(st.rank == 1 || st.rank == 2); /* tests/mpi.sh's agents */
        assert_int_equal(st.rank, rank_seen_by(p, i));
        seen[st.rank] = true;
    }
    assert_true(seen[1] && seen[2]);

    int old = e2e_pid_of(p, 1);
    assert_true(old > 0);
    kill(old, SIGKILL); /* one machine: the test can reach it */
    e2e_wait_respawned(p, 1, old);
    assert_int_equal(pyproc_stats(p, 1, &st), 0);
    assert_int_equal(st.restarts, 1);
    assert_int_equal(st.rank, rank_seen_by(p, 1));

    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    assert_true(st.rank == 1 || st.rank == 2);
    assert_int_equal(st.rank, rank_seen_by(p, ind));
    pyproc_pool_free(p);
}

/* Pools at once and one after another on one communicator. */
static void several_pools(void **state)
{
    pyproc_pool *a = e2e_pool(2), *b = e2e_pool(3), *none = NULL;

    /* The agents listen on MPI_COMM_WORLD only. */
    assert_int_equal(pyproc_pool_new_mpi(&none, "x", NULL, MPI_COMM_SELF), -EINVAL);
    /* A remote worker's resident size is not known here. */
    pyproc_opts rss = {.workers = 1, .max_rss_bytes = 1 << 30};
    assert_int_equal(pyproc_pool_new_mpi(&none, "x", &rss, MPI_COMM_WORLD), -EOPNOTSUPP);
    assert_null(none);

    assert_int_equal(e2e_int(a, "t.calls.ping"), 0);
    assert_int_equal(e2e_int(b, "t.calls.ping"), 0);
    assert_int_equal(pyproc_workers(b), 3);
    /* One more worker, with the history replayed to it. */
    int ind = -1;
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_add_proc(b, &ind), 0);
    assert_int_equal(ind, 3);
    assert_int_equal(pyproc_ind_func(b, 3, "t.basic.inits", &m, NULL), 0);
    pyproc_msg_free(m);
    pyproc_pool_free(a);
    assert_int_equal(e2e_int(b, "t.calls.ping"), 0);
    pyproc_pool_free(b);
    for (int i = 0; i < 3; i++) {
        a = e2e_pool(1);
        assert_int_equal(e2e_int(a, "t.calls.ping"), 0);
        pyproc_pool_free(a);
    }
}

/* Resident memory of process pid, in KiB. */
static long rss_kib(int pid)
{
    char path[64], line[256];
    long kib = -1;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (kib < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) != 1)
            kib = -1;
    fclose(f);
    return kib;
}

#define FLOOD_CALLS 50000
#define FLOOD_BYTES 1000

struct flood {
    pyproc_pool *p;
    pyproc_call **c;
    _Atomic int sent, failed;
};

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    char s[FLOOD_BYTES + 1];

    memset(s, 'x', FLOOD_BYTES);
    s[FLOOD_BYTES] = 0;
    for (int i = 0; i < FLOOD_CALLS; i++) {
        if (pyproc_ind_call(f->p, 0, &f->c[i], "t.calls.length", "s", s) < 0)
            f->failed++;
        f->sent++;
    }
    return NULL;
}

/* Calls sent faster than a remote worker runs them wait for room in the
 * host's request ring, as they would for a local worker: the agent does
 * not queue them without bound.  A cancel still reaches the worker whose
 * data path is full (stops travel beside the frames), and then every call
 * is answered. */
static void backpressure(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .ring_bytes = 64 << 10});
    struct flood f = {.p = p, .c = calloc(FLOOD_CALLS, sizeof *f.c)};
    pyproc_call *gate;
    pyproc_msg *m = NULL;
    pthread_t t;
    int64_t v = 0;

    assert_non_null(f.c);
    assert_int_equal(pyproc_ind_func(p, 0, "t.mpi.agent_pid", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    long rss0 = rss_kib((int)v);
    assert_int_equal(pyproc_ind_call(p, 0, &gate, "t.calls.block", "d", 60.0), 0);
    assert_int_equal(pthread_create(&t, NULL, flood_main, &f), 0);
    /* Until the caller stops getting on (or is done), then time for the
     * agent to take what was sent. */
    int last = -1;
    for (int i = 0; i < 200 && f.sent != last && f.sent < FLOOD_CALLS; i++) {
        last = f.sent;
        usleep(300000);
    }
    usleep(500000);
    long grew = rss_kib((int)v) - rss0;
    int sent = f.sent;
    printf("backpressure: %d calls sent while the worker was blocked, agent grew %ld KiB\n", sent,
           grew);
    assert_int_equal(pyproc_cancel(gate), 0);
    assert_int_equal(pyproc_wait(gate, &m, 10000), -ECANCELED);
    pyproc_msg_free(m);
    pyproc_call_free(gate);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* 50 MB of calls would be 50 MB queued; the bound is a ring's 64 KiB. */
    assert_true(grew < 8 * 1024);
    assert_true(sent < FLOOD_CALLS / 10);
    assert_int_equal(f.failed, 0);
    for (int i = 0; i < FLOOD_CALLS; i++) {
        m = NULL;
        assert_int_equal(pyproc_wait(f.c[i], &m, 60000), 0);
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        assert_int_equal(v, FLOOD_BYTES);
        pyproc_msg_free(m);
        pyproc_call_free(f.c[i]);
    }
    free(f.c);
    pyproc_pool_free(p);
}

/* CPU time of process pid so far, in ms (all its threads). */
static double cpu_ms(int pid)
{
    char path[64];
    unsigned long ut = 0, st = 0;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    /* Fields 14 and 15; the name in field 2 has no spaces here. */
    assert_int_equal(fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st),
                     2);
    fclose(f);
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* An idle pool costs its host and agents little CPU: nothing spins. */
static void idle_cpu(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    int agent[2];

    for (int i = 0; i < 2; i++) {
        pyproc_msg *m = NULL;
        int64_t v = 0;
        assert_int_equal(pyproc_ind_func(p, i, "t.mpi.agent_pid", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        agent[i] = (int)v;
        pyproc_msg_free(m);
    }
    assert_int_not_equal(agent[0], agent[1]); /* round robin over the agents */
    usleep(1500000);                          /* past the back-off */
    double h0 = cpu_ms(getpid()), a0 = cpu_ms(agent[0]), b0 = cpu_ms(agent[1]);
    sleep(4);
    double h = (cpu_ms(getpid()) - h0) / 4, a = (cpu_ms(agent[0]) - a0) / 4,
           b = (cpu_ms(agent[1]) - b0) / 4;
    printf("idle CPU, ms per second: host %.1f, agents %.1f and %.1f\n", h, a, b);
    /* The design's bound is 10 ms; a spinning end would use about 1000. */
    assert_true(h < 10 && a < 10 && b < 10);
    pyproc_pool_free(p);
}

static void host_dies(void)
{
    pyproc_pool *p = NULL;
    pyproc_call *c[2];

    assert_int_equal(pyproc_pool_new_mpi(&p, "dies",
                                         &(pyproc_opts){.workers = 2, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    for (int i = 0; i < 2; i++) {
        printf("worker %d\nagent %d\n", e2e_pid_of(p, i), (int)e2e_int(p, "t.mpi.agent_pid"));
        assert_int_equal(pyproc_ind_call(p, i, &c[i], "t.calls.block", "d", 60.0), 0);
    }
    fflush(stdout);
    usleep(200000);
    raise(SIGKILL);
}

static void agent_dies(void)
{
    pyproc_pool *p = NULL;
    pyproc_call *c;
    pyproc_msg *m = NULL;

    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    assert_int_equal(pyproc_pool_new_mpi(&p, "agentdies",
                                         &(pyproc_opts){.workers = 2, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    pyproc_msg *pm = NULL;
    int64_t agent = 0;
    assert_int_equal(pyproc_ind_func(p, 1, "t.mpi.agent_pid", &pm, NULL), 0);
    pyproc_msg_read(pm, "I", &agent);
    pyproc_msg_free(pm);
    assert_int_equal(pyproc_ind_call(p, 1, &c, "t.calls.block", "d", 60.0), 0);
    usleep(200000);
    printf("killing agent %lld\n", (long long)agent);
    fflush(stdout);
    kill((pid_t)agent, SIGKILL);
    int rc = pyproc_wait(c, &m, 20000);
    printf("call on the dead agent's worker: %d %s\n", rc, m ? pyproc_msg_error(m) : "");
    fflush(stdout);
}

static void finalize_expired(int sig)
{
    static const char m[] = "mpi_e2e: MPI_Finalize() did not return in 10 s\n";
    (void)sig;
    if (write(2, m, sizeof m - 1) < 0) {
        /* Exiting all the same. */
    }
    _exit(0);
}

/* Index ind's answer, waiting while it is started again (bounded). */
static int rank_after_respawn(pyproc_pool *p, int ind)
{
    pyproc_worker_stats st;
    double until = e2e_now() + 30;

    while (e2e_pid_of(p, ind) <= 0) {
        assert_true(e2e_now() < until);
        usleep(50000);
    }
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    return st.rank;
}

/* Under mpirun --enable-recovery: agent rank 2 is killed (sig SIGKILL) or
 * stalled (SIGSTOP, then SIGCONT once it was given up on) in the middle
 * of calls on every worker.  Its workers' calls fail naming the rank,
 * rank 1's complete, every index answers again from rank 1 (rank 2's late
 * words are ignored), and the pool ends; pyproc_mpi_shutdown() says that
 * a rank was lost. */
static void agent_lost(int sig)
{
    pyproc_pool *p = NULL;
    pyproc_call *c[4];
    pyproc_worker_stats st;
    int rank[4], pid[4];
    int64_t agent = 0;

    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    alarm(120);
    assert_int_equal(pyproc_pool_new_mpi(&p, "agentlost",
                                         &(pyproc_opts){.workers = 4, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pyproc_stats(p, i, &st), 0);
        rank[i] = st.rank;
        pid[i] = e2e_pid_of(p, i);
        if (rank[i] == 2 && !agent) {
            pyproc_msg *m = NULL;
            assert_int_equal(pyproc_ind_func(p, i, "t.mpi.agent_pid", &m, NULL), 0);
            assert_int_equal(pyproc_msg_read(m, "I", &agent), 0);
            pyproc_msg_free(m);
        }
    }
    assert_true(agent > 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pyproc_ind_call(p, i, &c[i], "t.calls.block", "d", 8.0), 0);
    usleep(300000);
    printf("%s agent %lld\n", sig == SIGKILL ? "killing" : "stopping", (long long)agent);
    fflush(stdout);
    assert_int_equal(kill((pid_t)agent, sig), 0);
    double t0 = e2e_now();
    for (int i = 0; i < 4; i++) {
        pyproc_msg *m = NULL;
        if (rank[i] != 2)
            continue;
        int rc = pyproc_wait(c[i], &m, 15000);
        const char *e = m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "";
        printf("call on rank 2's worker %d: %d after %.1f s: %s\n", i, rc, e2e_now() - t0, e);
        assert_int_equal(rc, PYPROC_EWORKER);
        assert_non_null(strstr(e, "agent rank 2 on node"));
        assert_true(e2e_now() - t0 < 10);
        pyproc_msg_free(m);
    }
    for (int i = 0; i < 4; i++) {
        pyproc_msg *m = NULL;
        double v = 0;
        if (rank[i] == 2)
            continue;
        assert_int_equal(pyproc_wait(c[i], &m, 20000), 0);
        assert_int_equal(pyproc_msg_read(m, "d", &v), 0);
        assert_true(v == 8.0);
        pyproc_msg_free(m);
    }
    if (sig == SIGSTOP) {
        /* Its beats and its workers' last words come too late: the host
         * ignores them and tells it to exit. */
        assert_int_equal(kill((pid_t)agent, SIGCONT), 0);
        for (int i = 0; i < 4; i++) {
            double until = e2e_now() + 10;
            while (rank[i] == 2 && kill(pid[i], 0) == 0 && e2e_now() < until)
                usleep(50000);
            assert_true(rank[i] != 2 || kill(pid[i], 0) < 0);
        }
        printf("the stalled agent stopped its workers\n");
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(rank_after_respawn(p, i), 1);
    printf("every index answers from rank 1\n");
    int ind = -1;
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    assert_int_equal(st.rank, 1);
    pyproc_pool_free(p);
    printf("pool freed\n");
    /* A new pool leaves the lost rank out: rank 1 runs it all. */
    p = NULL;
    assert_int_equal(pyproc_pool_new_mpi(&p, "afterloss",
                                         &(pyproc_opts){.workers = 2, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    for (int i = 0; i < 2; i++) {
        pyproc_msg *m = NULL;
        assert_int_equal(pyproc_stats(p, i, &st), 0);
        assert_int_equal(st.rank, 1);
        assert_int_equal(pyproc_ind_call(p, i, &c[i], "t.calls.block", "d", 0.1), 0);
        assert_int_equal(pyproc_wait(c[i], &m, 20000), 0);
        pyproc_msg_free(m);
    }
    pyproc_pool_free(p);
    printf("a new pool ran on rank 1 alone\n");
    int err = pyproc_mpi_shutdown(MPI_COMM_WORLD);
    printf("pyproc_mpi_shutdown: %d\n", err);
    assert_int_equal(err, -EHOSTDOWN);
    printf("agent-lost: ok\n");
    fflush(stdout);
}

/* Under mpirun --enable-recovery: agent rank 2 is killed (sig SIGKILL)
 * and the pool freed at once, before anything noticed the loss: the free
 * owes no wait longer than the loss bound.  Or it is stalled (SIGSTOP)
 * until given up on, the pool freed, and resumed only after
 * pyproc_mpi_shutdown(): that must still tell it to exit, or mpirun
 * never ends.  pyproc_mpi_shutdown() says that a rank was lost. */
static void free_after_loss(int sig)
{
    pyproc_pool *p = NULL;
    pyproc_worker_stats st;
    int64_t agent = 0;

    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    alarm(60);
    assert_int_equal(pyproc_pool_new_mpi(&p, "freeafterloss",
                                         &(pyproc_opts){.workers = 2, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    for (int i = 0; i < 2 && !agent; i++) {
        assert_int_equal(pyproc_stats(p, i, &st), 0);
        if (st.rank == 2) {
            pyproc_msg *m = NULL;
            assert_int_equal(pyproc_ind_func(p, i, "t.mpi.agent_pid", &m, NULL), 0);
            assert_int_equal(pyproc_msg_read(m, "I", &agent), 0);
            pyproc_msg_free(m);
        }
    }
    assert_true(agent > 0);
    assert_int_equal(kill((pid_t)agent, sig), 0);
    if (sig == SIGSTOP)
        for (int i = 0; i < 2; i++)
            assert_int_equal(rank_after_respawn(p, i), 1); /* given up on */
    double t0 = e2e_now();
    pyproc_pool_free(p);
    printf("pool freed after %.1f s\n", e2e_now() - t0);
    assert_int_equal(pyproc_mpi_shutdown(MPI_COMM_WORLD), -EHOSTDOWN);
    if (sig == SIGSTOP)
        assert_int_equal(kill((pid_t)agent, SIGCONT), 0);
    printf("agent-lost: ok\n");
    fflush(stdout);
}

/* The other pyproc-agent started beside agent rank 1 (same parent), or 0. */
static pid_t sibling_agent(pid_t agent1)
{
    char path[64], comm[32];
    pid_t found = 0;
    int ppid1 = -1;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)agent1);
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%*d (%31[^)]) %*c %d", comm, &ppid1) != 2)
        ppid1 = -1;
    if (f)
        fclose(f);
    for (pid_t pid = 2; pid < 4194304 && !found && ppid1 > 0; pid++) {
        int ppid = -1;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        if (pid == agent1 || !(f = fopen(path, "r")))
            continue;
        if (fscanf(f, "%*d (%31[^)]) %*c %d", comm, &ppid) == 2 && ppid == ppid1 &&
            strcmp(comm, "pyproc-agent") == 0)
            found = pid;
        fclose(f);
    }
    return found;
}

/* Under mpirun --enable-recovery: agent rank 2, running none of the
 * pool's workers, is killed, and asked to start one with a start timeout
 * shorter than the loss bound.  The start fails; the agent owes the
 * answer all the same and is given up on, so a later start goes to
 * rank 1. */
static void spawn_after_loss(void)
{
    pyproc_pool *p = NULL;
    pyproc_worker_stats st;
    int ind = -1;

    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    alarm(90);
    assert_int_equal(pyproc_pool_new_mpi(&p, "spawnafterloss",
                                         &(pyproc_opts){.workers = 1,
                                                        .start_timeout_ms = 1000,
                                                        .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_int_equal(st.rank, 1);
    pid_t agent = sibling_agent((pid_t)e2e_int(p, "t.mpi.agent_pid"));
    assert_true(agent > 0);
    assert_int_equal(kill(agent, SIGKILL), 0);
    int rc = pyproc_add_proc(p, &ind); /* to rank 2: it runs none */
    printf("a start on the dead agent: %d\n", rc);
    assert_true(rc < 0);
    sleep(5); /* past the loss bound */
    ind = -1;
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    assert_int_equal(st.rank, 1);
    printf("a later start went to rank 1\n");
    pyproc_pool_free(p);
    assert_int_equal(pyproc_mpi_shutdown(MPI_COMM_WORLD), -EHOSTDOWN);
    printf("agent-lost: ok\n");
    fflush(stdout);
}

/* Under mpirun --enable-recovery with one agent, killed in the middle of
 * calls: they fail naming it; with no agent left, a later call fails
 * rather than waits, and the pool still ends. */
static void every_agent_lost(void)
{
    pyproc_pool *p = NULL;
    pyproc_call *c[2];
    pyproc_msg *m = NULL;
    int64_t agent = 0;

    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    alarm(120);
    assert_int_equal(pyproc_pool_new_mpi(&p, "alllost",
                                         &(pyproc_opts){.workers = 2, .python_path = "tests/py"},
                                         MPI_COMM_WORLD),
                     0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    agent = e2e_int(p, "t.mpi.agent_pid");
    for (int i = 0; i < 2; i++)
        assert_int_equal(pyproc_ind_call(p, i, &c[i], "t.calls.block", "d", 30.0), 0);
    usleep(300000);
    assert_int_equal(kill((pid_t)agent, SIGKILL), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pyproc_wait(c[i], &m, 15000), PYPROC_EWORKER);
        assert_non_null(strstr(pyproc_msg_error(m), "agent rank 1 on node"));
        pyproc_msg_free(m);
        m = NULL;
    }
    double t0 = e2e_now();
    int rc = pyproc_func(p, "t.basic.pid", &m, NULL);
    printf("a call with no agent left: %d after %.1f s: %s\n", rc, e2e_now() - t0,
           m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
    assert_true(rc < 0);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
    assert_int_equal(pyproc_mpi_shutdown(MPI_COMM_WORLD), -EHOSTDOWN);
    printf("agent-lost: ok\n");
    fflush(stdout);
}

/* ---- a hostile agent: what it sends the host is checked there ---- */

static void fake_send(int tag, struct pm_batch *b)
{
    send_raw(0, tag, b->buf, b->len);
    b->len = 0;
}

/* Junk of every shape, then what a worker says when it starts. */
static void fake_start(int tag, uint32_t wid)
{
    struct pm_batch b = {0};
    uint8_t junk[64] = {9, 9, 9};
    struct pm_hdr lie = {.wid = wid, .kind = PM_FRAME, .type = SHM_FRAME_RESULT, .len = 4096};
    uint8_t nil = 0xc0;

    pm_batch_add(&b, wid, PM_STARTED, 0, (uint64_t)getpid(), NULL, 0);
    fake_send(tag, &b);
    send_raw(0, tag, junk, 5);
    memcpy(junk, &lie, sizeof lie);
    send_raw(0, tag, junk, sizeof junk);
    pm_batch_add(&b, wid + 100, PM_FRAME, SHM_FRAME_RESULT, 1, &nil, 1); /* no such worker */
    pm_batch_add(&b, wid, PM_OUTPUT, 9, 0, "no such stream", 14);
    pm_batch_add(&b, wid + 100, PM_DIED, 0, 0, "\x1b[2Jnobody", 10);
    pm_batch_add(&b, wid, PM_HELLO, 0, 7, "late", 4);
    pm_batch_add(&b, wid, PM_CREDIT, 0, UINT64_MAX, NULL, 0); /* for more than was sent */
    pm_batch_add(&b, wid, 999, 0, 0, junk, 8);
    pm_batch_add(&b, wid, PM_FRAME, SHM_FRAME_READY, 0, &nil, 1);
    fake_send(tag, &b);
    pm_batch_free(&b);
}

/* The first call is answered with a payload that is no msgpack value,
 * later ones with nil; a kill or shutdown is answered with a death. */
static void fake_record(int tag, const struct pm_hdr *h, int *calls, bool *freed)
{
    struct pm_batch b = {0};
    uint8_t bad[3] = {0xc1, 0xc1, 0xc1}, nil = 0xc0;

    if (h->kind == PM_SPAWN)
        fake_start(tag, h->wid);
    else if (h->kind == PM_FRAME && h->type == SHM_FRAME_CALL) {
        bool first = (*calls)++ == 0;
        pm_batch_add(&b, h->wid, PM_FRAME, SHM_FRAME_RESULT, h->id, first ? bad : &nil,
                     first ? 3 : 1);
    } else if (h->kind == PM_KILL || h->kind == PM_SHUTDOWN)
        pm_batch_add(&b, h->wid, PM_DIED, 0, 0, "worker 0 exited with status 0", 29);
    else if (h->kind == PM_POOL_FREE) {
        pm_batch_add(&b, 0, PM_POOL_FREED, 0, 0, NULL, 0);
        *freed = true;
    }
    if (b.len)
        fake_send(tag, &b);
    pm_batch_free(&b);
}

static void fake_agent(void)
{
    struct pm_batch in = {0};
    bool done = false, freed = false;
    int calls = 0, tag = -1, from, got;

    while (!done) {
        if (pm_recv(MPI_COMM_WORLD, 0, MPI_ANY_TAG, &in, &from, &got) == 0) {
            usleep(100);
            continue;
        }
        struct pm_hdr h;
        const uint8_t *pl;
        size_t off = 0;
        while (pm_next(in.buf, in.len, &off, &h, &pl) == 1) {
            if (got == PM_TAG_CTL && h.kind == PM_POOL_NEW) {
                struct pm_batch b = {0};
                tag = (int)h.id;
                pm_batch_add(&b, 0, PM_HELLO, 0, 1, "fake", 4);
                fake_send(tag, &b);
                pm_batch_free(&b);
            } else if (got == PM_TAG_CTL && h.kind == PM_EXIT) {
                done = true;
            } else if (got == tag && !freed) {
                fake_record(tag, &h, &calls, &freed);
            }
        }
    }
    pm_batch_free(&in);
}

/* The host against the hostile agent: it lives on, the worker that
 * answered with garbage is stopped and replaced, the next call works. */
static void hostile_host(void)
{
    pyproc_pool *p = NULL;
    pyproc_msg *m = NULL;
    int rc;

    assert_int_equal(pyproc_pool_new_mpi(&p, "hostile", &(pyproc_opts){.workers = 1},
                                         MPI_COMM_WORLD),
                     0);
    rc = pyproc_func(p, "x.y", &m, NULL);
    printf("garbage answer: %d %s\n", rc, m ? pyproc_msg_error(m) : "");
    assert_true(rc < 0);
    pyproc_msg_free(m);
    for (int i = 0; i < 500; i++) {
        m = NULL;
        rc = pyproc_func(p, "x.y", &m, NULL);
        pyproc_msg_free(m);
        if (rc == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(rc, 0);
    pyproc_worker_stats st;
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_int_equal(st.restarts, 1);
    pyproc_pool_free(p);
    printf("hostile: ok\n");
}

/* MPI at less than MPI_THREAD_MULTIPLE: refused with the documented
 * error; shutdown still works. */
static void refusals(void)
{
    pyproc_pool *p = NULL;
    int level = 0;

    MPI_Query_thread(&level);
    assert_true(level < MPI_THREAD_MULTIPLE);
    assert_int_equal(pyproc_pool_new_mpi(&p, "x", NULL, MPI_COMM_WORLD), -EPROTONOSUPPORT);
    assert_null(p);
    printf("refusals: ok\n");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sync_calls),
        cmocka_unit_test(generator_flow),
        cmocka_unit_test(broadcast_and_callbacks),
        cmocka_unit_test(cancel_and_timeout),
        cmocka_unit_test(remote_worker_killed),
        cmocka_unit_test(worker_kills_itself),
        cmocka_unit_test(several_pools),
        cmocka_unit_test(output_and_buffers),
        cmocka_unit_test(slow_output),
        cmocka_unit_test(garbage_to_agents),
        cmocka_unit_test(environment),
        cmocka_unit_test(stats_say_the_rank),
        cmocka_unit_test(idle_cpu),
        cmocka_unit_test(backpressure),
    };
    int failed;

    if (argc > 1 && strcmp(argv[1], "host-dies") == 0)
        host_dies();
    if (argc > 1 && strcmp(argv[1], "netns") == 0) {
        /* Agents in other network and pid namespaces (tests/mpi_netns.sh):
         * what needs no pid or /proc of theirs. */
        const struct CMUnitTest apart[] = {
            cmocka_unit_test(sync_calls),
            cmocka_unit_test(generator_flow),
            cmocka_unit_test(broadcast_and_callbacks),
            cmocka_unit_test(cancel_and_timeout),
            cmocka_unit_test(worker_kills_itself),
            cmocka_unit_test(several_pools),
            cmocka_unit_test(output_and_buffers),
            cmocka_unit_test(slow_output),
            cmocka_unit_test(environment),
        };
        return cmocka_run_group_tests(apart, NULL, NULL) ? 1 : 0;
    }
    if (argc > 1 && strcmp(argv[1], "refusals") == 0) {
        refusals();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "fake-agent") == 0) {
        fake_agent();
        MPI_Finalize();
        _exit(0); /* an agent: no pyproc_mpi_shutdown() at exit */
    }
    if (argc > 1 && strcmp(argv[1], "hostile") == 0) {
        hostile_host();
        return 0;
    }
    /* The tests of lost agents give up on one after 3 s, not the default 10. */
    if (argc > 1 &&
        (strcmp(argv[1], "agent-lost") == 0 || strcmp(argv[1], "agent-stalled") == 0 ||
         strcmp(argv[1], "every-agent-lost") == 0 || strcmp(argv[1], "free-after-loss") == 0 ||
         strcmp(argv[1], "free-after-stall") == 0 || strcmp(argv[1], "spawn-after-loss") == 0))
        setenv("PYPROC_MPI_LOST_MS", "3000", 1);
    if (argc > 1 && (strcmp(argv[1], "agent-lost") == 0 || strcmp(argv[1], "agent-stalled") == 0)) {
        agent_lost(strcmp(argv[1], "agent-lost") == 0 ? SIGKILL : SIGSTOP);
        /* Open MPI 4.1's MPI_Finalize() may wait for ever on the lost rank
         * (pyproc-mpi(3)): bounded as the agents bound theirs. */
        signal(SIGALRM, finalize_expired);
        alarm(10);
        MPI_Finalize();
        _exit(0); /* pyproc_mpi_shutdown() was called */
    }
    if (argc > 1 &&
        (strcmp(argv[1], "every-agent-lost") == 0 || strcmp(argv[1], "free-after-loss") == 0 ||
         strcmp(argv[1], "free-after-stall") == 0 || strcmp(argv[1], "spawn-after-loss") == 0)) {
        if (strcmp(argv[1], "every-agent-lost") == 0)
            every_agent_lost();
        else if (strcmp(argv[1], "spawn-after-loss") == 0)
            spawn_after_loss();
        else
            free_after_loss(strcmp(argv[1], "free-after-loss") == 0 ? SIGKILL : SIGSTOP);
        /* Open MPI 4.1's MPI_Finalize() may wait for ever on the lost rank
         * (pyproc-mpi(3)): bounded as the agents bound theirs. */
        signal(SIGALRM, finalize_expired);
        alarm(10);
        MPI_Finalize();
        _exit(0); /* pyproc_mpi_shutdown() was called */
    }
    if (argc > 1 && strcmp(argv[1], "agent-dies") == 0) {
        agent_dies();
        return 0;
    }
    if (getenv("PYPROC_E2E_ONLY")) /* one test by name: mpirun -x PYPROC_E2E_ONLY */
        cmocka_set_test_filter(getenv("PYPROC_E2E_ONLY"));
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed ? 1 : 0; /* MPI ends at exit (e2e.h) */
}
