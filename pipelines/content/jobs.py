"""``generate_content`` (one text) and ``content_workflow`` (an SEO article with a hero image, published).

``content_workflow`` is one step per stage: outline -> write_article -> optimise_seo -> hero_image ->
publish. The run config is the payload itself (see ``offload.payload``).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.runtime.concurrency import Queue
from pipelines.content.payload import ContentWorkflowPayload, GenerateContentPayload
from pipelines.content.steps import generate, hero_image, optimise_seo, outline, publish, write_article

# Paid API calls: at most 2 runs per user at once.
QUEUE = Queue("ai", key_field="user_id", key_limit=2)


@dg.graph
def content_workflow_graph() -> Any:
    article = optimise_seo(write_article(outline()))
    return publish(article, hero_image(article))


def _first_step(name: str) -> Any:
    def to_run_config(payload: dg.Config) -> dict[str, Any]:
        return {"ops": {name: {"config": payload.model_dump()}}}

    return to_run_config


content_workflow = content_workflow_graph.to_job(
    name="content_workflow",
    description="Outline, write and SEO-optimise an article, make its hero image, save and store it.",
    config=payload_mapping(ContentWorkflowPayload, _first_step("outline")),
    tags={"offload/kind": "ai", **QUEUE.job_tags()},
)


@dg.graph
def generate_content_graph() -> Any:
    return generate()


generate_content = generate_content_graph.to_job(
    name="generate_content",
    description="Write a text on a topic in a tone (professional, casual, technical) and length.",
    config=payload_mapping(GenerateContentPayload, _first_step("generate")),
    tags={"offload/kind": "ai", **QUEUE.job_tags()},
)
