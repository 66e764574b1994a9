"""Monthly invoices from the usage table: ``invoicing``."""

from pipelines.invoicing.jobs import invoicing

__all__ = ["invoicing"]
