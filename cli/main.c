/*
 * pyproc: call Python functions in a pool of workers from the shell.
 *
 *   pyproc call [OPTIONS] REF [FORMAT ARG...]   one call, its result
 *   pyproc gen  [OPTIONS] REF [FORMAT ARG...]   a stream, item by item
 *   pyproc pub  [OPTIONS] REF [FORMAT ARG...]   every worker's answer
 *   pyproc bench [ARG...]                       runs pyproc-bench
 *   pyproc version
 *
 * Built on the public API only: it is also the smallest complete program
 * that uses it.  The exit status says how a call ended (see enum exit).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyproc.h"

#include "args.h"
#include "invoke.h"
#include "show.h"

enum exit {
    EXIT_OK = 0,
    EXIT_RAISED = 1, /* the Python code raised */
    EXIT_USAGE = 2,  /* bad options, format or arguments */
    EXIT_DIED = 3,   /* the worker died */
    EXIT_NOREF = 4,  /* the reference names nothing */
    EXIT_FAILED = 5, /* anything else: no pool, a timeout, ... */
};

#define MAX_SUBS 32

struct options {
    pyproc_opts pool;
    const char *sub_name[MAX_SUBS], *sub_path[MAX_SUBS];
    int nsubs;
    enum cli_style style;
};

static void usage(FILE *f)
{
    fputs(
        "usage: pyproc call|gen|pub [OPTIONS] REF [FORMAT ARG...]\n"
        "       pyproc bench [ARG...]\n"
        "       pyproc version\n"
        "options:\n"
        "  -p, --python-path PATH  sys.path entries for the workers (':'-separated)\n"
        "  -s, --sub NAME=PYPATH   load package PYPATH as sub NAME (repeatable)\n"
        "  -e, --venv DIR          run the workers in the virtual environment DIR\n"
        "  -w, --workers N         pool size (call, gen: 1; pub: one per CPU)\n"
        "  -t, --timeout MS        end the call after MS milliseconds\n"
        "      --pretty            print values as Python writes them, not JSON\n"
        "  -x, --hex               print bytes as hex, not base64\n"
        "FORMAT is the C API's argument format (\"ii|sd\"): each code takes one ARG.\n"
        "exit status: 0 done, 1 Python raised, 2 bad usage, 3 worker died,\n"
        "             4 unknown reference, 5 other failure\n",
        f);
}

static int exit_for(int err)
{
    if (err >= 0)
        return EXIT_OK;
    if (err == PYPROC_EREMOTE)
        return EXIT_RAISED;
    if (err == PYPROC_EWORKER)
        return EXIT_DIED;
    if (err == -ENOENT)
        return EXIT_NOREF;
    return EXIT_FAILED;
}

/* Say why something failed: the library's words, then the traceback. */
static int report(const char *what, int err, pyproc_msg *m)
{
    fprintf(stderr, "pyproc: %s: %s\n", what, pyproc_strerror(err));
    if (m && pyproc_msg_error(m))
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    return exit_for(err);
}

