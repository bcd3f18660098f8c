"""The service's whole schema: every package's migrations in version order.

Each package owns its tables and migrations (``monitor.schema``, ``judges.schema``,
``retrain.schema``, ``driftloop.api.schema``); only this composition root knows them all and
passes them to ``Store.open``. Versions are global, so a file written before the split migrates
as it always did.

>>> [m.version for m in MIGRATIONS]
[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
"""

from __future__ import annotations

from driftloop.api.schema import MIGRATIONS as API_MIGRATIONS
from judges.schema import MIGRATIONS as JUDGES_MIGRATIONS
from monitor.schema import MIGRATIONS as MONITOR_MIGRATIONS
from monitor.schema import Migration
from monitor.store import ordered
from retrain.schema import MIGRATIONS as RETRAIN_MIGRATIONS

MIGRATIONS: tuple[Migration, ...] = ordered(
    (*MONITOR_MIGRATIONS, *API_MIGRATIONS, *JUDGES_MIGRATIONS, *RETRAIN_MIGRATIONS)
)
