"""loyalty mechanics: coupons, offers, rewards, referrals; stamps, cashback, birthdays and visit counts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 15:50:03.846316
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coupon_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_coupon_batches_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_batches")),
    )
    with op.batch_alter_table("coupon_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coupon_batches_program_id"), ["program_id"], unique=False)

    op.create_table(
        "offers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column(
            "discount_type",
            sa.Enum("percent", "fixed", name="offer_discount_type", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("discount_value", sa.BigInteger(), nullable=False),
        sa.Column("min_basket", sa.BigInteger(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_offers_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offers")),
    )
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offers_program_id"), ["program_id"], unique=False)

    op.create_table(
        "rewards",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("points_cost", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_rewards_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rewards_program_id"), ["program_id"], unique=False)

    op.create_table(
        "coupons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("single_use", "reusable", name="coupon_kind", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column(
            "discount_type",
            sa.Enum("percent", "fixed", name="coupon_discount_type", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("discount_value", sa.BigInteger(), nullable=False),
        sa.Column("min_basket", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        sa.Column("member_only", sa.Boolean(), nullable=False),
        sa.Column("stackable", sa.Boolean(), nullable=False),
        sa.Column("assigned_card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["assigned_card_id"], ["cards.id"], name=op.f("fk_coupons_assigned_card_id_cards")),
        sa.ForeignKeyConstraint(["batch_id"], ["coupon_batches.id"], name=op.f("fk_coupons_batch_id_coupon_batches")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_coupons_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("program_id", "code", name=op.f("uq_coupons_program_id_code")),
    )
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coupons_assigned_card_id"), ["assigned_card_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_coupons_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_coupons_program_id"), ["program_id"], unique=False)

    op.create_table(
        "coupon_uses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("coupon_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("purchase_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_coupon_uses_card_id_cards")),
        sa.ForeignKeyConstraint(["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_uses_coupon_id_coupons")),
        sa.ForeignKeyConstraint(["purchase_id"], ["purchases.id"], name=op.f("fk_coupon_uses_purchase_id_purchases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_uses")),
    )
    with op.batch_alter_table("coupon_uses", schema=None) as batch_op:
        batch_op.create_index("ix_coupon_uses_coupon_card", ["coupon_id", "card_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_coupon_uses_purchase_id"), ["purchase_id"], unique=False)

    op.create_table(
        "referrals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("referrer_card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("referee_card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("self_referral", sa.Boolean(), nullable=False),
        sa.Column("bonus_purchase_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bonus_purchase_id"], ["purchases.id"], name=op.f("fk_referrals_bonus_purchase_id_purchases")
        ),
        sa.ForeignKeyConstraint(["referee_card_id"], ["cards.id"], name=op.f("fk_referrals_referee_card_id_cards")),
        sa.ForeignKeyConstraint(["referrer_card_id"], ["cards.id"], name=op.f("fk_referrals_referrer_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("referee_card_id", name=op.f("uq_referrals_referee_card_id")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referrals_referrer_card_id"), ["referrer_card_id"], unique=False)

    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stamps", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("vouchers", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("cashback", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("purchase_count", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("first_purchase_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_purchase_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("referral_code", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("enrolled_device", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("birthday_bonus_year", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expiry_warned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_cards_referral_code"), ["referral_code"])

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birthday_month", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("birthday_day", sa.Integer(), nullable=True))

    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="points"))

    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("effects", sa.JSON(), nullable=True))

    # Cards that already have purchases: their count and first and last purchase, for the second visit,
    # referral bonuses and expiry. Then the defaults above, meant only for existing rows, go.
    op.execute(
        "UPDATE cards SET"
        " purchase_count = (SELECT COUNT(*) FROM purchases p WHERE p.card_id = cards.id AND p.status = 'committed'),"
        " first_purchase_at = (SELECT MIN(p.created_at) FROM purchases p"
        "                      WHERE p.card_id = cards.id AND p.status = 'committed'),"
        " last_purchase_at = (SELECT MAX(p.created_at) FROM purchases p"
        "                     WHERE p.card_id = cards.id AND p.status = 'committed')"
    )
    with op.batch_alter_table("cards", schema=None) as batch_op:
        for column in ("stamps", "vouchers", "cashback", "purchase_count"):
            batch_op.alter_column(column, server_default=None)
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.alter_column("kind", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("purchases", schema=None) as batch_op:
        batch_op.drop_column("effects")

    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("kind")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("birthday_day")
        batch_op.drop_column("birthday_month")

    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_cards_referral_code"), type_="unique")
        batch_op.drop_column("expiry_warned_at")
        batch_op.drop_column("birthday_bonus_year")
        batch_op.drop_column("enrolled_device")
        batch_op.drop_column("referral_code")
        batch_op.drop_column("last_purchase_at")
        batch_op.drop_column("first_purchase_at")
        batch_op.drop_column("purchase_count")
        batch_op.drop_column("cashback")
        batch_op.drop_column("vouchers")
        batch_op.drop_column("stamps")

    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrals_referrer_card_id"))

    op.drop_table("referrals")
    with op.batch_alter_table("coupon_uses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupon_uses_purchase_id"))
        batch_op.drop_index("ix_coupon_uses_coupon_card")

    op.drop_table("coupon_uses")
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupons_program_id"))
        batch_op.drop_index(batch_op.f("ix_coupons_batch_id"))
        batch_op.drop_index(batch_op.f("ix_coupons_assigned_card_id"))

    op.drop_table("coupons")
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rewards_program_id"))

    op.drop_table("rewards")
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offers_program_id"))

    op.drop_table("offers")
    with op.batch_alter_table("coupon_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupon_batches_program_id"))

    op.drop_table("coupon_batches")
