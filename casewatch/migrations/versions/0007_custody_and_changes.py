"""custody and changes: detentions, change detections, and what a change notification is about

detentions holds the detention.started / detention.ended events (one row each): time held is
disregarded by the notification clocks (Sexual Offences Act 2003 s.83(6), s.85(3)-(4)) and a
release owes a notification (s.84(1)(d)). change_detections holds change.detected events: a
change learned from another source, which the nominal must notify (s.84(1)).
notifications.what and notifications.changed_on say what a change notification is about and
when the change happened (contract v2, optional; issue 14).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN, not a batch (as 0005 and 0006): a batch on SQLite rebuilds the table
# from a reflection that can lose expression indexes.


def upgrade() -> None:
    op.add_column('notifications', sa.Column('what', sa.String(length=32), nullable=True))
    op.add_column('notifications', sa.Column('changed_on', sa.Date(), nullable=True))
    op.create_table('detentions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('started', sa.Boolean(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=True),
    sa.Column('on_date', sa.Date(), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_detentions')),
    sa.UniqueConstraint('event_id', name=op.f('uq_detentions_event_id'))
    )
    op.create_index(op.f('ix_detentions_visor_ref'), 'detentions', ['visor_ref'], unique=False)
    op.create_table('change_detections',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('what', sa.String(length=32), nullable=False),
    sa.Column('changed_on', sa.Date(), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_detections')),
    sa.UniqueConstraint('event_id', name=op.f('uq_change_detections_event_id'))
    )
    op.create_index(
        op.f('ix_change_detections_visor_ref'), 'change_detections', ['visor_ref'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_change_detections_visor_ref'), table_name='change_detections')
    op.drop_table('change_detections')
    op.drop_index(op.f('ix_detentions_visor_ref'), table_name='detentions')
    op.drop_table('detentions')
    op.drop_column('notifications', 'changed_on')
    op.drop_column('notifications', 'what')
