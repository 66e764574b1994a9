"""Jobs and assets: the work offload runs. Each family exports its jobs; ``defs`` collects them."""

import dagster as dg

from pipelines.batch import batch_processor
from pipelines.hello_world import hello_world
from pipelines.onboarding import welcome_user
from pipelines.typed_task import typed_task
from pipelines.video import process_video, video_pipeline

defs = dg.Definitions(
    jobs=[video_pipeline, process_video, hello_world, typed_task, batch_processor, welcome_user]
)
