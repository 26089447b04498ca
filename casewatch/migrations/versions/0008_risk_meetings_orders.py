"""risk, supervision and orders: the nominal's /flags fields, risk changes, MAPP meetings, RMP
reviews and court orders (contract v2, issue 15)

nominals gains home_address, visit_every_days, licence_conditions, exclusion_zones and
description (nominal.upsert). risk_changes holds each nominal.upsert that changed a known
nominal's risk level, MAPPA category or area; meetings the meeting.held events (one row per
nominal and meeting_id, updated when the minutes date arrives); rmp_reviews the rmp.reviewed
events; orders the order.upsert events (one row per nominal and order_id).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import casewatch.store.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Plain ADD/DROP COLUMN, not a batch (as 0005 to 0007): a batch on SQLite rebuilds the table
# from a reflection that can lose expression indexes (ix_nominals_visor_ref_compact). The JSON
# lists need a server default for the rows already there (NOT NULL).


def upgrade() -> None:
    op.add_column('nominals', sa.Column('home_address', sa.Text(), nullable=True))
    op.add_column('nominals', sa.Column('visit_every_days', sa.Integer(), nullable=True))
    op.add_column(
        'nominals', sa.Column('licence_conditions', sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )
    op.add_column(
        'nominals', sa.Column('exclusion_zones', sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )
    op.add_column('nominals', sa.Column('description', sa.Text(), nullable=True))
    op.create_table('risk_changes',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('from_risk', sa.String(length=16), nullable=True),
    sa.Column('to_risk', sa.String(length=16), nullable=True),
    sa.Column('from_category', sa.String(length=1), nullable=True),
    sa.Column('to_category', sa.String(length=1), nullable=True),
    sa.Column('from_area', sa.String(length=32), nullable=True),
    sa.Column('to_area', sa.String(length=32), nullable=True),
    sa.Column('changed_at', casewatch.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_changes')),
    sa.UniqueConstraint('event_id', name=op.f('uq_risk_changes_event_id'))
    )
    op.create_index(op.f('ix_risk_changes_visor_ref'), 'risk_changes', ['visor_ref'], unique=False)
    op.create_table('meetings',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('meeting_id', sa.String(length=100), nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('held_on', sa.Date(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('minutes_on_visor_on', sa.Date(), nullable=True),
    sa.Column('state_as_of', casewatch.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_meetings')),
    sa.UniqueConstraint('visor_ref', 'meeting_id', name=op.f('uq_meetings_visor_ref'))
    )
    op.create_index(op.f('ix_meetings_visor_ref'), 'meetings', ['visor_ref'], unique=False)
    op.create_table('rmp_reviews',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('reviewed_on', sa.Date(), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rmp_reviews')),
    sa.UniqueConstraint('event_id', name=op.f('uq_rmp_reviews_event_id'))
    )
    op.create_index(op.f('ix_rmp_reviews_visor_ref'), 'rmp_reviews', ['visor_ref'], unique=False)
    op.create_table('orders',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('order_id', sa.String(length=100), nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('made_on', sa.Date(), nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=True),
    sa.Column('prohibitions', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('state_as_of', casewatch.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('visor_ref', 'order_id', name=op.f('uq_orders_visor_ref'))
    )
    op.create_index(op.f('ix_orders_visor_ref'), 'orders', ['visor_ref'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_orders_visor_ref'), table_name='orders')
    op.drop_table('orders')
    op.drop_index(op.f('ix_rmp_reviews_visor_ref'), table_name='rmp_reviews')
    op.drop_table('rmp_reviews')
    op.drop_index(op.f('ix_meetings_visor_ref'), table_name='meetings')
    op.drop_table('meetings')
    op.drop_index(op.f('ix_risk_changes_visor_ref'), table_name='risk_changes')
    op.drop_table('risk_changes')
    op.drop_column('nominals', 'description')
    op.drop_column('nominals', 'exclusion_zones')
    op.drop_column('nominals', 'licence_conditions')
    op.drop_column('nominals', 'visit_every_days')
    op.drop_column('nominals', 'home_address')
