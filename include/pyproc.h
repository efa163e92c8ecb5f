/*
 * pyproc: run Python functions in pools of worker processes from C.
 *
 * A pool is a set of fresh `pyproc-worker` processes (exec'd, never forked),
 * each embedding CPython and running many calls at once on an asyncio loop.
 * The host loads Python code into every worker with pyproc_add_sub() and
 * calls functions by reference ("sub.module.function"); requests and answers
 * travel through shared-memory rings.
 *
 * Return values: 0 (or a count) on success, a negative errno value on
 * failure.  The library never leaves its answer in errno.  Outcomes of its
 * own are named below (PYPROC_EREMOTE, PYPROC_EWORKER); pyproc_strerror()
 * describes any return value.
 *
 * Ownership: every pyproc_msg handed out (*ret of a call, of
 * pyproc_msg_new() or pyproc_msg_at()) belongs to the caller, who frees it
 * with pyproc_msg_free().  Handles (pyproc_call) are freed with
 * pyproc_call_free(), which leaves the message returned by pyproc_wait()
 * alone.  Every free function accepts NULL.
 *
 * Threads: every function is safe to call from any thread, on the same pool
 * or call at once, unless its comment says otherwise.  Several threads may
 * share one pool; each gets its own answers.
 *
 * Fork: a pool belongs to the process that created it.  In a forked child
 * every function that takes the pool returns -ECHILD; the child must not
 * free it either (pyproc_pool_free() does nothing there).
 *
 * Freeing a pool with calls in flight: those calls end with -ECANCELED;
 * their handles stay valid until pyproc_call_free().
 *
 * Living inside a host application: the library installs no signal
 * handler, sends no signal to its own process, and blocks every signal in
 * the threads it starts (a pool's service, callback, respawn, recycle and
 * retire threads), so the application's handlers always run on the
 * application's threads.
 * It watches its workers through pidfds (Linux 5.3 or later), never
 * through SIGCHLD: the application may install its own SIGCHLD handler,
 * set SIGCHLD to SIG_IGN, or reap children with waitpid(-1) on any thread
 * (workers are its children, so its handler runs when one exits).
 * When SIGCHLD is ignored, or the application reaps a worker before the
 * pool does, the death is still noticed at once, but its message cannot
 * say how the worker ended.  What the library needs besides the worker
 * binary: /dev/null, pidfds, memfd_create(), eventfds and epoll.  It
 * creates nothing in /dev/shm or elsewhere on the file system, and all its
 * fds are close-on-exec, so processes the application starts inherit none
 * of them.  Workers start with every signal unblocked and at its default
 * disposition, whatever the application's are, and inherit fds 0 to 7
 * only (/dev/null, their stdout and stderr pipes, their segment, two
 * eventfds, a pipe that tells them the host died, and a socket that
 * brings them the fds of shared buffers): the application's other fds,
 * close-on-exec or not, stay out.
 */
#ifndef PYPROC_H
#define PYPROC_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PYPROC_BUILDING) && defined(__GNUC__)
#define PYPROC_EXPORT __attribute__((visibility("default")))
#else
#define PYPROC_EXPORT
#endif

#define PYPROC_VERSION_MAJOR 0
#define PYPROC_VERSION_MINOR 1
#define PYPROC_VERSION_PATCH 0

/* Python raised: the message holds type, message and traceback. */
#define PYPROC_EREMOTE (-EREMOTEIO)
/* The worker died during the call: the message names it and how it died. */
#define PYPROC_EWORKER (-EOWNERDEAD)

typedef struct pyproc_pool pyproc_pool;
typedef struct pyproc_call pyproc_call;
typedef struct pyproc_msg pyproc_msg;
typedef struct pyproc_buf pyproc_buf;

/*
 * The host's answer to `await pyproc.ret(payload)` (also
 * `hub.proc.worker.ret`) in worker `ind`.  `payload` is borrowed for the
 * duration of the call.  Set *reply to a message (pyproc_msg_new()) whose
 * ownership passes to the library, or leave it NULL for None; return 0, or
 * a negative errno to raise pyproc.CallbackError in the worker (with
 * *reply's error text or pyproc_strerror() as its message).
 *
 * Callbacks run one at a time on the pool's callback thread, never on a
 * thread of the application, so they are answered while the application
 * is blocked in a call.  A callback may make calls on the same pool, but
 * not wait for one that itself needs a callback (that one would wait for
 * this callback to return).
 */
typedef int (*pyproc_callback_fn)(pyproc_pool *pool, int ind, pyproc_msg *payload,
                                  pyproc_msg **reply, void *data);

/*
 * Completion of an asynchronous call, run by pyproc_dispatch(): result is
 * what pyproc_func() would return; ret (the value or the error message,
 * may be NULL) now belongs to the callee.
 */
typedef void (*pyproc_done_fn)(pyproc_pool *pool, int result, pyproc_msg *ret, void *data);

/*
 * A stream's items, run by pyproc_dispatch() (see pyproc_stream_on_item()):
 * result 1 with an item, 0 at the end (item NULL), or a negative errno with
 * the error message (may be NULL).  The item or message belongs to the
 * callee.
 */
typedef void (*pyproc_item_fn)(pyproc_pool *pool, int result, pyproc_msg *item, void *data);

/*
 * Where a worker's output goes when the pool's `output` option is set:
 * one call per line of its stdout (fd 1) or stderr (fd 2), on the pool's
 * service thread.  `line` holds len bytes without the newline (a line cut
 * at 4 KiB comes in pieces; a last line without one comes at the worker's
 * end) and is NUL-terminated; it is valid during the call.  Lines arrive
 * in order for each fd of a worker, but not in step with call results: a
 * call may return before the lines it printed are delivered, and a
 * worker's last lines may come from inside pyproc_pool_free().  The
 * function must return quickly and must not call into the pool (calls,
 * pyproc_add_proc(), pyproc_pool_free()): the service thread is what
 * those wait for.
 */
typedef void (*pyproc_output_fn)(pyproc_pool *pool, int ind, int fd, const char *line, size_t len,
                                 void *data);

/*
 * Pool options.  Zero-initialise and set what you need; every zero field
 * takes its default.
 */
