"""Folding purchases, ledger entries and enrollments into the analytics roll-ups (app/models/analytics.py).

Why roll-ups rather than queries over the raw rows: a chain's program holds millions of purchases, and the
dashboard must answer in well under a second. Why folded on read (or by `flask stats refresh`) rather than on
write: every purchase of a day and location would update the same roll-up row, so concurrent tills would queue
on its lock, and the purchase path would pay for statements a dashboard reads once in a while. Instead each row
carries a `rollup_state` that the insert sets by server default (no extra statement), and a refresh folds every
row that is not settled yet, with set-based SQL:

- sales and coupon uses: + a new committed purchase, - a purchase voided after it was counted;
- visits and cohorts depend on a member's whole purchase history (which purchase it was, the previous one's
  day), so for every member with an unsettled purchase the history as it was counted is taken out and the
  history as it is now is put in, each computed with window functions;
- points and enrollments: + each new ledger entry or member (those rows never change).

A refresh must see one consistent snapshot: on PostgreSQL it runs at REPEATABLE READ (`refresh_isolation`), so
a row written meanwhile is left for the next refresh, and a row changed under it makes it fail and be retried;
on SQLite the write lock (BEGIN IMMEDIATE) gives the same. The program's analytics_state row is taken first, so
two refreshes of one program never interleave.

Bulk loaders (the synthetic data command) insert rows already settled (rollup_state 0) and call
`rebuild_rollups`, which recomputes one program's roll-ups from all of its rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.models import ROLLUP_NEW, ROLLUP_SETTLED, ROLLUP_VOIDED_COUNTED, ROLLUP_VOIDED_NEW

# "+c.program_id" below is the program filter written so that it cannot drive the query: both engines then start
# from the few unsettled rows (a partial index) and look each card up by key, instead of walking the program's
# million cards (SQLite's documented way to keep a term from choosing the index; a no-op on PostgreSQL).
ROLLUP_TABLES = (
    "daily_sales", "daily_visits", "monthly_cohorts", "daily_points", "daily_enrollments", "daily_coupon_uses",
    "daily_referrals",
)

# What a purchase in each unsettled state adds to the sales roll-up when it is folded in.
_SALES_SIGN = (
    f"CASE p.rollup_state WHEN {ROLLUP_NEW} THEN (CASE WHEN p.status = 'committed' THEN 1 ELSE 0 END) "
    f"WHEN {ROLLUP_VOIDED_COUNTED} THEN -1 ELSE 0 END"
)
# The purchases a refresh counted last time: committed and settled, or voided since then.
_COUNTED_BEFORE = (
    f"((p.status = 'committed' AND p.rollup_state = {ROLLUP_SETTLED}) OR p.rollup_state = {ROLLUP_VOIDED_COUNTED})"
)
_COUNTED_NOW = "p.status = 'committed'"
assert ROLLUP_VOIDED_NEW not in (ROLLUP_NEW, ROLLUP_VOIDED_COUNTED)  # adds nothing, takes nothing: never counted


@dataclass(frozen=True)
class _Sql:
    """The few expressions the two engines spell differently."""

    dialect: str

    def day(self, column: str) -> str:
        """The UTC calendar day of a timestamp column (ISO text on SQLite, a date on PostgreSQL)."""
        if self.dialect == "postgresql":
            return f"CAST(timezone('UTC', {column}) AS date)"
        return f"date({column})"

    def month(self, column: str) -> str:
        """The first day of the UTC calendar month of a timestamp column."""
        if self.dialect == "postgresql":
            return f"CAST(date_trunc('month', timezone('UTC', {column})) AS date)"
        return f"strftime('%Y-%m-01', {column})"


def _sql(session: Session) -> _Sql:
    return _Sql(session.get_bind().dialect.name)


def refresh_isolation(dialect: str) -> str | None:
    """The isolation level a refresh's own transaction needs (None: the engine's default already gives it)."""
    return "REPEATABLE READ" if dialect == "postgresql" else None


def has_pending(session: Session, program_id: int) -> bool:
    """Whether anything of the program waits to be folded in: three lookups in small partial indexes."""
    row = session.execute(text(
        "SELECT EXISTS (SELECT 1 FROM purchases WHERE program_id = :p AND rollup_state <> 0)"
        " OR EXISTS (SELECT 1 FROM customers WHERE program_id = :p AND rollup_state <> 0)"
        " OR EXISTS (SELECT 1 FROM ledger_entries l JOIN cards c ON c.id = l.card_id"
        "            WHERE l.rollup_state <> 0 AND +c.program_id = :p)"
    ), {"p": program_id}).scalar()
    return bool(row)


def refresh_rollups(session: Session, program_id: int, now: dt.datetime) -> bool:
    """Fold the program's unsettled rows into its roll-ups and settle them; False when there was nothing.

    Run it in a transaction of its own at `refresh_isolation` (see the module docstring); it flushes, the caller
    commits.
    """
    if not has_pending(session, program_id):
        return False
    _take_program(session, program_id, now)
    sql = _sql(session)
    pending_purchases = "p.program_id = :p AND p.rollup_state <> 0"
    _fold_sales(session, sql, program_id, pending_purchases)
    dirty_cards = f"SELECT p.card_id FROM purchases p WHERE {pending_purchases}"
    for counted, sign in ((_COUNTED_BEFORE, -1), (_COUNTED_NOW, 1)):
        _fold_visits(session, sql, program_id, f"p.card_id IN ({dirty_cards}) AND {counted}", sign)
    _fold_points(session, sql, program_id, unsettled_only=True)
    _fold_enrollments(session, sql, program_id, "m.rollup_state <> 0")
    _fold_referrals(session, sql, program_id,
                    "SELECT n.id FROM referrals n WHERE n.rollup_state <> 0"
                    f" UNION SELECT d.id FROM referrals d WHERE d.referee_card_id IN ({dirty_cards})")
    _settle(session, program_id)
    return True


def rebuild_rollups(session: Session, program_id: int, now: dt.datetime | None = None) -> None:
    """Recompute all of one program's roll-ups from its purchases, ledger and members, and settle every row.

    For bulk loads and repairs; run it like a refresh (`refresh_isolation`), and the caller commits. Rows written
    meanwhile are outside its snapshot and stay unsettled for the next refresh.
    """
    _take_program(session, program_id, now)
    for table in ROLLUP_TABLES:
        session.execute(text(f"DELETE FROM {table} WHERE program_id = :p"), {"p": program_id})  # noqa: S608
    sql = _sql(session)
    _fold_sales(session, sql, program_id, "p.program_id = :p AND p.status = 'committed'", sign="1")
    _fold_visits(session, sql, program_id, f"p.program_id = :p AND {_COUNTED_NOW}", 1)
    _fold_points(session, sql, program_id, unsettled_only=False)
    _fold_enrollments(session, sql, program_id, "1 = 1")
    session.execute(text(
        "UPDATE referrals SET rollup_purchased = false, rollup_rewarded = false, rollup_state = 1"
        " WHERE referee_card_id IN (SELECT c.id FROM cards c WHERE c.program_id = :p)"
    ), {"p": program_id})
    _fold_referrals(session, sql, program_id, "SELECT a.id FROM referrals a")
    _settle(session, program_id)


def _take_program(session: Session, program_id: int, now: dt.datetime | None) -> None:
    # An upsert both creates the row and locks it until commit: a second refresh waits here.
    session.execute(text(
        "INSERT INTO analytics_state (program_id, refreshed_at) VALUES (:p, :now) "
        "ON CONFLICT (program_id) DO UPDATE SET refreshed_at = excluded.refreshed_at"
    ), {"p": program_id, "now": now})


def _upsert(table: str, keys: str, sums: tuple[str, ...]) -> str:
    """The ON CONFLICT tail that adds a select's sums to existing roll-up rows."""
    updates = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in sums)
    return f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"


