"""``python -m benchmarks``: run every benchmark, each beside its baseline."""

import sys

from benchmarks import trigger_to_start

BENCHMARKS = [trigger_to_start]

if __name__ == "__main__":
    sys.exit(max(benchmark.main([]) for benchmark in BENCHMARKS))
