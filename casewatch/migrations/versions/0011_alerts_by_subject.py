"""alerts found by subject: an index on (subject, kind) (issue 17)

An action's live alerts are read by the action id alone (the alert's subject), for every
action.upsert an ingest applies; with no index on subject that read went through every live
alert of the action kinds (14 ms on PostgreSQL with 20k of them, measured by the sixth session's
ingest work). Meetings' and events' alerts are read by subject too, beside the reference.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:50:00.000000
"""
from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_alerts_subject_kind', 'alerts', ['subject', 'kind'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alerts_subject_kind', table_name='alerts')
