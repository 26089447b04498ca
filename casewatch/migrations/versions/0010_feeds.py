"""real feeds: a probation case reference and prison number on nominals, and the items a feed
could not read (contract v2, issue 18)

nominals gains crn and noms_number (nominal.upsert), indexed: how HMPPS domain events name a
person. inbound_items keeps what a feed received but could not turn into events (a mail, a
snapshot's bad rows, a domain event's body), once per (source, external_id).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 11:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import casewatch.store.types

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Plain ADD/DROP COLUMN, not a batch (as 0005 to 0008): a batch on SQLite rebuilds the table
# from a reflection that can lose expression indexes (ix_nominals_visor_ref_compact).


def upgrade() -> None:
    op.add_column('nominals', sa.Column('crn', sa.String(length=16), nullable=True))
    op.add_column('nominals', sa.Column('noms_number', sa.String(length=16), nullable=True))
    op.create_index(op.f('ix_nominals_crn'), 'nominals', ['crn'], unique=False)
    op.create_index(op.f('ix_nominals_noms_number'), 'nominals', ['noms_number'], unique=False)
    op.create_table(
        'inbound_items',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('external_id', sa.String(length=200), nullable=False),
        sa.Column('received_at', casewatch.store.types.UTCDateTime(), nullable=False),
        sa.Column('reason', sa.String(length=300), nullable=False),
        sa.Column('media_type', sa.String(length=100), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('content_sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('team', sa.String(length=64), nullable=False),
        sa.Column('visor_ref', sa.String(length=32), nullable=True),
        sa.Column('alert_id', sa.String(length=16), nullable=True),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('reviewed_by', sa.String(length=64), nullable=True),
        sa.Column('reviewed_at', casewatch.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_items')),
        sa.UniqueConstraint('source', 'external_id', name=op.f('uq_inbound_items_source')),
    )
    op.create_index(op.f('ix_inbound_items_state'), 'inbound_items', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_inbound_items_state'), table_name='inbound_items')
    op.drop_table('inbound_items')
    op.drop_index(op.f('ix_nominals_noms_number'), table_name='nominals')
    op.drop_index(op.f('ix_nominals_crn'), table_name='nominals')
    op.drop_column('nominals', 'noms_number')
    op.drop_column('nominals', 'crn')
