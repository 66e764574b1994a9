"""Jobs that call the web: ``resilient_task`` (one risky HTTP call, retried or aborted by its error) and
``scrape_websites`` (many pages, a CSS selector, a result per URL)."""

from pipelines.web.jobs import resilient_task, scrape_websites

__all__ = ["resilient_task", "scrape_websites"]
