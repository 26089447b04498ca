"""one name folding: surname and alias keys refolded, compared by equality on their own indexes

nominals.surname_key held the surname lower-cased, and /flags folded it further in SQL (an
expression index) differently from the Python folding of aliases and of the query: some surnames
typed exactly as stored were not found. The keys are now what casewatch.model.names.name_key
gives; ix_nominals_surname_key serves the lookup and the expression index goes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00.000000
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Frozen copies, as this migration was written: a migration must not change meaning when the
# application code does. _name_key is casewatch.model.names.name_key; the others are what 0001
# (the surname key) and 0002 (the alias keys) stored, for the downgrade.
Fold = Callable[[str], str]
_OLD_SURNAME_FOLDED_SQL = (
    "replace(replace(replace(replace(replace(lower(surname_key), ' ', ''), '-', ''), '''', ''), "
    "'.', ''), '’', '')"
)
_NOT_NAME = re.compile(r"[^\w]|_", re.UNICODE)


def _name_key(text: str) -> str:
    decomposed = unicodedata.normalize('NFKD', unicodedata.normalize('NFKD', text).casefold())
    return ''.join(ch for ch in decomposed if ch.isalnum())[:200]


def _old_surname_key(surname: str) -> str:
    return ' '.join(surname.split()).lower()


def _old_name_key(text: str) -> str:
    return _NOT_NAME.sub('', text.lower())[:200]


def _alias_keys(alias: str, fold: Fold) -> list[str]:
    words = alias.split()
    keys = [fold(''.join(words[start:])) for start in range(len(words))] or [fold(alias)]
    return list(dict.fromkeys(k for k in keys if k))


def upgrade() -> None:
    op.drop_index('ix_nominals_surname_folded', table_name='nominals')
    _refold(_name_key, _name_key)


def downgrade() -> None:
    _refold(_old_surname_key, _old_name_key)
    op.create_index(
        'ix_nominals_surname_folded', 'nominals', [sa.text(_OLD_SURNAME_FOLDED_SQL)], unique=False
    )


def _refold(surname_key: Fold, alias_key: Fold) -> None:
    """Every nominal's surname key, and its alias rows (one per distinct key), again from the
    names as stored, written with Core in pages of 1000."""
    nominals = sa.table(
        'nominals', sa.column('visor_ref', sa.String()), sa.column('surname', sa.String()),
        sa.column('surname_key', sa.String()), sa.column('aliases', sa.JSON()),
    )
    aliases = sa.table(
        'nominal_aliases', sa.column('visor_ref', sa.String()), sa.column('alias', sa.String()),
        sa.column('alias_key', sa.String()),
    )
    set_key = (
        nominals.update()
        .where(nominals.c.visor_ref == sa.bindparam('ref'))
        .values(surname_key=sa.bindparam('key'))
    )
    conn = op.get_bind()
    found = conn.execute(sa.select(nominals.c.visor_ref, nominals.c.surname, nominals.c.aliases)).all()
    conn.execute(aliases.delete())
    for start in range(0, len(found), 1000):
        page = found[start:start + 1000]
        conn.execute(set_key, [{'ref': ref, 'key': surname_key(surname)} for ref, surname, _ in page])
        rows = [row for ref, _, names in page for row in _alias_rows(ref, names, alias_key)]
        if rows:
            conn.execute(aliases.insert(), rows)


def _alias_rows(visor_ref: str, names: list[object] | None, fold: Fold) -> list[dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for alias in names or ():
        if isinstance(alias, str):
            for key in _alias_keys(alias, fold):
                rows.setdefault(key, {'visor_ref': visor_ref, 'alias': alias, 'alias_key': key})
    return list(rows.values())
