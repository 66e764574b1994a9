"""Jobs and assets: the work offload runs. Each family exports its jobs; ``defs`` collects them, with every
job in ``pipelines/custom/`` (yours: ``offload new job NAME``) found there by Dagster."""

import warnings

import dagster as dg

from pipelines import custom
from pipelines.batch import batch_processor
from pipelines.cleanup import cleanup
from pipelines.content import content_workflow, generate_content, publish_article
from pipelines.email import send_email
from pipelines.hello_world import hello_world
from pipelines.invoicing import invoicing
from pipelines.onboarding import welcome_user
from pipelines.reports import daily_report, daily_report_job
from pipelines.sync import data_pipeline
from pipelines.typed_task import typed_task
from pipelines.video import process_video, video_pipeline
from pipelines.web import resilient_task, scrape_websites
from pipelines.webhooks import clerk_webhook, github_webhook, stripe_webhook

_BUILT_IN = dg.Definitions(
    assets=[daily_report],
    jobs=[
        video_pipeline,
        process_video,
        resilient_task,
        scrape_websites,
        generate_content,
        content_workflow,
        publish_article,
        send_email,
        hello_world,
        typed_task,
        batch_processor,
        welcome_user,
        data_pipeline,
        cleanup,
        invoicing,
        daily_report_job,
        stripe_webhook,
        github_webhook,
        clerk_webhook,
    ],
)

with warnings.catch_warnings():
    # A preview API in Dagster 1.13; dagster is pinned exactly (pyproject.toml), so the warning tells nothing.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    _CUSTOM = dg.load_definitions_from_package_module(custom)

defs = dg.Definitions.merge(_BUILT_IN, _CUSTOM)
