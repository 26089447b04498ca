"""accountable sharing: the audit log's hash chain, its head, and which entries name which nominal
(contract v2, issue 16)

audit_log gains nominals (the ViSOR references an entry is about), content_hash, seq and
chain_hash, and an index on actor; audit_nominals indexes entries by nominal; audit_chain holds the
chain's head and the last retention checkpoint. Entries written before this revision have an
empty content_hash: the sealer computes it when it chains them (only for ids up to
audit_chain.legacy_through_id, recorded here), so they join the chain in id order. Their
nominals are filled in here from what they recorded (details.visor_refs_shown, details.visor_ref,
or the alert their subject names), so that export --subject and chronology find them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 09:00:00.000000
"""
from __future__ import annotations

from typing import Any

from alembic import op
import sqlalchemy as sa

import casewatch.store.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
GENESIS = '0' * 64

# Plain ADD COLUMN, not a batch (as 0005 to 0008).


def upgrade() -> None:
    op.add_column('audit_log', sa.Column('nominals', sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column('audit_log', sa.Column('content_hash', sa.String(length=64), nullable=False, server_default=''))
    op.add_column('audit_log', sa.Column('seq', sa.BigInteger(), nullable=True))
    op.add_column('audit_log', sa.Column('chain_hash', sa.String(length=64), nullable=True))
    op.create_index(op.f('ix_audit_log_actor'), 'audit_log', ['actor'], unique=False)
    op.create_index(op.f('uq_audit_log_seq'), 'audit_log', ['seq'], unique=True)
    op.create_index(
        'ix_audit_log_unsealed', 'audit_log', ['id'], unique=False,
        sqlite_where=sa.text('seq IS NULL'), postgresql_where=sa.text('seq IS NULL'),
    )
    op.create_table('audit_nominals',
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('audit_id', BIG_ID, nullable=False),
    sa.ForeignKeyConstraint(['audit_id'], ['audit_log.id'], name=op.f('fk_audit_nominals_audit_id_audit_log'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('visor_ref', 'audit_id', name=op.f('pk_audit_nominals'))
    )
    op.create_index(op.f('ix_audit_nominals_audit_id'), 'audit_nominals', ['audit_id'], unique=False)
    chain = op.create_table('audit_chain',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('head_seq', sa.BigInteger(), nullable=False),
    sa.Column('head_hash', sa.String(length=64), nullable=False),
    sa.Column('base_seq', sa.BigInteger(), nullable=False),
    sa.Column('base_hash', sa.String(length=64), nullable=False),
    sa.Column('base_cut_at', casewatch.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('base_signature', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=True),
    sa.Column('legacy_through_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain'))
    )
    bind = op.get_bind()
    legacy_through = bind.execute(sa.text('SELECT max(id) FROM audit_log')).scalar() or 0
    op.bulk_insert(chain, [{
        'id': 'main', 'head_seq': 0, 'head_hash': GENESIS, 'base_seq': 0, 'base_hash': GENESIS,
        'base_cut_at': None, 'base_signature': '', 'key_id': None, 'legacy_through_id': legacy_through,
    }])
    _index_legacy_entries(bind)


def _refs_of(details: object, subject: str, alert_refs: dict[str, str]) -> list[str]:
    refs: set[str] = set()
    if isinstance(details, dict):
        shown = details.get('visor_refs_shown')
        if isinstance(shown, list):
            refs.update(r for r in shown if isinstance(r, str))
        if isinstance(details.get('visor_ref'), str):
            refs.add(details['visor_ref'])
    if subject in alert_refs:
        refs.add(alert_refs[subject])
    return sorted(r for r in refs if r and len(r) <= 32)


def _index_legacy_entries(bind: sa.engine.Connection, batch: int = 2000) -> None:
    log = sa.table(
        'audit_log', sa.column('id', sa.BigInteger()), sa.column('subject', sa.String()),
        sa.column('details', sa.JSON()), sa.column('nominals', sa.JSON()),
    )
    index = sa.table('audit_nominals', sa.column('visor_ref', sa.String()), sa.column('audit_id', sa.BigInteger()))
    alerts = sa.table('alerts', sa.column('id', sa.String()), sa.column('visor_ref', sa.String()))
    alert_refs = dict(bind.execute(sa.select(alerts.c.id, alerts.c.visor_ref)).all())
    last = 0
    while True:
        rows = bind.execute(
            sa.select(log.c.id, log.c.subject, log.c.details).where(log.c.id > last).order_by(log.c.id).limit(batch)
        ).all()
        if not rows:
            return
        updates: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for row in rows:
            refs = _refs_of(row.details, row.subject or '', alert_refs)
            if refs:
                updates.append({'entry_id': row.id, 'refs': refs})
                links.extend({'visor_ref': ref, 'audit_id': row.id} for ref in refs)
        if updates:
            bind.execute(
                log.update().where(log.c.id == sa.bindparam('entry_id')).values(nominals=sa.bindparam('refs')),
                updates,
            )
            bind.execute(index.insert(), links)
        last = rows[-1].id


def downgrade() -> None:
    op.drop_table('audit_chain')
    op.drop_index(op.f('ix_audit_nominals_audit_id'), table_name='audit_nominals')
    op.drop_table('audit_nominals')
    op.drop_index('ix_audit_log_unsealed', table_name='audit_log')
    op.drop_index(op.f('uq_audit_log_seq'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_actor'), table_name='audit_log')
    op.drop_column('audit_log', 'chain_hash')
    op.drop_column('audit_log', 'seq')
    op.drop_column('audit_log', 'content_hash')
    op.drop_column('audit_log', 'nominals')