typedef struct pyproc_opts {
    /* Number of workers.  Default: the number of online CPUs. */
    int workers;
    /* Worker binary.  Default: $PYPROC_WORKER, else the pyproc-worker
     * installed beside this library (found relative to the library). */
    const char *worker_path;
    /* Extra sys.path entries for the workers, ':'-separated, put in front
     * of the interpreter's own.  Relative entries are made absolute against
     * the host's working directory. */
    const char *python_path;
    /* Bytes of each of a worker's two rings; rounded up to a power of two.
     * Default 2 MiB. */
    size_t ring_bytes;
    /* Largest encoded message in either direction.  Default 1 GiB. */
    size_t max_msg_bytes;
    /* How long pyproc_pool_new() waits for every worker to be ready.
     * Default 10000 ms. */
    int start_timeout_ms;
    /* How long a waiting side spins before it sleeps, in microseconds.
     * Default 50; -1 never spins.  Within it, a side spins only where
     * that pays (see README, "How it works"): pyproc_func_async() may
     * spin this long for the answer of the pool's only call in flight. */
    int spin_us;
    /* End every call that runs longer than this, in milliseconds, with
     * -ETIMEDOUT (0: no limit).  A coroutine or generator is cancelled in
     * the worker; a plain function is interrupted with pyproc.CallTimeout
     * where Python allows (Python code, sleeps); one that still has not
     * returned a second later (stuck in C) has its worker killed, and the
     * worker is respawned. */
    int call_timeout_ms;
    /* The callback server (see pyproc_callback_fn); NULL: workers that
     * call home get pyproc.CallbackError. */
    pyproc_callback_fn callback;
    void *callback_data;

    /* ---- least privilege ---- */

    /* The workers' whole environment: "NAME=value" strings, ended by NULL
     * (copied by pyproc_pool_new()).  Default: the host's environment as
     * it is when each worker starts. */
    const char *const *env;
    /* The workers' working directory (copied).  Default: the host's.
     * python_path entries and the worker path are made absolute against
     * the host's directory before the workers move; a directory that does
     * not exist fails pyproc_pool_new() with -ENOENT. */
    const char *cwd;
    /* Cap on each worker's address space (RLIMIT_AS), in bytes, so that a
     * runaway allocation fails in its own worker: Python raises
     * MemoryError, which ends the call with PYPROC_EREMOTE, and the worker
     * goes on; a worker that dies of it ends its calls with PYPROC_EWORKER
     * and is respawned.  The cap counts address space, not memory used:
     * a worker reserves some 40 MiB to start and 8 MiB more for each
     * thread its code starts (a stack), so leave room; below about 32 MiB
     * workers cannot start and pyproc_pool_new() fails.  Default 0: the
     * host's limit. */
    uint64_t mem_limit_bytes;
    /* Most fds each worker may have open (RLIMIT_NOFILE); at least 32.
     * Default 0: the host's limit.  Both limits are set soft and hard
     * alike, so code in the worker cannot lift them; one above the host's
     * hard limit makes workers fail to start. */
    int max_fds;
    /* Nonzero: set PR_SET_NO_NEW_PRIVS in each worker before Python
     * starts, so neither it nor any program it runs can gain privileges
     * (set-user-ID binaries, file capabilities). */
    int no_new_privs;

    /* ---- debugging ---- */

    /* Each worker's stdout and stderr go here line by line (see
     * pyproc_output_fn).  Default: the host's stderr, each line prefixed
     * with "[pool/index] ".  A worker's stdin is /dev/null either way, and
     * its Python writes stdout and stderr unbuffered, so print() output
     * arrives as it is printed. */
    pyproc_output_fn output;
    void *output_data;

    /* ---- Python environment ---- */

    /* A virtual environment (made with `python3 -m venv`) for the
     * workers to run in, as its own bin/python3 would: its site-packages
     * on sys.path, and the system's only if its pyvenv.cfg says
     * include-system-site-packages = true.  A relative path is taken from
     * the host's working directory.  A directory without pyvenv.cfg fails
     * pyproc_pool_new() with -ENOENT; a venv made for another Python
     * version than the workers' makes them refuse to start, saying so on
     * their stderr, and pyproc_pool_new() fails.  Default NULL: the
     * system's Python environment. */
    const char *venv;

    /* ---- maps ---- */

    /* Items a map (pyproc_map()) may have pushed and not yet read; a push
     * past it returns -EAGAIN.  It bounds the memory of a map on both
     * sides, whatever the input's length.  Default 4096; at most 2^24.
     * A window smaller than 4 items per worker keeps workers waiting. */
    int map_window;

    /* ---- running for months ---- */

    /* Recycle a worker once it has been sent this many calls (each chunk
     * of a map counts as one; the pool's own requests do not).  0: never.
     * Recycling drains the worker (no new call is routed to it; calls
     * pinned to its index wait for its replacement), starts a new one at
     * the same index, replays the pool's history to it (add_sub,
     * add_native, set_attr), puts it in the slot, and stops the old one
     * once the calls and streams it has have ended.  No call fails for
     * it.  One index is recycled at a time: a worker that reaches a limit
     * while another is being replaced waits for its turn (taking calls
     * meanwhile only when every other worker is spent too).  A recycle
     * that fails (the code on disk no longer imports) leaves the worker
     * serving, says why on stderr, and is tried again 10 s later. */
    uint64_t max_calls_per_worker;
    /* Recycle a worker whose resident memory (RSS) exceeds this many
     * bytes, looked at every 100 ms, as max_calls_per_worker does.  0:
     * never.  Unlike mem_limit_bytes nothing fails: the worker is
     * replaced between calls, so a slow leak costs nothing but restarts. */
    uint64_t max_rss_bytes;

    /* ---- start-up ---- */

    /* How workers start: PYPROC_START_TEMPLATE or PYPROC_START_EXEC.
     * Default (0): $PYPROC_START ("template" or "exec") if set, else
     * PYPROC_START_TEMPLATE. */
    int start;
} pyproc_opts;