def _fold_sales(session: Session, sql: _Sql, program_id: int, which: str, sign: str = _SALES_SIGN) -> None:
    day = sql.day("p.created_at")
    # SQLite needs a WHERE in an INSERT ... SELECT ... ON CONFLICT (a parsing ambiguity), hence "s <> 0".
    session.execute(text(
        "INSERT INTO daily_sales (program_id, day, location_key, purchases, amount, discount, amount_due,"
        " points_earned, points_redeemed)"
        " SELECT :p, day, location_key, SUM(s), SUM(s * amount), SUM(s * discount), SUM(s * amount_due),"
        " SUM(s * points_earned), SUM(s * points_redeemed) FROM ("
        f"  SELECT {day} AS day, COALESCE(p.location_id, 0) AS location_key, {sign} AS s, p.amount, p.discount,"
        "   p.amount_due, p.points_earned, p.points_redeemed"
        f"  FROM purchases p WHERE {which}"
        " ) AS d WHERE s <> 0 GROUP BY day, location_key"
        + _upsert("daily_sales", "program_id, day, location_key",
                  ("purchases", "amount", "discount", "amount_due", "points_earned", "points_redeemed"))
    ), {"p": program_id})
    session.execute(text(
        "INSERT INTO daily_coupon_uses (program_id, day, coupon_id, uses, discount, amount, amount_due)"
        " SELECT :p, day, coupon_id, SUM(s), SUM(s * discount), SUM(s * amount), SUM(s * amount_due) FROM ("
        f"  SELECT {day} AS day, u.coupon_id, {sign} AS s, u.discount, p.amount, p.amount_due"
        f"  FROM purchases p JOIN coupon_uses u ON u.purchase_id = p.id WHERE {which}"
        " ) AS d WHERE s <> 0 GROUP BY day, coupon_id"
        + _upsert("daily_coupon_uses", "program_id, day, coupon_id", ("uses", "discount", "amount", "amount_due"))
    ), {"p": program_id})