static int parse_count(const char *s, int lo, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

static int add_sub_option(struct options *o, char *arg)
{
    char *eq = strchr(arg, '=');

    if (!eq || eq == arg || !eq[1] || o->nsubs == MAX_SUBS) {
        fprintf(stderr, "pyproc: -s wants NAME=PYPATH (at most %d)\n", MAX_SUBS);
        return -1;
    }
    *eq = '\0';
    o->sub_name[o->nsubs] = arg;
    o->sub_path[o->nsubs++] = eq + 1;
    return 0;
}

/* Options up to the reference; returns the index of REF in argv or -1. */
static int parse_options(int argc, char **argv, struct options *o)
{
    enum { OPT_PRETTY = 256 };
    static const struct option longs[] = {
        {"python-path", required_argument, NULL, 'p'},
        {"sub", required_argument, NULL, 's'},
        {"venv", required_argument, NULL, 'e'},
        {"workers", required_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'},
        {"pretty", no_argument, NULL, OPT_PRETTY},
        {"hex", no_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    /* '+': stop at REF, so that negative numbers after it are values. */
    while ((c = getopt_long(argc, argv, "+p:s:e:w:t:xh", longs, NULL)) != -1) {
        switch (c) {
        case 'p':
            o->pool.python_path = optarg;
            break;
        case 's':
            if (add_sub_option(o, optarg) < 0)
                return -1;
            break;
        case 'e':
            o->pool.venv = optarg;
            break;
        case 'w':
            if (parse_count(optarg, 1, &o->pool.workers) < 0) {
                fprintf(stderr, "pyproc: -w wants a positive count, not '%s'\n", optarg);
                return -1;
            }
            break;
        case 't':
            if (parse_count(optarg, 1, &o->pool.call_timeout_ms) < 0) {
                fprintf(stderr, "pyproc: -t wants milliseconds, not '%s'\n", optarg);
                return -1;
            }
            break;
        case OPT_PRETTY:
            o->style = CLI_PRETTY;
            break;
        case 'x':
            if (o->style != CLI_PRETTY)
                o->style = CLI_JSON_HEX;
            break;
        case 'h':
            usage(stdout);
            exit(EXIT_OK);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "pyproc: no function reference given\n");
        return -1;
    }
    return optind;
}

static int start_pool(struct options *o, pyproc_pool **pool)
{
    pyproc_msg *err_msg = NULL;
    int err = pyproc_pool_new(pool, "pyproc", &o->pool);

    if (err < 0)
        return report("starting the workers", err, NULL);
    for (int i = 0; i < o->nsubs; i++) {
        err = pyproc_add_sub_err(*pool, o->sub_name[i], o->sub_path[i], PYPROC_SUB_INIT, &err_msg);
        if (err < 0) {
            char what[300];
            snprintf(what, sizeof what, "loading %s as sub %s", o->sub_path[i], o->sub_name[i]);
            int code = report(what, err, err_msg);
            pyproc_msg_free(err_msg);
            pyproc_pool_free(*pool);
            return code;
        }
    }
    return EXIT_OK;
}

static int run_call(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                    const struct options *o)
{
    pyproc_msg *m = NULL;
    int err = cli_invoke_func(pool, ref, a, &m), code;

    code = err < 0 ? report(ref, err, m) : cli_show(stdout, m, o->style) < 0 ? EXIT_FAILED : 0;
    pyproc_msg_free(m);
    return code;
}

static int run_gen(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                   const struct options *o)
{
    pyproc_call *stream;
    pyproc_msg *item = NULL;
    int err = cli_invoke_gen(pool, ref, a, &stream), code = EXIT_OK;

    if (err < 0)
        return report(ref, err, NULL);
    while ((err = pyproc_next(stream, &item)) > 0 && code == EXIT_OK) {
        if (cli_show(stdout, item, o->style) < 0)
            code = EXIT_FAILED;
        fflush(stdout); /* an item is shown as soon as it is made */
        pyproc_msg_free(item);
        item = NULL;
    }
    if (err < 0)
        code = report(ref, err, item);
    pyproc_msg_free(item);
    pyproc_call_free(stream);
    return code;
}

/* One line per worker, in index order; a worker that failed prints null
 * (its traceback goes to stderr) and the first failure sets the status. */
static int run_pub(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                   const struct options *o)
{
    pyproc_msg **rets;
    int n = cli_invoke_pub(pool, ref, a, &rets), code = EXIT_OK;

    if (n < 0)
        return report(ref, n, NULL);
    for (int i = 0; i < n; i++) {
        if (pyproc_msg_error(rets[i])) {
            char what[300];
            snprintf(what, sizeof what, "%s on worker %d", ref, i);
            int c = report(what, PYPROC_EREMOTE, rets[i]);
            code = code ? code : c;
            fputs(o->style == CLI_PRETTY ? "None\n" : "null\n", stdout);
        } else if (cli_show(stdout, rets[i], o->style) < 0) {
            code = code ? code : EXIT_FAILED;
        }
        pyproc_msg_free(rets[i]);
    }
    free(rets);
    return code;
}

static int run(const char *cmd, int argc, char **argv)
{
    struct options o = {.style = CLI_JSON};
    struct cli_args a;
    char why[512];
    pyproc_pool *pool;
    int ref, code;

    o.pool.workers = strcmp(cmd, "pub") ? 1 : 0;
    if ((ref = parse_options(argc, argv, &o)) < 0)
        return EXIT_USAGE;
    /* Check the arguments before any worker starts. */
    if (cli_args_encode(&a, ref + 1 < argc ? argv[ref + 1] : NULL, argv + ref + 2,
                        ref + 1 < argc ? argc - ref - 2 : 0, why, sizeof why) < 0) {
        fprintf(stderr, "pyproc: %s\n", why);
        return EXIT_USAGE;
    }
    if ((code = start_pool(&o, &pool)) == EXIT_OK) {
        if (!strcmp(cmd, "call"))
            code = run_call(pool, argv[ref], &a, &o);
        else if (!strcmp(cmd, "gen"))
            code = run_gen(pool, argv[ref], &a, &o);
        else
            code = run_pub(pool, argv[ref], &a, &o);
        pyproc_pool_free(pool);
    }
    cli_args_free(&a);
    return code;
}

int cli_bench(char **argv);

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (!strcmp(cmd, "call") || !strcmp(cmd, "gen") || !strcmp(cmd, "pub"))
        return run(cmd, argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cli_bench(argv + 1);
    if (!strcmp(cmd, "version")) {
        printf("pyproc %s\n", pyproc_version());
        return EXIT_OK;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    usage(stderr);
    return EXIT_USAGE;
}
