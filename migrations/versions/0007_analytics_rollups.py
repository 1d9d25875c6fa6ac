"""analytics roll-ups: daily sales, visits, cohorts, points, enrollments and coupon uses

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 17:31:26.360313
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_state",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_analytics_state_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_analytics_state")),
    )
    op.create_table(
        "daily_enrollments",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("location_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_enrollments_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", "channel", "location_key", name=op.f("pk_daily_enrollments")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_points",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points_added", sa.BigInteger(), nullable=False),
        sa.Column("points_taken", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_points_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", "kind", name=op.f("pk_daily_points")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_sales",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("location_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("points_earned", sa.BigInteger(), nullable=False),
        sa.Column("points_redeemed", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_sales_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", "location_key", name=op.f("pk_daily_sales")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_visits",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prev_day", sa.Date(), nullable=False),
        sa.Column("nth", sa.Integer(), nullable=False),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_visits_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", "prev_day", "nth", name=op.f("pk_daily_visits")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "monthly_cohorts",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("cohort_month", sa.Date(), nullable=False),
        sa.Column("activity_month", sa.Date(), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_monthly_cohorts_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "cohort_month", "activity_month", name=op.f("pk_monthly_cohorts")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_coupon_uses",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("coupon_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["coupon_id"], ["coupons.id"], name=op.f("fk_daily_coupon_uses_coupon_id_coupons")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_coupon_uses_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", "coupon_id", name=op.f("pk_daily_coupon_uses")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index("ix_cards_program_tier", ["program_id", "tier"], unique=False)
        batch_op.create_index(
            "ix_cards_not_active",
            ["program_id"],
            unique=False,
            sqlite_where=sa.text("status <> 'active'"),
            postgresql_where=sa.text("status <> 'active'"),
        )

    op.create_table(
        "daily_referrals",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("referred", sa.BigInteger(), nullable=False),
        sa.Column("self_referrals", sa.BigInteger(), nullable=False),
        sa.Column("purchased", sa.BigInteger(), nullable=False),
        sa.Column("rewarded", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_daily_referrals_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "day", name=op.f("pk_daily_referrals")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollup_state", sa.SmallInteger(), server_default=sa.text("1"), nullable=False))
        batch_op.add_column(sa.Column("rollup_purchased", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("rollup_rewarded", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            "ix_referrals_rollup_pending",
            ["referee_card_id"],
            unique=False,
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index("ix_customers_program_newest", ["program_id", "created_at", "id"], unique=False)
        batch_op.add_column(sa.Column("rollup_state", sa.SmallInteger(), server_default=sa.text("1"), nullable=False))
        batch_op.create_index(
            "ix_customers_rollup_pending",
            ["program_id"],
            unique=False,
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollup_state", sa.SmallInteger(), server_default=sa.text("1"), nullable=False))
        batch_op.create_index(
            "ix_ledger_entries_rollup_pending",
            ["card_id"],
            unique=False,
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )

    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_index("ix_purchases_card_id")
        batch_op.create_index("ix_purchases_card_history", ["card_id", "created_at", "status"], unique=False)
        batch_op.add_column(sa.Column("rollup_state", sa.SmallInteger(), server_default=sa.text("1"), nullable=False))
        batch_op.create_index(
            "ix_purchases_rollup_pending",
            ["program_id", "card_id"],
            unique=False,
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_purchases_rollup_pending",
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )
        batch_op.drop_column("rollup_state")
        batch_op.drop_index("ix_purchases_card_history")
        batch_op.create_index("ix_purchases_card_id", ["card_id"], unique=False)

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_ledger_entries_rollup_pending",
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )
        batch_op.drop_column("rollup_state")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_program_newest")
        batch_op.drop_index(
            "ix_customers_rollup_pending",
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )
        batch_op.drop_column("rollup_state")

    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_referrals_rollup_pending",
            sqlite_where=sa.text("rollup_state <> 0"),
            postgresql_where=sa.text("rollup_state <> 0"),
        )
        batch_op.drop_column("rollup_rewarded")
        batch_op.drop_column("rollup_purchased")
        batch_op.drop_column("rollup_state")
    op.drop_table("daily_referrals")

    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_cards_not_active",
            sqlite_where=sa.text("status <> 'active'"),
            postgresql_where=sa.text("status <> 'active'"),
        )
        batch_op.drop_index("ix_cards_program_tier")

    op.drop_table("daily_coupon_uses")
    op.drop_table("monthly_cohorts")
    op.drop_table("daily_visits")
    op.drop_table("daily_sales")
    op.drop_table("daily_points")
    op.drop_table("daily_enrollments")
    op.drop_table("analytics_state")
