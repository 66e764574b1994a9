"""``python -m resources.database``: bring the app database at ``DATABASE_URL`` (or the embedded SQLite file)
to the newest migration and print its revision. Runs migrate themselves when they set the database up; this
is for a deploy step that wants the schema ready before new code serves runs."""

import os

from offload.log import redact
from resources.database import AppDatabase, embedded_url

url = os.environ.get("DATABASE_URL") or embedded_url()
database = AppDatabase(url=url)
print(f"{redact(url)}: schema at revision {database.migrate()}")
database.engine().dispose()