def _fold_visits(session: Session, sql: _Sql, program_id: int, which: str, sign: int) -> None:
    """Add (sign 1) or take out (sign -1) the visits and cohort months of the purchase histories `which`
    selects: each purchase with the day of the one before it (or of enrollment) and its number."""
    history = (
        "SELECT p.card_id, p.created_at,"
        " LAG(p.created_at) OVER (PARTITION BY p.card_id ORDER BY p.created_at, p.id) AS prev_at,"
        " ROW_NUMBER() OVER (PARTITION BY p.card_id ORDER BY p.created_at, p.id) AS n"
        f" FROM purchases p WHERE {which}"
    )
    enrolled = "JOIN cards c ON c.id = h.card_id JOIN customers m ON m.id = c.customer_id"
    session.execute(text(
        "INSERT INTO daily_visits (program_id, day, prev_day, nth, purchases)"
        f" SELECT :p, day, prev_day, nth, {sign} * COUNT(*) FROM ("
        f"  SELECT {sql.day('h.created_at')} AS day,"
        f"   CASE WHEN h.prev_at IS NULL THEN {sql.day('m.created_at')} ELSE {sql.day('h.prev_at')} END AS prev_day,"
        "   CASE WHEN h.n >= 3 THEN 3 ELSE h.n END AS nth"
        f"  FROM ({history}) AS h {enrolled}"
        " ) AS v WHERE 1 = 1 GROUP BY day, prev_day, nth"
        + _upsert("daily_visits", "program_id, day, prev_day, nth", ("purchases",))
    ), {"p": program_id})
    session.execute(text(
        "INSERT INTO monthly_cohorts (program_id, cohort_month, activity_month, members)"
        f" SELECT :p, cohort_month, activity_month, {sign} * COUNT(*) FROM ("
        f"  SELECT {sql.month('m.created_at')} AS cohort_month, {sql.month('h.created_at')} AS activity_month"
        f"  FROM ({history}) AS h {enrolled}"
        f"  WHERE h.prev_at IS NULL OR {sql.month('h.prev_at')} <> {sql.month('h.created_at')}"
        " ) AS v WHERE 1 = 1 GROUP BY cohort_month, activity_month"
        + _upsert("monthly_cohorts", "program_id, cohort_month, activity_month", ("members",))
    ), {"p": program_id})


def _fold_points(session: Session, sql: _Sql, program_id: int, *, unsettled_only: bool) -> None:
    """Points per day and kind, counting only entries of purchases that stand, and no void entries. Since a void
    reverses its purchase's entries exactly, the sum of everything is still what the cards hold.

    A refresh adds the new entries and lets each new void entry take its purchase's entries on the same card (the
    member's, or the referrer's bonus) back out, on the days and under the kinds they were folded in. A rebuild
    reads every entry once and leaves out those of voided purchases, which comes to the same (and does not
    depend on the planner finding the few void entries among millions)."""
    day = sql.day("l.created_at")
    if unsettled_only:
        source = (
            # CROSS JOIN: SQLite then starts from the unsettled entries (PostgreSQL plans it as an inner join).
            f"SELECT {day} AS day, l.kind, l.points, 1 AS sign FROM ledger_entries l CROSS JOIN cards c"
            " WHERE c.id = l.card_id AND +c.program_id = :p AND l.kind <> 'void' AND l.rollup_state <> 0"
            f" UNION ALL SELECT {day} AS day, l.kind, l.points, -1 AS sign"
            " FROM ledger_entries v JOIN ledger_entries l ON l.purchase_id = v.purchase_id AND l.card_id = v.card_id"
            " JOIN cards c ON c.id = l.card_id"
            " WHERE v.rollup_state <> 0 AND v.kind = 'void' AND +c.program_id = :p AND l.kind <> 'void'"
        )
    else:
        source = (
            f"SELECT {day} AS day, l.kind, l.points, 1 AS sign FROM ledger_entries l JOIN cards c ON c.id = l.card_id"
            " LEFT JOIN purchases p ON p.id = l.purchase_id"
            " WHERE c.program_id = :p AND l.kind <> 'void' AND (l.purchase_id IS NULL OR p.status = 'committed')"
        )
    session.execute(text(
        "INSERT INTO daily_points (program_id, day, kind, points_added, points_taken, entries)"
        " SELECT :p, day, kind, SUM(CASE WHEN points > 0 THEN sign * points ELSE 0 END),"
        " SUM(CASE WHEN points < 0 THEN -sign * points ELSE 0 END), SUM(sign) FROM ("
        f"  {source}"
        " ) AS e WHERE 1 = 1 GROUP BY day, kind"
        + _upsert("daily_points", "program_id, day, kind", ("points_added", "points_taken", "entries"))
    ), {"p": program_id})


