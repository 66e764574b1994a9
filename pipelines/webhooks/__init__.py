"""Webhook handler jobs: ``stripe_webhook``, ``github_webhook``, ``clerk_webhook`` (``jobs.py``); one module
per provider holds its event handlers."""

from pipelines.webhooks.jobs import clerk_webhook, github_webhook, stripe_webhook

__all__ = ["clerk_webhook", "github_webhook", "stripe_webhook"]
