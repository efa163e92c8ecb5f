/*
 * The state of the one worker this process is: its segment, its two rings
 * and what the command line told it.  Shared by the worker's C files.
 */
#ifndef PYPROC_EMBED_WORKER_H
#define PYPROC_EMBED_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "../shm/buf.h"
#include "../shm/ring.h"
#include "../shm/segment.h"

struct worker {
    struct shm_seg seg;
    struct shm_ring requests; /* we consume */
    struct shm_ring replies;  /* we produce */
    int index;
    const char *pool;
    const char *python_path;
    pid_t host_pid;
    int death_fd; /* read end of a pipe only the host writes; EOF: host gone */
    int64_t spin_ns;
    struct shm_buf out; /* reply encoding scratch, main thread only */
    /* Set by any thread that wants the loop to look at its ready queue
     * (call_soon_threadsafe); cleared by the loop before it looks. */
    _Atomic int woken;
    bool shutdown;
    bool trim_when_idle;   /* a large message went by since the last trim */
    bool busy;             /* calls come back to back: spin between them */
    bool host_slept;       /* the host was asleep when we last answered */
    bool spin_unpaid;      /* the last spin for work found none in its budget */
    long last_served;      /* requests served in the last turn that found any */
    unsigned spin_skipped; /* spins skipped since (see spin_budget()) */
    bool fast_tasks;       /* no task factory: a Task's first step is the
                              one handle it schedules (see start_coro()) */
    /* The stop table as far as we acted on it: the stop_seq scanned last
     * and the id each slot held then (see shm/segment.h). */
    uint64_t stop_seq_seen;
    uint64_t stop_done[SHM_STOP_SLOTS];
    pid_t pid;
    /* Set in a child that user code forked: such a process must never
     * touch the rings or the segment, which belong to its parent. */
    volatile sig_atomic_t forked;
    /* The template's socket to the host (template.c); -1 in a worker. */
    int template_fd;
};

extern struct worker the_worker;

/*
 * A forked child of the worker that comes back to the worker's loop (its
 * code returned, or raised) leaves quietly: the call is its parent's.
 */
static inline void worker_leave_if_forked(void)
{
    if (the_worker.forked)
        _exit(0);
}

/* Die with the host; watch for forks of this process (death.c). */
void worker_die_with_host(void);
/* In a forked child: die with the worker, and with the host (death.c). */
void worker_forked_child_setup(void);

/* True when the host posted a stop or asked us to exit, and we have not
 * acted on it yet (serve.c).  Needs no GIL. */
bool worker_control_pending(void);

/* Register the _pyproc module; call before Python is initialised. */
int pyproc_bridge_register(void);

/* The interpreter path of the virtual environment `venv` (malloc'd), to
 * start Python as; NULL, having said why on stderr, when the venv is
 * unreadable or made for another Python version (venv.c). */
char *worker_venv_program(const char *venv);

/* In a template: move the program's hot machine code onto a huge page,
 * which the workers it forks share (hugetext.c). */
void worker_text_on_huge_pages(void);

/* ---- setup.c: before Python runs ---- */

/* What the command line says beyond the_worker's own fields. */
struct worker_args {
    int seg_fd, request_bell, reply_bell;
    /* Limits to put on ourselves before Python starts; 0: none. */
    unsigned long long rlimit_as, rlimit_nofile;
    bool no_new_privs;
    const char *venv; /* a virtual environment to run in, or NULL */
    int buffer_fd;    /* the socket shared buffers' fds come on, or -1 */
};

/* Fill the_worker and *a from the command line; exit(2) on a bad one. */
void worker_parse_args(int argc, char **argv, struct worker_args *a);
/* Put the host's limits on this process; exit(1) when one cannot be. */
void worker_restrict(const struct worker_args *a);
/* Map the segment and attach both rings; exit(1) on failure. */
void worker_attach_rings(const struct worker_args *a);
/* Keep freed memory for reuse while busy (the loop trims it when idle). */
void worker_keep_freed_memory(void);

/* ---- boot.c: the worker inside /usr/bin/python3 ---- */

/* Run the hub's source as module `pyproc` and call its main(); returns
 * the worker's exit status.  Python is running. */
int worker_run_hub(void);
/* The hub's source run as module `pyproc` (a new reference), or NULL with
 * a Python exception set; then its main(), the worker's exit status. */
struct _object *worker_load_hub(void);
int worker_run_main(struct _object *hub);

/* ---- template.c: the template that forks workers ---- */

/* Before Python: die with the host, without a thread (template.c). */
void worker_template_prepare(void);
/* Fork workers on the host's request until it goes; the exit status.
 * Python is running.  Returns only in the template. */
int worker_template_serve(void);

#endif
