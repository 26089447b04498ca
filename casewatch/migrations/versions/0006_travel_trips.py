"""travel trips: a travel notification's departure time and trip id, and trip cancellations

travel_notifications.departure_at is the intended departure time (contract v2, optional) and
travel_notifications.trip_id the source's id of the trip: a later notification with the same
trip_id amends it (Sexual Offences Act 2003 s.86; issue 14). travel_cancellations holds the
travel.cancelled events: a cancelled trip matches no border check.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 11:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import casewatch.store.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN, not a batch (as 0005): SQLite 3.35 and later and PostgreSQL alter the
# table in place; a batch on SQLite rebuilds the table from a reflection that can lose
# expression indexes.


def upgrade() -> None:
    op.add_column(
        'travel_notifications',
        sa.Column('departure_at', casewatch.store.types.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column('travel_notifications', sa.Column('trip_id', sa.String(length=100), nullable=True))
    op.create_table('travel_cancellations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('trip_id', sa.String(length=100), nullable=False),
    sa.Column('cancelled_at', casewatch.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_travel_cancellations')),
    sa.UniqueConstraint('event_id', name=op.f('uq_travel_cancellations_event_id'))
    )
    op.create_index(
        op.f('ix_travel_cancellations_visor_ref'), 'travel_cancellations', ['visor_ref'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_travel_cancellations_visor_ref'), table_name='travel_cancellations')
    op.drop_table('travel_cancellations')
    op.drop_column('travel_notifications', 'trip_id')
    op.drop_column('travel_notifications', 'departure_at')
