"""Functions that pyproc-bench and the Python baselines call."""
