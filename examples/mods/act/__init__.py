"""The demo's sub: what examples/demo.c loads into its workers."""