/*
 * Values of pyproc_opts.start.
 *
 * PYPROC_START_EXEC: each worker is a fresh pyproc-worker process that
 * starts Python and imports asyncio itself (some 50-100 ms of CPU each).
 *
 * PYPROC_START_TEMPLATE (the default): the pool execs one pyproc-worker
 * as a template, which starts Python and imports the worker's own Python
 * side once, and then forks each worker (at start, pyproc_add_proc() and
 * every respawn) while it has no thread but its main one.  A forked
 * worker is a child of the host like an exec'd one, with its own segment
 * and fds (exactly those an exec'd worker gets), the pool's limits,
 * no_new_privs, environment and working directory, and it dies with the
 * host; Python's after-fork hooks run in it.  It is ready in a few
 * milliseconds and shares the interpreter's memory with its siblings
 * copy-on-write.  One difference: its environment is the one the
 * template started with (the host's, or opts.env), not the host's as it
 * is at each fork.  No user code runs in the template unless a sub is
 * added with PYPROC_SUB_PRELOAD.  The template is supervised: one that
 * dies is restarted, and meanwhile workers are exec'd; where it cannot
 * work (a C library other than glibc's), every worker is exec'd.
 * It is the default because, measured on the same machine in the same
 * runs (pyproc-bench --only startup,idle-pool, medians of five runs on a
 * shared 2-CPU machine), a pool of 4 is ready and answering in 69 ms
 * rather than 130 ms (a pool of 1: 58 ms), pyproc_add_proc() and a
 * respawn take 6-7 ms rather than 50-60 ms, and a worker holds 2.8 MiB of
 * private memory rather than 10 MiB; and the whole test suite passes
 * either way (make check runs the end-to-end tests in both).
 */
enum {
    PYPROC_START_DEFAULT = 0,
    PYPROC_START_TEMPLATE = 1,
    PYPROC_START_EXEC = 2,
};

/* Flags of pyproc_add_sub(). */
#define PYPROC_SUB_INIT 0x1u /* run each module's __init__(hub) on load */
/*
 * Import the sub's modules in the pool's template too (see
 * PYPROC_START_TEMPLATE), so that workers forked afterwards find them
 * imported and share their memory copy-on-write.  Only for code that
 * starts no thread and opens no fd at import: the template forks only
 * while it has one thread (a preload that starts one makes the pool exec
 * its workers from then on), and a forked worker keeps none of the
 * template's fds: a file or socket opened at import is closed in it
 * (its Python object there fails with EBADF, or reaches whatever the
 * worker opened later under that number).  Fds opened by after-fork
 * hooks (os.register_at_fork) are the worker's own and stay open.  Its
 * __init__ (PYPROC_SUB_INIT) runs in the workers only.  Without a template it does nothing more than a plain add_sub.
 */
#define PYPROC_SUB_PRELOAD 0x2u

/* ---- pools ---- */

/*
 * Start a pool of workers named `name` (NULL opts: all defaults) and wait
 * until every worker is ready.  A worker that cannot be started, or dies or
 * stays silent before it is ready, fails the whole call; nothing is left
 * behind.  Returns 0 and the pool through *ret, or a negative errno.
 */
PYPROC_EXPORT int pyproc_pool_new(pyproc_pool **ret, const char *name, const pyproc_opts *opts);

/*
 * Stop every worker (asked first, killed after a bounded wait), reap them,
 * and release everything.  Calls still in flight end with -ECANCELED.
 */
PYPROC_EXPORT void pyproc_pool_free(pyproc_pool *pool);

/*
 * Stop taking work and wait for what runs: from now on every call, stream,
 * map, push, broadcast, add_sub, add_native and add_proc on the pool
 * returns -ESHUTDOWN, while the calls in flight go on; wait up to
 * timeout_ms (-1: as long as it takes) for them to end.  Returns how many
 * requests were still running then (0: all done), or a negative errno.
 * pyproc_pool_free() after it cancels only those.  A pool does not come
 * back from draining.  A map's items pushed before the drain but not
 * yet sent (still being packed into a chunk, or queued for a worker's
 * room) are not counted: their map's owner sends them as it reads on,
 * which it may do after this returns, and pyproc_pool_free() cancels
 * them with the rest.
 */
PYPROC_EXPORT int pyproc_drain(pyproc_pool *pool, int timeout_ms);

/*
 * Replace every worker, one index at a time, so that Python code changed
 * on disk since it was loaded (pyproc_add_sub()) is imported afresh (a
 * pool with a template starts a new one first, so that preloaded subs
 * are imported afresh too; workers are exec'd while it starts): for
 * each index, no new call is routed to its worker (calls pinned to the
 * index wait), a new worker is started and the pool's history (add_sub,
 * add_native, set_attr) replayed to it, and it takes the slot; the old
 * worker finishes the calls and streams it has, then stops, in the
 * background.  At most one index is out of service at any moment, and no
 * call fails because of the reload.  Returns 0 once every index holds a
 * new worker.  A new worker that fails (its code raises on import) stops
 * the reload there: that index and the ones after it keep their old
 * workers, which go on serving (those before it run the new code), and
 * the call returns PYPROC_EREMOTE (or PYPROC_EWORKER, -ETIMEDOUT when the
 * new worker could not start) with, for pyproc_reload_err(), the message
 * in *err when err is not NULL (the Python error, traceback included;
 * free it with pyproc_msg_free()).  -ESHUTDOWN once the pool drains.
 * Python reads a module's cached bytecode when the source's size and
 * modification time (in seconds) match the cache's: a file rewritten
 * within the same second at the same size may not be seen.
 */
PYPROC_EXPORT int pyproc_reload(pyproc_pool *pool);
PYPROC_EXPORT int pyproc_reload_err(pyproc_pool *pool, pyproc_msg **err);

/*
 * Grow the pool to n workers (as pyproc_add_proc() does, one at a time)
 * or shrink it by taking away the highest indices: no new call goes to
 * them, and calls to a removed index return -EINVAL from then on, while
 * the calls and streams already running there finish normally; each
 * removed worker stops once its last one has ended, in the background.
 * Returns 0 once the pool has n indices, or a negative errno (-EINVAL
 * for n < 1; a worker that failed to start while growing: those started
 * before it stay).
 */
PYPROC_EXPORT int pyproc_resize(pyproc_pool *pool, int n);

/* Number of workers, or a negative errno. */
PYPROC_EXPORT int pyproc_workers(pyproc_pool *pool);

/* The pool's name (valid while the pool lives). */
PYPROC_EXPORT const char *pyproc_pool_name(pyproc_pool *pool);

