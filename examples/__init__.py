"""Runnable examples: the demo behind scripts/demo.sh, the FastAPI app, and payload files for ``-c``."""
