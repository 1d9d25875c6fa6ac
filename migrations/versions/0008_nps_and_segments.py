"""NPS answers and asks, and offers aimed at a member segment

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 17:34:42.143614
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nps_asks",
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dismissed", sa.Boolean(), nullable=False),
        sa.Column("emailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_nps_asks_card_id_cards")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_nps_asks_program_id_programs")),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_nps_asks")),
    )
    with op.batch_alter_table("nps_asks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nps_asks_program_id"), ["program_id"], unique=False)

    op.create_table(
        "nps_emails",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("purchase_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "status",
            sa.Enum("claimed", "sent", "failed", name="nps_email_status", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_nps_emails_card_id_cards")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_nps_emails_program_id_programs")),
        sa.ForeignKeyConstraint(["purchase_id"], ["purchases.id"], name=op.f("fk_nps_emails_purchase_id_purchases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nps_emails")),
    )
    with op.batch_alter_table("nps_emails", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nps_emails_card_id"), ["card_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nps_emails_program_id"), ["program_id"], unique=False)

    op.create_table(
        "nps_responses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(length=1000), nullable=True),
        sa.Column(
            "channel",
            sa.Enum("card_page", "email", name="nps_channel", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("purchase_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 10", name=op.f("ck_nps_responses_score_0_to_10")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_nps_responses_card_id_cards")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_nps_responses_program_id_programs")),
        sa.ForeignKeyConstraint(["purchase_id"], ["purchases.id"], name=op.f("fk_nps_responses_purchase_id_purchases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nps_responses")),
    )
    with op.batch_alter_table("nps_responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nps_responses_card_id"), ["card_id"], unique=False)
        batch_op.create_index("ix_nps_responses_program_created", ["program_id", "created_at"], unique=False)

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "segment",
                sa.Enum(
                    "lapsed", "vip", "new", "active", name="offer_segment", native_enum=False, create_constraint=True
                ),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        # SQLite's batch copy would keep the CHECK that names the dropped column, so it goes first.
        batch_op.drop_constraint(batch_op.f("ck_offers_offer_segment"), type_="check")
        batch_op.drop_column("segment")

    with op.batch_alter_table("nps_responses", schema=None) as batch_op:
        batch_op.drop_index("ix_nps_responses_program_created")
        batch_op.drop_index(batch_op.f("ix_nps_responses_card_id"))

    op.drop_table("nps_responses")
    with op.batch_alter_table("nps_emails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nps_emails_program_id"))
        batch_op.drop_index(batch_op.f("ix_nps_emails_card_id"))

    op.drop_table("nps_emails")
    with op.batch_alter_table("nps_asks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nps_asks_program_id"))

    op.drop_table("nps_asks")
