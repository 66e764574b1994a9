"""HTML templates for documents offload's jobs write (reports, invoices): Jinja2 with autoescaping, and an
error for any name the template uses that the caller did not pass (``StrictUndefined``), so a typo fails
the step instead of leaving a blank in a customer's invoice.

Compiled on first render: Jinja2 costs about half a second to import, which every process that loads the
code location (each ``dagster job execute``, each run worker) would otherwise pay for two jobs' documents.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


class HtmlTemplate:
    def __init__(self, source: str) -> None:
        self.source = source

    @functools.cached_property
    def _compiled(self) -> jinja2.Template:
        import jinja2

        environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        return environment.from_string(self.source)

    def render(self, **values: Any) -> str:
        return self._compiled.render(**values)
