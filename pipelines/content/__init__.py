"""AI content: texts and SEO articles with hero images, through any OpenAI-compatible API."""

from pipelines.content.jobs import content_workflow, generate_content

__all__ = ["content_workflow", "generate_content"]
