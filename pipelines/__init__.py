"""Jobs and assets: the work offload runs. Each family exports its jobs; ``defs`` collects them."""

import dagster as dg

from pipelines.video import process_video, video_pipeline
from pipelines.web import resilient_task, scrape_websites

defs = dg.Definitions(jobs=[video_pipeline, process_video, resilient_task, scrape_websites])
