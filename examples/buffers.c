/*
 * buffers: hand an image to numpy in a worker without copying it, and get
 * a new image back the same way.
 *
 * The host fills a shared buffer (pyproc_buf_new) with a 1920x1080 grey
 * image and calls act.images.invert with format code 'B': the worker's
 * numpy array is a view of the host's memory, so inverting it in place
 * changes the host's pixels.  Then act.images.gradient makes an image in a
 * buffer of its own (pyproc.buffer), and the host reads the reference
 * with 'B' and looks at the pixels where they are.
 * Run from examples/: ../build/examples/buffers
 */
#include <stdio.h>
#include <string.h>

#include "pyproc.h"

#define WIDTH 1920
#define HEIGHT 1080

static int fail(const char *what, int err, pyproc_msg *m)
{
    fprintf(stderr, "buffers: %s: %s\n%s\n", what, pyproc_strerror(err),
            m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
    pyproc_msg_free(m);
    return 1;
}

int main(void)
{
    pyproc_opts opts = {.workers = 1, .python_path = "mods"};
    pyproc_pool *pool;
    pyproc_buf *image, *made;
    pyproc_msg *m = NULL;
    size_t off, len;
    int err, mean;

    if ((err = pyproc_pool_new(&pool, "images", &opts)) < 0 ||
        (err = pyproc_add_sub(pool, "act", "act", 0)) < 0)
        return fail("starting the pool", err, NULL);

    if ((err = pyproc_buf_new(pool, WIDTH * HEIGHT, &image)) < 0)
        return fail("pyproc_buf_new", err, NULL);
    memset(pyproc_buf_data(image), 40, WIDTH * HEIGHT);
    err = pyproc_func(pool, "act.images.invert", &m, "Bii", image, (size_t)0,
                      pyproc_buf_size(image), WIDTH, HEIGHT);
    if (err < 0 || pyproc_msg_read(m, "i", &mean) < 0)
        return fail("act.images.invert", err, m);
    pyproc_msg_free(m);
    printf("inverted in the worker: mean %d, and the host's pixel is now %d\n", mean,
           ((unsigned char *)pyproc_buf_data(image))[0]);
    pyproc_buf_free(image);

    err = pyproc_func(pool, "act.images.gradient", &m, "ii", WIDTH, HEIGHT);
    if (err < 0 || pyproc_msg_type(m) != PYPROC_BUF ||
        pyproc_msg_read(m, "B", &made, &off, &len) < 0)
        return fail("act.images.gradient", err, m);
    pyproc_msg_free(m);
    const unsigned char *px = (const unsigned char *)pyproc_buf_data(made) + off;
    printf("made in the worker: %zu bytes by reference; first row %d .. %d\n", len, px[0],
           px[WIDTH - 1]);
    pyproc_buf_free(made);
    pyproc_pool_free(pool);
    return 0;
}
