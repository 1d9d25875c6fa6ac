"""Which cards' wallet passes a transaction changed, handed to whoever republishes them once it commits.

Domain functions that change what a pass shows (points, tier, serial, status, the program's look) note it on
the session; the app's commit hook passes the notes to the background publisher after the commit, and drops
them on a rollback. A note never slows the writer: it is a set in memory.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

_CARDS = "pass_changes.cards"
_PROGRAMS = "pass_changes.programs"


def note_card_changed(session: Session, card_id: int) -> None:
    session.info.setdefault(_CARDS, set()).add(card_id)


def note_program_changed(session: Session, program_id: int) -> None:
    """Every pass of the program shows something new (its name, look or rules)."""
    session.info.setdefault(_PROGRAMS, set()).add(program_id)


def take_changes(session: Session) -> tuple[set[int], set[int]]:
    """The card ids and program ids noted since the last take, clearing both."""
    return session.info.pop(_CARDS, set()), session.info.pop(_PROGRAMS, set())
