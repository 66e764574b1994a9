"""AI content: texts and SEO articles with hero images, through any OpenAI-compatible API."""

from pipelines.content.approval import publish_article
from pipelines.content.jobs import content_workflow, generate_content

__all__ = ["content_workflow", "generate_content", "publish_article"]
