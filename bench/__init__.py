"""Benchmarks: measured side by side in one run, never as timed tests.

Timings on shared machines are too noisy to assert on in a test suite; the
benchmarks instead report ratios of variants alternated within one run, with
their spread, so a reader can judge them. See ``bench/README.md``.
"""
