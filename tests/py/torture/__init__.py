"""Functions the concurrency torture test (tests/torture.c) calls."""
