"""Image functions that examples/buffers.c calls on shared buffers:
numpy works on the host's memory in place, and a new image comes back by
reference."""

import pyproc


def invert(pixels, width, height):
    import numpy  # here, not at the top: every example loads this package

    # pixels: a writable memoryview of the host's image, not a copy.
    img = numpy.frombuffer(pixels, dtype=numpy.uint8).reshape(height, width)
    img ^= 255
    return int(img.mean())


def gradient(width, height):
    import numpy

    # A new image made in a shared buffer: the host gets the buffer itself.
    img = numpy.frombuffer(pyproc.buffer(width * height), dtype=numpy.uint8)
    img = img.reshape(height, width)
    img[:] = (numpy.arange(width, dtype=numpy.uint32) * 255 // (width - 1)).astype(numpy.uint8)
    return img
