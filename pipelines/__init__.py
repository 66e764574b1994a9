"""Jobs and assets: the work offload runs. Each family exports its jobs; ``defs`` collects them."""

import dagster as dg

from pipelines.content import content_workflow, generate_content
from pipelines.email import send_email
from pipelines.video import process_video, video_pipeline
from pipelines.web import resilient_task, scrape_websites
from pipelines.webhooks import clerk_webhook, github_webhook, stripe_webhook

defs = dg.Definitions(
    jobs=[
        video_pipeline,
        process_video,
        resilient_task,
        scrape_websites,
        generate_content,
        content_workflow,
        send_email,
        stripe_webhook,
        github_webhook,
        clerk_webhook,
    ]
)