/* What pyproc_stats() reports about one worker index. */
typedef struct pyproc_worker_stats {
    /* Calls and streams started at this index, over every worker that has
     * held it (respawns included), and how many of them ended with an
     * error (any negative result: raised, timed out, cancelled, worker
     * died).  Each chunk of a map's items counts as one call. */
    uint64_t calls;
    uint64_t errors;
    /* Requests the current worker has not answered yet. */
    uint64_t in_flight;
    /* Times a dead worker at this index was replaced by a new one. */
    uint64_t restarts;
    /* The current worker's process id; -1 while none runs (it died and
     * its replacement is not up yet, or the slot was given up). */
    int pid;
    /* Times a live worker at this index was replaced on purpose: recycled
     * at a limit (max_calls_per_worker, max_rss_bytes) or reloaded
     * (pyproc_reload()).  Crashes count in restarts only.  (Added in 0.2,
     * after pid: this struct, like pyproc_opts, only grows at its end,
     * and a program built against the 0.1 header must be rebuilt, since
     * pyproc_stats() writes the whole of it.) */
    uint64_t recycles;
    /* The MPI rank of the agent that runs the current worker, for a pool
     * made by pyproc_pool_new_mpi() (pyproc-mpi.h); -1 for a local pool's
     * workers, and -1 while none runs, as pid.  (Added in 0.2, after
     * recycles.) */
    int rank;
} pyproc_worker_stats;

/*
 * Counters of worker `ind`, through *ret.  The counters are read without
 * stopping the pool, each one on its own: calls keep running meanwhile.
 * Returns 0, or -EINVAL for a bad index.
 */
PYPROC_EXPORT int pyproc_stats(pyproc_pool *pool, int ind, pyproc_worker_stats *ret);

/*
 * Import the package or module `pypath` in every worker and mount it on the
 * hub as `name`; with PYPROC_SUB_INIT each module's __init__(hub) runs.
 * Returns 0, or PYPROC_EREMOTE with the first failing worker's error in
 * *err when err is not NULL (free it with pyproc_msg_free()).
 *
 * Every worker gets each successful add_sub, add_native and set_attr
 * exactly once, in order, however workers join: one that is dead when the
 * request is sent gets it from the pool's history when it is replaced, as
 * do workers that pyproc_add_proc() adds.  A request that fails is not
 * kept, though workers that took it before the failure keep what it did.
 */
PYPROC_EXPORT int pyproc_add_sub(pyproc_pool *pool, const char *name, const char *pypath,
                                 unsigned flags);
PYPROC_EXPORT int pyproc_add_sub_err(pyproc_pool *pool, const char *name, const char *pypath,
                                     unsigned flags, pyproc_msg **err);

/* ---- calls ---- */

/*
 * Call `ref` ("sub.module.function") on the next worker in round-robin
 * order with the arguments that fmt describes (see "Argument format"
 * below) and wait for it.  Round robin prefers the least loaded: from the
 * next worker in turn, the first with no request in flight, else the one
 * with the fewest, so an idle pool (or one caller at a time) goes round
 * robin exactly, and a worker busy with a long call is passed over while
 * another has less to do.  pyproc_track_func(), pyproc_gen(),
 * pyproc_func_async() and their kin pick the same way.  On success returns 0 with the result in *ret.
 * On PYPROC_EREMOTE, -ENOENT (unknown reference) or PYPROC_EWORKER, *ret
 * holds the error message (pyproc_msg_error()); on other errors *ret is
 * left alone.  ret may be NULL to drop the result.
 */
PYPROC_EXPORT int pyproc_func(pyproc_pool *pool, const char *ref, pyproc_msg **ret, const char *fmt,
                              ...);
PYPROC_EXPORT int pyproc_funcv(pyproc_pool *pool, const char *ref, pyproc_msg **ret,
                               const char *fmt, va_list ap);

/* As pyproc_func(), on worker `ind`. */
PYPROC_EXPORT int pyproc_ind_func(pyproc_pool *pool, int ind, const char *ref, pyproc_msg **ret,
                                  const char *fmt, ...);
PYPROC_EXPORT int pyproc_ind_funcv(pyproc_pool *pool, int ind, const char *ref, pyproc_msg **ret,
                                   const char *fmt, va_list ap);

/*
 * Start a call on the next worker and return at once, with the worker's
 * index through *ind (may be NULL) and a handle through *call, to pass to
 * pyproc_wait() and then pyproc_call_free().  Any number of calls may be in
 * flight.
 */
PYPROC_EXPORT int pyproc_track_func(pyproc_pool *pool, int *ind, pyproc_call **call,
                                    const char *ref, const char *fmt, ...);
PYPROC_EXPORT int pyproc_track_funcv(pyproc_pool *pool, int *ind, pyproc_call **call,
                                     const char *ref, const char *fmt, va_list ap);

/* As pyproc_track_func(), on worker `ind`. */
PYPROC_EXPORT int pyproc_ind_call(pyproc_pool *pool, int ind, pyproc_call **call, const char *ref,
                                  const char *fmt, ...);
PYPROC_EXPORT int pyproc_ind_callv(pyproc_pool *pool, int ind, pyproc_call **call, const char *ref,
                                   const char *fmt, va_list ap);

/*
 * Wait up to timeout_ms (-1: forever) for a call to end.  Returns what
 * pyproc_func() would, with *ret filled the same way, or -ETIMEDOUT when
 * the call is still running (wait again later).  The result is handed out
 * once: a second pyproc_wait() after success returns -EALREADY.
 */
PYPROC_EXPORT int pyproc_wait(pyproc_call *call, pyproc_msg **ret, int timeout_ms);

/*
 * Cancel a call or stream: its asyncio task in the worker is cancelled
 * (CancelledError is raised inside it, its `finally` runs), or a plain
 * function is interrupted where Python allows.  The call then ends with
 * -ECANCELED (or its result, if it finished first); wait for it as usual.
 * A call still queued behind others in its worker is answered with
 * -ECANCELED without running.  Never waits for the worker, not even when
 * its request ring is full.  Returns 0, or -EALREADY when the call had
 * already ended.
 */
PYPROC_EXPORT int pyproc_cancel(pyproc_call *call);

/* Index of the worker that runs the call. */
PYPROC_EXPORT int pyproc_call_worker(pyproc_call *call);

/*
 * Release a handle.  A call that is still running goes on in the worker;
 * its result is dropped when it arrives.
 */
PYPROC_EXPORT void pyproc_call_free(pyproc_call *call);

/* ---- streams ---- */

