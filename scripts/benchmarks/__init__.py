"""Benchmark scripts (command-line tools, not tests). Each writes its section of docs/BENCHMARKS.md."""
