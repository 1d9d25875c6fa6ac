"""google wallet objects and classes, rotating-code secrets and their replay cache, store coordinates

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 15:11:30.892105
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "google_wallet_classes",
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("class_id", sa.String(length=200), nullable=False),
        sa.Column("inserted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shown_program_revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_google_wallet_classes_program_id_programs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_google_wallet_classes")),
        sa.UniqueConstraint("class_id", name=op.f("uq_google_wallet_classes_class_id")),
    )
    op.create_table(
        "card_code_secrets",
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("secret", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_code_secrets_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("card_id", "slot", name=op.f("pk_card_code_secrets")),
    )
    op.create_table(
        "google_wallet_objects",
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.Column("inserted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shown_points", sa.BigInteger(), nullable=False),
        sa.Column("shown_tier", sa.String(length=64), nullable=False),
        sa.Column("shown_serial", sa.String(length=16), nullable=False),
        sa.Column("shown_status", sa.String(length=16), nullable=False),
        sa.Column("shown_program_revision", sa.Integer(), nullable=False),
        sa.Column(
            "sync_status",
            sa.Enum(
                "ok",
                "pending",
                "failed",
                "absent",
                name="google_sync_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_reason", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_google_wallet_objects_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_google_wallet_objects")),
        sa.UniqueConstraint("object_id", name=op.f("uq_google_wallet_objects_object_id")),
    )
    with op.batch_alter_table("google_wallet_objects", schema=None) as batch_op:
        batch_op.create_index("ix_google_wallet_objects_due", ["sync_status", "next_attempt_at"], unique=False)

    op.create_table(
        "used_rotating_codes",
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_used_rotating_codes_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("card_id", "slot", "step", name=op.f("pk_used_rotating_codes")),
    )
    with op.batch_alter_table("used_rotating_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_used_rotating_codes_used_at"), ["used_at"], unique=False)

    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latitude", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("longitude", sa.Float(), nullable=True))

    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rotating_codes", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("code_period_seconds", sa.Integer(), nullable=False, server_default="30"))
    # The defaults above were for the rows already there; the app always writes these columns itself.
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.alter_column("rotating_codes", server_default=None)
        batch_op.alter_column("code_period_seconds", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("code_period_seconds")
        batch_op.drop_column("rotating_codes")

    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_column("longitude")
        batch_op.drop_column("latitude")

    with op.batch_alter_table("used_rotating_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_rotating_codes_used_at"))

    op.drop_table("used_rotating_codes")
    with op.batch_alter_table("google_wallet_objects", schema=None) as batch_op:
        batch_op.drop_index("ix_google_wallet_objects_due")

    op.drop_table("google_wallet_objects")
    op.drop_table("card_code_secrets")
    op.drop_table("google_wallet_classes")