/*
 * Run a generator or async generator (or any iterable) `ref` on the next
 * worker and return at once with a stream handle whose items
 * pyproc_next() hands out as the worker produces them.  A stream that
 * nobody reads parks its generator after a bounded number of unread items
 * (the other calls of that worker go on).  pyproc_call_free() on a stream
 * that has not ended closes the generator in the worker (its `finally`
 * runs).
 */
PYPROC_EXPORT int pyproc_gen(pyproc_pool *pool, const char *ref, pyproc_call **stream,
                             const char *fmt, ...);
PYPROC_EXPORT int pyproc_genv(pyproc_pool *pool, const char *ref, pyproc_call **stream,
                              const char *fmt, va_list ap);

/* As pyproc_gen(), also giving the worker's index through *ind. */
PYPROC_EXPORT int pyproc_track_gen(pyproc_pool *pool, int *ind, pyproc_call **stream,
                                   const char *ref, const char *fmt, ...);
PYPROC_EXPORT int pyproc_track_genv(pyproc_pool *pool, int *ind, pyproc_call **stream,
                                    const char *ref, const char *fmt, va_list ap);

/* As pyproc_gen(), on worker `ind`. */
PYPROC_EXPORT int pyproc_ind_gen(pyproc_pool *pool, int ind, const char *ref, pyproc_call **stream,
                                 const char *fmt, ...);
PYPROC_EXPORT int pyproc_ind_genv(pyproc_pool *pool, int ind, const char *ref, pyproc_call **stream,
                                  const char *fmt, va_list ap);

/*
 * Wait for the next item of a stream.  Returns 1 with the item in *item;
 * 0 at the end of the stream; or a negative errno (PYPROC_EREMOTE when the
 * generator raised, PYPROC_EWORKER when the worker died), with the error
 * message in *item.  After the end or an error, further calls return 0.
 */
PYPROC_EXPORT int pyproc_next(pyproc_call *stream, pyproc_msg **item);

/*
 * As pyproc_next(), also giving the item's position through *index (may
 * be NULL): for a map, the 0-based push index of the input the item (or
 * error) answers; for any other stream, the item's position in the
 * stream, counting the items this function handed out (an error stands
 * at the position the next item would have had).  *index is set only
 * when an item or an error message is handed out.
 */
PYPROC_EXPORT int pyproc_next_at(pyproc_call *stream, pyproc_msg **item, size_t *index);

/* ---- maps ----
 *
 * A map runs one function over a stream of inputs, spread over the pool's
 * workers, for inputs too many to send one call each:
 *
 *   pyproc_call *s;
 *   pyproc_msg *r;
 *   size_t at;
 *   int rc;
 *   pyproc_map(pool, "mods.math.square", 0, &s);
 *   for (int i = 0; i < n;) {
 *       if ((rc = pyproc_push(s, "i", i)) == 0)
 *           i++;                      (pushed)
 *       else if (rc == -EAGAIN)       (the window is full: read one)
 *           use(pyproc_next_at(s, &r, &at), r, at);
 *       else
 *           break;                    (a bad item: rc says why)
 *   }
 *   pyproc_push_end(s);
 *   while ((rc = pyproc_next_at(s, &r, &at)) != 0)
 *       use(rc, r, at);               (1: r is input at's value; < 0: its error)
 *   pyproc_call_free(s);
 *
 * Items are packed into chunks (one frame carrying many items' arguments,
 * and one carrying many results back), sent to the least loaded workers,
 * a few chunks in flight per worker so that none waits for the host.  How
 * many items make a chunk follows how long items took so far: no-op items
 * travel hundreds at a time, items of a millisecond or more one by one.
 * Each worker resolves the reference once per chunk and runs plain
 * functions straight through in C; a coroutine function's items of a
 * chunk run as concurrent tasks.
 *
 * One thread at a time may push and read a map (the same thread may do
 * both: nothing here waits for the reader); pyproc_cancel() may come from
 * any thread.  The pool's call timeout applies to each chunk.  A map
 * spreads its items over the workers the pool had when it started.  Once
 * its pool is freed, a map's items in flight end with -ECANCELED and the
 * handle may only be freed.
 */

/* Flag of pyproc_map(): hand out results as they finish, not in the
 * order of the input. */
#define PYPROC_MAP_UNORDERED 0x1u

/*
 * Start a map of `ref` over items still to come, and return at once with
 * its handle in *stream: pyproc_push() gives it inputs, pyproc_next() or
 * pyproc_next_at() hand out the results, in input order (or as they
 * finish, with PYPROC_MAP_UNORDERED), and pyproc_call_free() releases it.
 * pyproc_wait() does not apply (-EINVAL).  Returns 0, or -EINVAL (bad
 * flags, NULL ref) or -ENOMEM.  An unknown reference is found by the
 * workers: every item then ends with -ENOENT and the reference's error.
 */
PYPROC_EXPORT int pyproc_map(pyproc_pool *pool, const char *ref, unsigned flags,
                             pyproc_call **stream);

/*
 * Add one input: the arguments of one call of the map's function, in the
 * same format as pyproc_func()'s (positional, then '|' and keyword
 * pairs).  Never waits for results: returns 0; -EAGAIN when the window
 * (pyproc_opts.map_window) of items pushed and not yet read is full (read
 * one with pyproc_next(), then push again); -EINVAL for a bad format or
 * argument, -EMSGSIZE for an item over max_msg_bytes, -ENOMEM (the item
 * is not added, the map goes on); -EPIPE after pyproc_push_end();
 * -ECANCELED after pyproc_cancel().  Items are numbered from 0 in the
 * order they were pushed.
 */
PYPROC_EXPORT int pyproc_push(pyproc_call *stream, const char *fmt, ...);
PYPROC_EXPORT int pyproc_pushv(pyproc_call *stream, const char *fmt, va_list ap);

/*
 * No more inputs: once every item pushed is read, pyproc_next() returns 0.
 * A map ended before any push ends at once.  Returns 0 (again, too).
 */
PYPROC_EXPORT int pyproc_push_end(pyproc_call *stream);

