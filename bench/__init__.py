"""The benchmark scripts, shipped with the package so that `pysid bench` runs them."""
