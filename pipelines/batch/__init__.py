"""Batch processing: many items, fanned out in batches, summarized at the end."""

from pipelines.batch.jobs import batch_processor

__all__ = ["batch_processor"]
