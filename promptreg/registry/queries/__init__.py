"""Every query on the registry database, behind small named helpers (the only place services meet
the ORM): :mod:`.catalog` (prompts, versions, aliases, audit log), :mod:`.results` (eval runs, gate
results, drift reports, environments, content references) and :mod:`.schedules`.

Use: ``from promptreg.registry import queries as q`` then, inside ``with registry.session() as s:``,
``q.get_prompt(s, name)``, ``q.resolve(s, ref)``, ... Each takes the session first (compose them in
one transaction), raises a typed not-found error where a row must exist, and never commits.
"""

from sqlalchemy.exc import IntegrityError as DuplicateRowError

from promptreg.registry.models import utcnow
from promptreg.registry.queries.catalog import *  # noqa: F403
from promptreg.registry.queries.catalog import __all__ as _catalog
from promptreg.registry.queries.results import *  # noqa: F403
from promptreg.registry.queries.results import __all__ as _results
from promptreg.registry.queries.schedules import *  # noqa: F403
from promptreg.registry.queries.schedules import __all__ as _schedules

#: What a unique constraint violated by a concurrent writer raises at flush/commit (retry or conflict).
DuplicateRowError = DuplicateRowError

__all__ = ["DuplicateRowError", "utcnow", *_catalog, *_results, *_schedules]