/*
 * On a map, pyproc_next() and pyproc_next_at() return, for each item:
 * 1 with its value in *item; or its error with the error message in
 * *item, after which the map goes on (PYPROC_EREMOTE when the function
 * raised, with the same text a failed call has; PYPROC_EWORKER when its
 * worker died while it ran, only for the items of that worker's chunks in
 * flight; -ECANCELED after pyproc_cancel(); -ENOENT for an unknown
 * reference; -ETIMEDOUT past the call timeout).  They never wait for an
 * item that was not sent yet (they send it first).  With items pushed and
 * not answered, they wait; with none, they return 0 once the input ended
 * (pyproc_push_end() or pyproc_cancel()) and -EAGAIN before that, rather
 * than wait for pushes that would have to come from the same thread.
 *
 * pyproc_cancel() ends the whole map: no more pushes (-ECANCELED), the
 * chunks in flight are stopped in the workers (as a call is), and every
 * item not answered yet ends with -ECANCELED; reading goes on until each
 * pushed item was handed out, then returns 0.  pyproc_call_free() does the
 * same without reading: the workers drop what they were doing for it.
 */

/* ---- the whole pool ---- */

/*
 * Run `ref` on every worker at the same time and wait for all.  On success
 * returns the number of workers n and, through *rets, a malloc'd array of
 * n messages, one per worker index, each that worker's result or error;
 * free each with pyproc_msg_free() and the array with free().  Fails only
 * when it could not run at all (bad arguments, no memory).
 */
PYPROC_EXPORT int pyproc_pub(pyproc_pool *pool, const char *ref, pyproc_msg ***rets,
                             const char *fmt, ...);
PYPROC_EXPORT int pyproc_pubv(pyproc_pool *pool, const char *ref, pyproc_msg ***rets,
                              const char *fmt, va_list ap);

/*
 * Store the value fmt describes at a dotted path on every worker's hub:
 * "mods.CONFIG" sets hub.mods.CONFIG.  Workers added later get it too.
 * Returns 0 or the first worker's error (PYPROC_EREMOTE).
 */
PYPROC_EXPORT int pyproc_set_attr(pyproc_pool *pool, const char *ref, const char *fmt, ...);
PYPROC_EXPORT int pyproc_set_attrv(pyproc_pool *pool, const char *ref, const char *fmt, va_list ap);

/*
 * Start one more worker at the next index, replay to it every add_sub,
 * add_native and set_attr the pool has seen, in order, and only then let it
 * take calls.
 * Returns 0 and the new index through *ind (may be NULL).
 */
PYPROC_EXPORT int pyproc_add_proc(pyproc_pool *pool, int *ind);

/* ---- native functions ----
 *
 * A shared library's C functions, called in the workers through libffi, so
 * that native code the host does not trust (a vendor library, a codec, a
 * plugin) crashes a worker rather than the host.
 *
 * Each function is declared with its symbol and a signature: the return
 * type's code, then the parameters' codes in parentheses.  The codes are
 * those of Python's struct module where it has one:
 *
 *   code  C type                  Python value
 *   v     void (return only)      None
 *   b B   int8_t   uint8_t        int
 *   h H   int16_t  uint16_t       int
 *   i I   int32_t  uint32_t       int
 *   q Q   int64_t  uint64_t       int
 *   f     float                   float (an int is accepted)
 *   d     double                  float (an int is accepted)
 *   s     const char *            str, passed as NUL-terminated UTF-8 (bytes
 *                                 are passed as they are); None passes NULL.
 *                                 Returned, the string is copied into a str
 *                                 (it must be UTF-8); NULL gives None.
 *   y     const void *, size_t    bytes (or any contiguous buffer), as a
 *                                 pointer and a length; parameter only
 *   wN    void *, size_t,         an output buffer of N bytes (1 to 2^30);
 *         size_t *                parameter only, and it takes no argument
 *
 * For wN the function gets a buffer of N bytes, N, and a size_t set to 0
 * where it stores how many bytes it wrote; those bytes are a result.
 * Spaces are ignored.  Examples:
 *   "d(d)"      double cos(double)
 *   "v()"       void reset(void)
 *   "i(ss)"     int32_t cmp(const char *, const char *)
 *   "Q(y)"      uint64_t hash(const void *data, size_t len)
 *   "i(yw64)"   int32_t f(const void *in, size_t in_len,
 *                         void *out, size_t out_size, size_t *out_len)
 *
 * Results: the return value (unless v), then the bytes of each wN in the
 * order of the parameters.  No result answers None, one answers that value,
 * several a list: f above, called with one bytes argument, answers
 * [int, bytes].
 *
 * Each argument is checked before any native code runs: the count and the
 * type (TypeError), integers against their C type's range and a finite
 * double against float's (OverflowError: nothing is truncated, unlike
 * ctypes), no NUL inside an s string (ValueError), no keyword arguments.
 * The error reaches the caller as PYPROC_EREMOTE and the worker goes on.
 * A function that stores a length above N has overrun its buffer: the call
 * raises RuntimeError.  Functions must not be variadic.  They run without
 * Python's GIL, as with ctypes.CDLL, and must not call into Python.
 */

/* One declaration: a function's symbol and its signature. */
typedef struct pyproc_native_decl {
    const char *name;
    const char *signature;
} pyproc_native_decl;

/*
 * A library written for pyproc may declare its functions itself, for
 * pyproc_add_native() with decls NULL, in this table ended by {NULL, NULL}:
 *
 *   #include <pyproc.h>
 *   const pyproc_native_decl pyproc_native_exports[] = {
 *       {"checksum", "I(y)"},
 *       {NULL, NULL},
 *   };
 *
 * The declaration below gives it default visibility, so it is exported
 * even from a library built with -fvisibility=hidden.  (In C++, define it
 * inside extern "C" with `extern const`.)
 */
#if defined(__GNUC__)
#define PYPROC_NATIVE_EXPORT __attribute__((visibility("default")))
#else
#define PYPROC_NATIVE_EXPORT
#endif
PYPROC_NATIVE_EXPORT extern const pyproc_native_decl pyproc_native_exports[];

/*
 * Load the shared library `library` in every worker and mount its
 * functions on the hub as sub `name`: "name.func" is then called with
 * pyproc_func() and friends like any reference, and Python code in a
 * worker calls hub.<name>.<func>(...).  `decls` declares the functions,
 * ended by {NULL, NULL}; NULL means the library's own
 * pyproc_native_exports table.
 *
 * The library is opened with dlopen(RTLD_NOW | RTLD_LOCAL): a name without
 * '/' is searched for as dlopen() does ("libm.so.6"); a relative path is
 * taken against the host's working directory at the time of this call.
 * Each function is resolved and its call prepared once, at load.  Workers
 * added later load it too; libraries stay loaded while the worker lives.
 * A native function that crashes kills its worker: the calls in flight on
 * that worker end with PYPROC_EWORKER, whose message names the signal.
 *
 * Returns 0; -EINVAL for a bad argument, including a function name that is
 * not a C identifier or a bad signature (described in *err); or
 * PYPROC_EREMOTE when a worker failed (library not found, missing symbol,
 * no or a bad exported table), with the first failing worker's error in
 * *err.  err may be NULL; free *err with pyproc_msg_free().
 */
