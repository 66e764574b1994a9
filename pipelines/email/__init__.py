"""Transactional email as a job of its own."""

from pipelines.email.jobs import send_email

__all__ = ["send_email"]
