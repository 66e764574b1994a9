#!/usr/bin/env bash
# Set up (virtualenv + install) and run the main job, video_pipeline, on the embedded default.
. "$(dirname "$0")/setup.sh"
exec .venv/bin/python examples/demo.py
