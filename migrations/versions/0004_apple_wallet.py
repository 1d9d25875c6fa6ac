"""apple wallet: pass look per program, pass tokens per card, PassKit registrations and APNs pushes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 14:50:33.259576
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apple_devices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("library_id", sa.String(length=128), nullable=False),
        sa.Column("push_token", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apple_devices")),
        sa.UniqueConstraint("library_id", name=op.f("uq_apple_devices_library_id")),
    )
    op.create_table(
        "wallet_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_wallet_counters")),
    )
    op.create_table(
        "apple_pass_states",
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("update_tag", sa.BigInteger(), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shown_points", sa.BigInteger(), nullable=False),
        sa.Column("shown_tier", sa.String(length=64), nullable=False),
        sa.Column("shown_serial", sa.String(length=16), nullable=False),
        sa.Column("shown_status", sa.String(length=16), nullable=False),
        sa.Column("shown_program_revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_apple_pass_states_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_apple_pass_states")),
    )
    with op.batch_alter_table("apple_pass_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apple_pass_states_update_tag"), ["update_tag"], unique=False)

    op.create_table(
        "apple_pushes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_library_id", sa.String(length=128), nullable=False),
        sa.Column("push_token", sa.String(length=200), nullable=False),
        sa.Column("update_tag", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sent",
                "purged",
                "failed",
                name="apple_push_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_apple_pushes_card_id_cards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apple_pushes")),
    )
    with op.batch_alter_table("apple_pushes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apple_pushes_card_id"), ["card_id"], unique=False)
        batch_op.create_index("ix_apple_pushes_due", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "apple_registrations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_apple_registrations_card_id_cards"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["apple_devices.id"],
            name=op.f("fk_apple_registrations_device_id_apple_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apple_registrations")),
        sa.UniqueConstraint("device_id", "card_id", name=op.f("uq_apple_registrations_device_id_card_id")),
    )
    with op.batch_alter_table("apple_registrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apple_registrations_card_id"), ["card_id"], unique=False)

    # Existing cards get their own random pass token before the column becomes NOT NULL.
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pass_auth_token", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    cards = sa.table("cards", sa.column("id", sa.Integer()), sa.column("pass_auth_token", sa.String()))
    for (card_id,) in connection.execute(sa.select(cards.c.id)).all():
        connection.execute(
            cards.update().where(cards.c.id == card_id).values(pass_auth_token=secrets.token_urlsafe(24))
        )
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.alter_column("pass_auth_token", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pass_background", sa.String(length=7), nullable=False, server_default="#1f2937"))
        batch_op.add_column(sa.Column("pass_foreground", sa.String(length=7), nullable=False, server_default="#ffffff"))
        batch_op.add_column(sa.Column("pass_label", sa.String(length=7), nullable=False, server_default="#d1d5db"))
        batch_op.add_column(sa.Column("logo_png", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("pass_revision", sa.Integer(), nullable=False, server_default="0"))
    # The defaults above were for the rows already there; the app always writes these columns itself.
    with op.batch_alter_table("programs", schema=None) as batch_op:
        for column in ("pass_background", "pass_foreground", "pass_label", "pass_revision"):
            batch_op.alter_column(column, server_default=None)

    counters = sa.table("wallet_counters", sa.column("name", sa.String()), sa.column("value", sa.BigInteger()))
    op.bulk_insert(counters, [{"name": "apple_update_tag", "value": 0}])


def downgrade() -> None:
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("pass_revision")
        batch_op.drop_column("logo_png")
        batch_op.drop_column("pass_label")
        batch_op.drop_column("pass_foreground")
        batch_op.drop_column("pass_background")

    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_column("pass_auth_token")

    with op.batch_alter_table("apple_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apple_registrations_card_id"))

    op.drop_table("apple_registrations")
    with op.batch_alter_table("apple_pushes", schema=None) as batch_op:
        batch_op.drop_index("ix_apple_pushes_due")
        batch_op.drop_index(batch_op.f("ix_apple_pushes_card_id"))

    op.drop_table("apple_pushes")
    with op.batch_alter_table("apple_pass_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apple_pass_states_update_tag"))

    op.drop_table("apple_pass_states")
    op.drop_table("wallet_counters")
    op.drop_table("apple_devices")
