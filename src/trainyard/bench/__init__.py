"""Benchmarks: `python -m trainyard.bench` (CPU cases -> docs/benchmarks.{md,json}) and
`python -m trainyard.bench --gpu` (CUDA correctness + speed checks). Measuring tools, not
tests: nothing here asserts a speed."""