PYPROC_EXPORT int pyproc_add_native(pyproc_pool *pool, const char *name, const char *library,
                                    const pyproc_native_decl *decls);
PYPROC_EXPORT int pyproc_add_native_err(pyproc_pool *pool, const char *name, const char *library,
                                        const pyproc_native_decl *decls, pyproc_msg **err);

/* ---- host event loops ----
 *
 * An application with its own loop polls pyproc_pool_fd() for reading and
 * calls pyproc_dispatch() when it is readable.
 */

/*
 * Start a call on the next worker; `done` runs from pyproc_dispatch() once
 * it ends.  Returns 0, or a negative errno (and `done` never runs).  When
 * it is the pool's only asynchronous call in flight and the worker is
 * awake, it spins up to the pool's spin_us for the answer first, so that
 * the pool's fd is readable when the caller polls it.
 */
PYPROC_EXPORT int pyproc_func_async(pyproc_pool *pool, const char *ref, pyproc_done_fn done,
                                    void *data, const char *fmt, ...);
PYPROC_EXPORT int pyproc_func_asyncv(pyproc_pool *pool, const char *ref, pyproc_done_fn done,
                                     void *data, const char *fmt, va_list ap);

/*
 * Run `done` from pyproc_dispatch() when `call` (a handle of
 * pyproc_track_func() or pyproc_ind_call()) ends, or at the next dispatch
 * if it has ended already.  It runs exactly once and the result then
 * belongs to `done`, as with pyproc_func_async(); the handle stays the
 * caller's, to free with pyproc_call_free() (which `done` itself may do).
 * Freeing the handle before `done` ran cancels the call if it still runs,
 * and `done` never runs.  Once a callback is set, pyproc_wait() on the
 * handle returns -EBUSY.  Returns 0; -EALREADY when the handle already has
 * a callback or its result was taken; -EINVAL for a stream (see
 * pyproc_stream_on_item()).
 */
PYPROC_EXPORT int pyproc_call_on_done(pyproc_call *call, pyproc_done_fn done, void *data);

/*
 * Deliver a stream's items from pyproc_dispatch(): fn(pool, 1, item, data)
 * for each item in order, then fn(pool, 0, NULL, data) at the end, or
 * fn(pool, <0, error message, data) when the stream fails (the generator
 * raised, the worker died, it was cancelled or timed out).  Items already
 * queued are delivered at the next dispatch.  Credit goes back to the
 * worker as items are delivered, so flow control works as with
 * pyproc_next(): a stream whose items are not dispatched parks its
 * generator.  fn may call pyproc_call_free() on the stream: no item
 * follows.  Freeing the stream from elsewhere before the end closes the
 * generator and fn runs no more.  Once set, pyproc_next() returns -EBUSY.
 * A map (pyproc_map()) delivers its results this way too, as
 * pyproc_next() would hand them out (fn gets no index: an unordered map
 * whose items must be told apart answers with what tells them apart), and
 * pushes send what its results need without a reader waiting.
 * Returns 0; -EALREADY when the stream already has a callback; -EINVAL for
 * a call that is not a stream.
 */
PYPROC_EXPORT int pyproc_stream_on_item(pyproc_call *stream, pyproc_item_fn fn, void *data);

/*
 * End `call` (or stream) with -ETIMEDOUT, cancelling it in the worker,
 * unless it ends within timeout_ms (>= 0) from now.  The end comes within
 * a few milliseconds of the deadline whatever the worker does, so it
 * serves blocking callers too (a per-call timeout).  A second deadline
 * replaces the first; the pool's call_timeout_ms still applies, whichever
 * comes first.  Returns 0; -EALREADY when the call has ended; -EINVAL;
 * -EOPNOTSUPP for a map, whose chunks each have the pool's call timeout
 * (pyproc_cancel() ends a whole map).
 */
PYPROC_EXPORT int pyproc_call_deadline(pyproc_call *call, int timeout_ms);

/*
 * An fd to poll for reading: readable while completions wait for
 * pyproc_dispatch(), and as soon as a worker answers (so the answer wakes
 * the loop's thread directly, with no library thread in between).  It may
 * therefore be readable with nothing yet to run: pyproc_dispatch() then
 * returns 0.  After a dispatch that ran callbacks it may stay readable
 * until a dispatch finds nothing to run, which leaves it unreadable until
 * the next event: a level-triggered loop wakes once more after a busy
 * spell, and never spins while nothing comes.  It may be watched level- or
 * edge-triggered (EPOLLET): every completion after a dispatch, and a
 * dispatch that leaves work for the next, makes a new event.  The pool
 * owns it; do not read or close it.
 */
PYPROC_EXPORT int pyproc_pool_fd(pyproc_pool *pool);

/*
 * Read the answers of the workers that rang since the last dispatch, then
 * run the completion callbacks of every asynchronous call that has ended,
 * and the callbacks set on handles that are due (their ends, stream
 * items).  Never waits for a worker.  Returns how many callbacks ran, or
 * a negative errno.  Calls that are still running when the pool is freed complete
 * with -ECANCELED from inside pyproc_pool_free(), callbacks on handles
 * included (a stream's queued items first).
 */
PYPROC_EXPORT int pyproc_dispatch(pyproc_pool *pool);

/* ---- messages ----
 *
 * A message is one msgpack value, as Python's msgpack writes it with
 * use_bin_type=True (str as str, bytes as bin, smallest encodings), or an
 * error.
 *
 * Argument format: each code stands for one value and takes its C
 * arguments in order:
 *   n  None                      (no argument)
 *   b  bool                      int
 *   i  int                       int
 *   I  int                       int64_t
 *   u  int                       uint64_t
 *   d  float                     double
 *   s  str                       const char * (UTF-8, NUL-terminated)
 *   y  bytes                     const void *, size_t
 *   m  raw msgpack value         const void *, size_t (spliced as it is)
 *   B  writable memoryview       pyproc_buf *, size_t offset, size_t len:
 *                                bytes [offset, offset + len) of a shared
 *                                buffer, mapped in the worker, not copied
 *                                (calls only; see "shared buffers")
 *   [ ... ]  list of the values inside
 *   { ... }  dict of the values inside, alternating keys and values
 * Spaces are ignored.  In a call, the codes are the positional arguments;
 * after a '|' come keyword arguments as pairs of a key ('s') and a value:
 *   pyproc_func(p, "mods.math.scale", &r, "ii|sd", 2, 3, "factor", 1.5);
 * calls scale(2, 3, factor=1.5).  A NULL or empty fmt means no arguments.
 */

