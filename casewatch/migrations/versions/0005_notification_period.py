"""notification period: a nominal's relevant date and the end of its notification period

nominals.relevant_date is the conviction, finding or caution that began the notification
requirements (Sexual Offences Act 2003 s.82(6); the initial notification runs from it, s.83(1));
nominals.notification_ends_on is the end of the notification period (s.82(1)), NULL for an
indefinite one or where the source does not say. Both come from nominal.upsert (contract v2).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN, not a batch: SQLite (3.35 and later) and PostgreSQL both alter the table
# in place, and a batch on SQLite would rebuild nominals from a reflection that skips its
# expression index (ix_nominals_visor_ref_compact), losing it.


def upgrade() -> None:
    op.add_column('nominals', sa.Column('relevant_date', sa.Date(), nullable=True))
    op.add_column('nominals', sa.Column('notification_ends_on', sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column('nominals', 'notification_ends_on')
    op.drop_column('nominals', 'relevant_date')
