"""The asv side: what benchmarks/ measures (suite), driving asv (asvtool), `harness nightly`."""
