"""Jobs and assets: the work offload runs. Each family exports its jobs; ``defs`` collects them."""

import dagster as dg

from pipelines.video import process_video, video_pipeline

defs = dg.Definitions(jobs=[video_pipeline, process_video])
