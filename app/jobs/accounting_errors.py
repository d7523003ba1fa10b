"""How an accounting sink's failures become outbox outcomes, for every handler that books.

- AccountingAuthError (revoked, never connected, unusable token key): the entry waits (ParkedError),
  its attempt not counted, and one admin exception asks for a reconnect;
- MatchError (no invoice, or several, for a number): the entry is dead with an exception of kind
  `accounting_match` carrying the message; "Retry" in the exceptions queue runs it again;
- ConnectorError: retried or dead by its `retryable`; OSError (the journal file): retried;
- ValueError (an entry whose lines do not add up, refused before anything is sent): dead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from app.core import accounting_connection
from app.core.outbox import ParkedError, PermanentError, RetryableError
from sync.base import AccountingAuthError, ConnectorError, MatchError

if TYPE_CHECKING:
    from app.services import Services

MATCH_EXCEPTION = "accounting_match"


@contextmanager
def booking(services: Services) -> Iterator[None]:
    """Wrap one call to `services.accounting`."""
    try:
        yield
    except AccountingAuthError as exc:
        accounting_connection.connection_needed(
            services.store,
            services.clock,
            entity_id=services.entity_id,
            kind=services.config.accounting.kind,
            reason=str(exc),
        )
        raise ParkedError(f"waiting for the accounting connection: {exc}") from exc
    except MatchError as exc:
        raise PermanentError(str(exc), exception_kind=MATCH_EXCEPTION) from exc
    except ConnectorError as exc:
        if exc.retryable:
            raise RetryableError(str(exc), retry_after=exc.retry_after) from exc
        raise PermanentError(str(exc)) from exc
    except OSError as exc:
        raise RetryableError(f"journal file: {exc}") from exc
    except ValueError as exc:
        # The entry itself does not add up (lines against its total): no retry changes that.
        raise PermanentError(f"the booking was refused before sending: {exc}") from exc
