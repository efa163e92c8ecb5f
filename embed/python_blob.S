/* The worker's Python side, compiled into the binary as NUL-terminated
 * source text so an installed worker never imports a stale copy. */
    .section .rodata
    .global pyproc_hub_source
    .type pyproc_hub_source, @object
pyproc_hub_source:
    .incbin "embed/python/hub.py"
    .byte 0
    .size pyproc_hub_source, . - pyproc_hub_source

/* The same compiled by the build's Python (marshal format), and its size;
 * used when it loads in the Python that runs (boot.c). */
    .global pyproc_hub_code
    .type pyproc_hub_code, @object
pyproc_hub_code:
    .incbin "hub.marshal"
    .size pyproc_hub_code, . - pyproc_hub_code
    .global pyproc_hub_code_size
    .type pyproc_hub_code_size, @object
    .balign 8
pyproc_hub_code_size:
    .quad pyproc_hub_code_size - pyproc_hub_code
    .size pyproc_hub_code_size, 8
    .section .note.GNU-stack,"",@progbits
