/*
 * What a worker does before Python runs: read its command line, put the
 * host's limits on itself, map its segment and attach its rings.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "worker.h"

static void usage_exit(const char *why)
{
    fprintf(stderr,
            "pyproc-worker: %s\n"
            "pyproc-worker is started by libpyproc, not by hand:\n"
            "  pyproc-worker --fd N --host-pid PID --pool NAME --index I\n"
            "                --request-bell FD --reply-bell FD --death-fd FD\n"
            "                [--python-path PATHS] [--spin-us N]\n"
            "                [--rlimit-as BYTES] [--rlimit-nofile N] [--no-new-privs]\n"
            "  pyproc-worker --template FD --host-pid PID --pool NAME ...\n",
            why);
    exit(2);
}

static long parse_num(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        usage_exit("bad number on the command line");
    return v;
}

static unsigned long long parse_unsigned(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == 0)
        usage_exit("bad number on the command line");
    return v;
}

void worker_parse_args(int argc, char **argv, struct worker_args *a)
{
    static const struct option opts[] = {
        {"fd", required_argument, 0, 'f'},
        {"host-pid", required_argument, 0, 'h'},
        {"pool", required_argument, 0, 'p'},
        {"index", required_argument, 0, 'i'},
        {"request-bell", required_argument, 0, 'q'},
        {"reply-bell", required_argument, 0, 'r'},
        {"death-fd", required_argument, 0, 'd'},
        {"python-path", required_argument, 0, 'y'},
        {"spin-us", required_argument, 0, 's'},
        {"rlimit-as", required_argument, 0, 'A'},
        {"rlimit-nofile", required_argument, 0, 'N'},
        {"no-new-privs", no_argument, 0, 'P'},
        {"venv", required_argument, 0, 'v'},
        {"buffer-fd", required_argument, 0, 'b'},
        {"template", required_argument, 0, 'T'},
        {0, 0, 0, 0},
    };
    struct worker *w = &the_worker;
    int c;

    *a = (struct worker_args){-1, -1, -1, 0, 0, false, NULL, -1};
    optind = 1;
    w->index = -1;
    w->spin_ns = 50000;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            a->seg_fd = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'h':
            w->host_pid = (pid_t)parse_num(optarg, 1, 1 << 30);
            break;
        case 'p':
            w->pool = optarg;
            break;
        case 'i':
            w->index = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'q':
            a->request_bell = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'r':
            a->reply_bell = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'd':
            w->death_fd = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'y':
            w->python_path = optarg;
            break;
        case 's':
            w->spin_ns = parse_num(optarg, -1, 1000000) * 1000;
            break;
        case 'A':
            a->rlimit_as = parse_unsigned(optarg);
            break;
        case 'N':
            a->rlimit_nofile = parse_unsigned(optarg);
            break;
        case 'P':
            a->no_new_privs = true;
            break;
        case 'v':
            a->venv = optarg;
            break;
        case 'b':
            a->buffer_fd = (int)parse_num(optarg, 0, 1 << 20);
            break;
        case 'T':
            w->template_fd = (int)parse_num(optarg, 0, 1 << 20);
            break;
        default:
            usage_exit("unknown option");
        }
    }
    /* A template has no segment of its own: each worker it forks gets
     * one (template.c). */
    if (w->template_fd >= 0 && w->host_pid && w->pool)
        return;
    if (a->seg_fd < 0 || !w->host_pid || !w->pool || w->index < 0 || a->request_bell < 0 ||
        a->reply_bell < 0 || w->death_fd < 0)
        usage_exit("missing option");
}

/*
 * Soft and hard limit alike, so Python code cannot raise them again.  A
 * limit we cannot set is fatal: running without the cap the host asked
 * for would be worse than not running.
 */
static void set_limit(int resource, const char *name, unsigned long long v)
{
    struct rlimit r = {.rlim_cur = (rlim_t)v, .rlim_max = (rlim_t)v};

    if (setrlimit(resource, &r) < 0) {
        fprintf(stderr, "pyproc-worker: cannot set %s to %llu: %s\n", name, v, strerror(errno));
        exit(1);
    }
}

/* What posix_spawn could not do for the host: before Python starts, so
 * that nothing runs without them. */
void worker_restrict(const struct worker_args *a)
{
    if (a->rlimit_as)
        set_limit(RLIMIT_AS, "RLIMIT_AS", a->rlimit_as);
    if (a->rlimit_nofile)
        set_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", a->rlimit_nofile);
    if (a->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        fprintf(stderr, "pyproc-worker: cannot set no_new_privs: %s\n", strerror(errno));
        exit(1);
    }
}

void worker_attach_rings(const struct worker_args *a)
{
    struct worker *w = &the_worker;
    int err = shm_seg_map(&w->seg, a->seg_fd, w->host_pid, (uint32_t)w->index);
    if (err < 0) {
        fprintf(stderr, "pyproc-worker %s/%d: bad segment: %s\n", w->pool, w->index,
                strerror(-err));
        exit(1);
    }
    uint64_t n = w->seg.hdr->ring_bytes, max = w->seg.hdr->max_msg_bytes;
    if (shm_ring_attach(&w->requests, &w->seg.hdr->request, w->seg.request_data, n, max,
                        a->request_bell, shm_frame_type_to_worker) < 0 ||
        shm_ring_attach(&w->replies, &w->seg.hdr->reply, w->seg.reply_data, n, max, a->reply_bell,
                        shm_frame_type_to_host) < 0) {
        fprintf(stderr, "pyproc-worker: cannot attach rings\n");
        exit(1);
    }
    w->out.limit = max;
}

/*
 * Fresh pages cost a page fault each on first touch, which on some virtual
 * machines is tens of microseconds: a 16 MiB argument would spend most of
 * its time faulting.  Keep freed memory in the heap for reuse while the
 * worker is busy; the loop trims it when the worker goes idle.
 */
void worker_keep_freed_memory(void)
{
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}
