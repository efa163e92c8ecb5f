"""A sub that makes its worker exit at load while a marker file exists."""
