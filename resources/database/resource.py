"""``AppDatabase``, the Dagster resource of the app database: its URL, its engine, and the migration a run
makes on setup. The queries are those of the aggregates' mixins (one module each, see access.py)."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from offload import paths
from offload.errors import ConfigurationError, configuration_checked, require_settings
from resources.database import engine as engines
from resources.database.activity import ActivityReport
from resources.database.articles import Articles
from resources.database.github_events import GithubEvents
from resources.database.invoices import Invoices
from resources.database.payments import Payments
from resources.database.usage import Usage
from resources.database.users import Users

# Migrated in this process already: later runs skip even the version check.
_MIGRATED: set[str] = set()


def embedded_url() -> str:
    """The embedded default: a SQLite file under the data directory."""
    return f"sqlite:///{paths.data_dir() / 'offload.db'}"


class AppDatabase(
    Users, Usage, Articles, Payments, ActivityReport, Invoices, GithubEvents, dg.ConfigurableResource
):
    """The application's own tables (not Dagster's run storage)."""

    url: str = Field(description="SQLAlchemy URL: sqlite:///path or postgresql://... (DATABASE_URL).")

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        with configuration_checked(context):
            require_settings(self, {"url": "DATABASE_URL"})
            if self.url not in _MIGRATED:
                self.migrate()
                _MIGRATED.add(self.url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def engine(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = engines.create_engine(self.url)
            except sa.exc.ArgumentError:  # not a URL at all; the message would quote it, password and all
                raise ConfigurationError(
                    "DATABASE_URL: not a database URL; use postgresql://user:password@host/db or sqlite:///path"
                ) from None
        return self._engine

    def migrate(self) -> str:
        """Bring the schema to the newest migration; safe to call at any time, from several processes."""
        return engines.migrate(self.engine())

    def schema_revision(self) -> str | None:
        return engines.current_revision(self.engine())
