"""nominal aliases: a keyed row per alias, for /flags

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:15:00.000000
"""
from __future__ import annotations

import re

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# A frozen copy of casewatch.names.name_key as it was when this migration was written:
# a migration must not change meaning when the application code does.
_NOT_NAME = re.compile(r"[^\w]|_", re.UNICODE)


def _name_key(text: str) -> str:
    return _NOT_NAME.sub("", text.lower())


def _alias_keys(alias: str) -> list[str]:
    # A frozen copy of casewatch.names.alias_keys, for the same reason.
    words = alias.split()
    keys = [_name_key("".join(words[start:])) for start in range(len(words))] or [_name_key(alias)]
    return list(dict.fromkeys(k for k in keys if k))


def upgrade() -> None:
    aliases = op.create_table('nominal_aliases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('visor_ref', sa.String(length=32), nullable=False),
    sa.Column('alias', sa.String(length=200), nullable=False),
    sa.Column('alias_key', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nominal_aliases'))
    )
    with op.batch_alter_table('nominal_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nominal_aliases_alias_key'), ['alias_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_nominal_aliases_visor_ref'), ['visor_ref'], unique=False)
    _backfill(aliases)


def _backfill(aliases: sa.Table) -> None:
    """One row per distinct alias key of every existing nominal, read and written with Core."""
    nominals = sa.table('nominals', sa.column('visor_ref', sa.String()), sa.column('aliases', sa.JSON()))
    conn = op.get_bind()
    rows: list[dict[str, str]] = []
    result = conn.execute(sa.select(nominals.c.visor_ref, nominals.c.aliases).order_by(nominals.c.visor_ref)).all()
    for visor_ref, names in result:
        seen: set[str] = set()
        for alias in names or ():
            for key in (_alias_keys(alias) if isinstance(alias, str) else []):
                if key[:200] not in seen:
                    seen.add(key[:200])
                    rows.append({'visor_ref': visor_ref, 'alias': alias, 'alias_key': key[:200]})
        if len(rows) >= 1000:
            conn.execute(aliases.insert(), rows)
            rows = []
    if rows:
        conn.execute(aliases.insert(), rows)


def downgrade() -> None:
    with op.batch_alter_table('nominal_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nominal_aliases_visor_ref'))
        batch_op.drop_index(batch_op.f('ix_nominal_aliases_alias_key'))

    op.drop_table('nominal_aliases')