enum pyproc_type {
    PYPROC_NIL = 1,
    PYPROC_BOOL,
    PYPROC_INT,  /* fits int64_t */
    PYPROC_UINT, /* above INT64_MAX */
    PYPROC_FLOAT,
    PYPROC_STR,
    PYPROC_BYTES,
    PYPROC_LIST,
    PYPROC_MAP,
    PYPROC_EXT,
    PYPROC_BUF, /* a range of a shared buffer: read it with 'B' */
};

/*
 * Build a message from fmt.  One code makes that value; several make a
 * list of them.  Returns 0, -EINVAL for a bad format, or -ENOMEM.
 */
PYPROC_EXPORT int pyproc_msg_new(pyproc_msg **ret, const char *fmt, ...);
PYPROC_EXPORT int pyproc_msg_newv(pyproc_msg **ret, const char *fmt, va_list ap);

/*
 * Read a message with the codes above, taking pointers: b and i fill an
 * int, I an int64_t, u a uint64_t, d a double; s gives a const char ** to a
 * NUL-terminated copy and y/m a const void ** and a size_t *, all owned by
 * the message and valid while it lives; B gives a pyproc_buf ** (a new
 * reference, for the caller to pyproc_buf_free()) and two size_t * (the
 * range's offset and length); n takes no pointer.  One code reads
 * the value itself; several read a list of exactly that many items, as
 * brackets do.  Returns 0; -EINVAL for a bad format; -EBADMSG when the
 * value has another shape; -ERANGE when a number does not fit.  Nothing is
 * promised about the pointers on failure.
 */
PYPROC_EXPORT int pyproc_msg_read(pyproc_msg *m, const char *fmt, ...);
PYPROC_EXPORT int pyproc_msg_readv(pyproc_msg *m, const char *fmt, va_list ap);

/* The message's msgpack encoding (valid while it lives); NULL for an error. */
PYPROC_EXPORT const void *pyproc_msg_data(pyproc_msg *m, size_t *len);

/*
 * An error message's text: exception type and message, then the formatted
 * traceback; or the worker index and how it died.  NULL for a value.
 */
PYPROC_EXPORT const char *pyproc_msg_error(pyproc_msg *m);

/* Type of the value (enum pyproc_type), or -EINVAL for an error message. */
PYPROC_EXPORT int pyproc_msg_type(pyproc_msg *m);

/*
 * Items of a list, pairs of a map, bytes of a str or bytes value; -EINVAL
 * for other types.
 */
PYPROC_EXPORT int pyproc_msg_len(pyproc_msg *m);

/*
 * The i-th item of a list through *ret, or for a map the i-th key (ret) and
 * value (val, may be NULL; must be NULL for a list).  The results are new
 * messages for the caller to free.  Returns 0, -EINVAL, or -ERANGE past the
 * end.
 */
PYPROC_EXPORT int pyproc_msg_at(pyproc_msg *m, size_t i, pyproc_msg **ret, pyproc_msg **val);

PYPROC_EXPORT void pyproc_msg_free(pyproc_msg *m);

/* ---- shared buffers ----
 *
 * Large data (images, audio, matrices) handed to Python by reference: a
 * call's 'B' argument gives the function a writable memoryview of part of
 * a buffer, mapped into the worker, not copied (numpy.frombuffer() works
 * on it), and what the function writes there is in the buffer when the
 * call has returned.  Any buffer may go to any worker of the pool, also to
 * workers started after it was made.  A buffer is a sealed memfd: no
 * worker can shrink it under the host's mapping, and a worker reaches no
 * host memory but the buffers passed to it.  Its memory lives while the
 * host holds a reference or a worker still uses it (a view kept by Python
 * code), and goes back to the system when the last user is done; a worker
 * that dies drops its uses.  A call passes at most 16 buffers ('B' codes;
 * -E2BIG beyond); pyproc_pub(), pyproc_set_attr() and pyproc_push() take
 * none (-EINVAL).
 *
 * The other way: in a worker, pyproc.buffer(nbytes) makes a new shared
 * buffer, and a value that is one, a memoryview of one, or any object
 * whose memory lies inside one (numpy.frombuffer(pyproc.buffer(n), ...))
 * travels to the host as a reference to that range, not as bytes, in
 * results, stream items and callbacks alike, nested in lists and dicts
 * too (at most 64 in one value).  pyproc_msg_type() says PYPROC_BUF and
 * pyproc_msg_read(m, "B", &buf, &off, &len) gives the host its own
 * reference.  The host maps a worker's buffer only after checking that it
 * is sealed against shrinking and holds the range named; a worker that
 * sends another is killed and the call fails with PYPROC_EWORKER.
 */

/* A new zero-filled buffer of size bytes for pool's calls, with one
 * reference.  Returns 0, -EINVAL (size 0), -ENOMEM, or the errno of
 * making or mapping it. */
PYPROC_EXPORT int pyproc_buf_new(pyproc_pool *pool, size_t size, pyproc_buf **ret);

/* The host's mapping of the buffer, valid until its last reference goes. */
PYPROC_EXPORT void *pyproc_buf_data(pyproc_buf *buf);
PYPROC_EXPORT size_t pyproc_buf_size(pyproc_buf *buf);

/* Drop the host's reference.  Safe while calls that use it still run:
 * they keep the memory until they are done. */
PYPROC_EXPORT void pyproc_buf_free(pyproc_buf *buf);

/* ---- misc ---- */

/* A static description of any value this library returns. */
PYPROC_EXPORT const char *pyproc_strerror(int err);

/* "MAJOR.MINOR.PATCH" of the library actually linked. */
PYPROC_EXPORT const char *pyproc_version(void);

#ifdef __cplusplus
}
#endif

#endif
