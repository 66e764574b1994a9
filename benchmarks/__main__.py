"""``python -m benchmarks [name ...]``: run every benchmark, or the named ones."""

import sys

from benchmarks.run import main

sys.exit(main())