def _fold_enrollments(session: Session, sql: _Sql, program_id: int, which: str) -> None:
    session.execute(text(
        "INSERT INTO daily_enrollments (program_id, day, channel, location_key, members)"
        " SELECT :p, day, channel, location_key, COUNT(*) FROM ("
        f"  SELECT {sql.day('m.created_at')} AS day, m.channel, COALESCE(m.location_id, 0) AS location_key"
        f"  FROM customers m WHERE m.program_id = :p AND {which}"
        " ) AS e WHERE 1 = 1 GROUP BY day, channel, location_key"
        + _upsert("daily_enrollments", "program_id, day, channel, location_key", ("members",))
    ), {"p": program_id})


def _fold_referrals(session: Session, sql: _Sql, program_id: int, which: str) -> None:
    """Add new referrals, and for the chosen ones the change in whether their new member has bought and been
    paid the bonuses since it was last counted; then remember what is counted now."""
    bought = "CASE WHEN c.purchase_count > 0 THEN 1 ELSE 0 END"
    rewarded = "CASE WHEN r.bonus_purchase_id IS NOT NULL THEN 1 ELSE 0 END"
    chosen = f"FROM referrals r JOIN cards c ON c.id = r.referee_card_id WHERE +c.program_id = :p AND r.id IN ({which})"
    session.execute(text(
        "INSERT INTO daily_referrals (program_id, day, referred, self_referrals, purchased, rewarded)"
        " SELECT :p, day, SUM(referred), SUM(self_referral), SUM(purchased), SUM(rewarded) FROM ("
        f"  SELECT {sql.day('r.created_at')} AS day,"
        "   CASE WHEN r.rollup_state <> 0 THEN 1 ELSE 0 END AS referred,"
        "   CASE WHEN r.rollup_state <> 0 AND r.self_referral THEN 1 ELSE 0 END AS self_referral,"
        f"   {bought} - CASE WHEN r.rollup_purchased THEN 1 ELSE 0 END AS purchased,"
        f"   {rewarded} - CASE WHEN r.rollup_rewarded THEN 1 ELSE 0 END AS rewarded"
        f"  {chosen}"
        " ) AS f WHERE 1 = 1 GROUP BY day"
        + _upsert("daily_referrals", "program_id, day", ("referred", "self_referrals", "purchased", "rewarded"))
    ), {"p": program_id})
    session.execute(text(
        "UPDATE referrals SET rollup_state = 0,"
        " rollup_purchased = (SELECT c.purchase_count > 0 FROM cards c WHERE c.id = referrals.referee_card_id),"
        " rollup_rewarded = (bonus_purchase_id IS NOT NULL)"
        f" WHERE id IN (SELECT r.id {chosen})"
    ), {"p": program_id})


def _settle(session: Session, program_id: int) -> None:
    # `rollup_state <> 0` is also the partial indexes' predicate, written out so both engines use them.
    unsettled = "rollup_state <> 0"
    session.execute(text(f"UPDATE purchases SET rollup_state = 0 WHERE program_id = :p AND {unsettled}"),
                    {"p": program_id})
    session.execute(text(f"UPDATE customers SET rollup_state = 0 WHERE program_id = :p AND {unsettled}"),
                    {"p": program_id})
    session.execute(text(
        f"UPDATE ledger_entries SET rollup_state = 0 WHERE {unsettled}"
        " AND EXISTS (SELECT 1 FROM cards c WHERE c.id = ledger_entries.card_id AND c.program_id = :p)"
    ), {"p": program_id})
