/* The worker's Python side, compiled into the binary as NUL-terminated
 * source text so an installed worker never imports a stale copy. */
    .section .rodata
    .global pyproc_hub_source
    .type pyproc_hub_source, @object
pyproc_hub_source:
    .incbin "embed/python/hub.py"
    .byte 0
    .size pyproc_hub_source, . - pyproc_hub_source
    .section .note.GNU-stack,"",@progbits
