"""Functions the end-to-end tests call in real workers."""
