"""Retention: ``cleanup`` removes what outlived its age; ``cleaners.RETENTIONS`` lists what it cleans."""

from pipelines.cleanup.jobs import cleanup

__all__ = ["cleanup"]
