"""The seed's ``data_pipeline``: an incremental extract -> transform -> load from one SQL table to another."""

from pipelines.sync.jobs import data_pipeline

__all__ = ["data_pipeline"]
