"""The case store: SQLAlchemy 2 models. Times are aware UTC datetimes; dates are dates.

Case records (markers, notifications, travel, actions, visits, recalls, level history) are keyed
by the ViSOR reference without a foreign key to `nominals`: events arrive out of order, and an
action or a border check may come before the nominal's first `nominal.upsert`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from casewatch.model.names import KEY_LENGTH
from casewatch.store.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The expression /flags matches typed references on (lookup.flags builds the same one): a
# reference upper-cased without hyphens. Constants, not parameters, so that both databases use
# the index below.
NOMINAL_REF_COMPACT_SQL = "replace(upper(visor_ref), '-', '')"

# BIGINT autoincrement is not a rowid alias on SQLite; INTEGER there, BIGINT on PostgreSQL.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# --- directory (synchronised from configuration at start-up) ---------------------------------


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(64), default="")
    spoc_email: Mapped[str] = mapped_column(String(320))
    supervisor_emails: Mapped[list[Any]] = mapped_column(default=list)
    digest_time: Mapped[str] = mapped_column(String(5), default="07:00")


class Officer(Base):
    __tablename__ = "officers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), default="")
    slack_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    team: Mapped[str] = mapped_column(String(64), index=True)
    roles: Mapped[list[Any]] = mapped_column(default=list)


# --- ingest -------------------------------------------------------------------------------------


class Event(Base):
    """Every accepted event, kept as received; `id` is the sender's idempotency key."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))  # "api", "import", "demo"
    data: Mapped[dict[str, Any]]


# --- case state -----------------------------------------------------------------------------


class Nominal(Base):
    __tablename__ = "nominals"
    visor_ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    surname: Mapped[str] = mapped_column(String(200))
    # casewatch.model.names.name_key(surname): what /flags matches a typed surname against.
    surname_key: Mapped[str] = mapped_column(String(KEY_LENGTH), index=True)
    forenames: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[date]
    pnc_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # The probation case reference (CRN) and the prison (NOMS) number: how the probation feed's
    # domain events name a person (contract v2, issue 18).
    crn: Mapped[str | None] = mapped_column(String(16), index=True)
    noms_number: Mapped[str | None] = mapped_column(String(16), index=True)
    category: Mapped[str] = mapped_column(String(1))
    mappa_level: Mapped[int | None]
    registered: Mapped[bool] = mapped_column(Boolean)
    risk_level: Mapped[str] = mapped_column(String(16))
    lead_agency: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(String(64), index=True)
    offender_manager: Mapped[str] = mapped_column(String(64), index=True)
    area: Mapped[str] = mapped_column(String(32))
    on_licence: Mapped[bool] = mapped_column(Boolean)
    no_fixed_abode: Mapped[bool] = mapped_column(Boolean)
    last_notification_on: Mapped[date | None]
    release_date: Mapped[date | None]
    licence_expiry: Mapped[date | None]
    # SOA 2003 s.82(6): the date of the conviction, finding or caution (nominal.upsert).
    relevant_date: Mapped[date | None]
    # SOA 2003 s.82(1): the end of the notification period; None: indefinite (or not known).
    notification_ends_on: Mapped[date | None]
    aliases: Mapped[list[Any]] = mapped_column(default=list)
    # contract v2 (issue 15): personal data for /flags (ephemeral answers to cleared roles only),
    # and the RMP's home-visit frequency.
    home_address: Mapped[str | None] = mapped_column(Text)
    visit_every_days: Mapped[int | None]
    licence_conditions: Mapped[list[Any]] = mapped_column(default=list)
    exclusion_zones: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(Text)
    # occurred_at of the nominal.upsert this row reflects: an older upsert never overwrites it.
    state_as_of: Mapped[datetime]
    # occurred_at of the newest level change applied (from either event type).
    level_as_of: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    # What /flags compares a typed reference with (casewatch.lookup.flags), indexed.
    __table_args__ = (Index("ix_nominals_visor_ref_compact", text(NOMINAL_REF_COMPACT_SQL)),)


class NominalAlias(Base):
    """One of a nominal's aliases (nominals.aliases), keyed for /flags: `alias_key` is the alias
    folded as a typed surname is (casewatch.model.names.alias_keys). Replaced on every applied
    upsert."""

    __tablename__ = "nominal_aliases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    alias: Mapped[str] = mapped_column(String(200))
    alias_key: Mapped[str] = mapped_column(String(KEY_LENGTH), index=True)


class Marker(Base):
    __tablename__ = "markers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    code: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200))
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)


class LevelChange(Base):
    """MAPPA level history, kept for reviews (changes before a serious further offence)."""

    __tablename__ = "level_changes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    from_level: Mapped[int | None]
    to_level: Mapped[int | None]
    rationale: Mapped[str] = mapped_column(Text, default="")
    changed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64), default="")  # sender / source system
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class RiskChange(Base):
    """A nominal.upsert that changed a known nominal's risk level, MAPPA category or area (its
    first upsert is no change). Each from/to pair is set only when that one changed."""

    __tablename__ = "risk_changes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    from_risk: Mapped[str | None] = mapped_column(String(16))
    to_risk: Mapped[str | None] = mapped_column(String(16))
    from_category: Mapped[str | None] = mapped_column(String(1))
    to_category: Mapped[str | None] = mapped_column(String(1))
    from_area: Mapped[str | None] = mapped_column(String(32))
    to_area: Mapped[str | None] = mapped_column(String(32))
    changed_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class Meeting(Base):
    """A level 2 or 3 MAPP meeting (meeting.held), keyed by the nominal and the source's meeting
    id (as orders: ids are only unique per nominal); updated by later events (the minutes date
    arrives later), an older event never overwriting a newer one."""

    __tablename__ = "meetings"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meeting_id: Mapped[str] = mapped_column(String(100))
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    held_on: Mapped[date]
    level: Mapped[int] = mapped_column(Integer)
    minutes_on_visor_on: Mapped[date | None]
    state_as_of: Mapped[datetime]  # occurred_at of the event this row reflects
    event_id: Mapped[str] = mapped_column(String(200))  # that event

    __table_args__ = (UniqueConstraint("visor_ref", "meeting_id"),)


class RmpReview(Base):
    __tablename__ = "rmp_reviews"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    reviewed_on: Mapped[date]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class Order(Base):
    """A court order (order.upsert), keyed by the nominal and the source's order id; updated by
    later events, an older one never overwriting a newer one. Prohibitions are personal data."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(100))
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    made_on: Mapped[date]
    expires_on: Mapped[date | None]
    prohibitions: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16))
    state_as_of: Mapped[datetime]  # occurred_at of the event this row reflects
    event_id: Mapped[str] = mapped_column(String(200))  # that event

    __table_args__ = (UniqueConstraint("visor_ref", "order_id"),)


class NotificationReceived(Base):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    notified_on: Mapped[date]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    # contract v2, kind "change" only: what changed (facts.CHANGE_WHATS) and when (s.84(1)).
    what: Mapped[str | None] = mapped_column(String(32))
    changed_on: Mapped[date | None]


class Detention(Base):
    """A detention.started (started, with its kind) or a detention.ended: one row per event. The
    rules pair them into periods held (SOA 2003 s.83(6), s.85(3)-(4); rules.custody)."""

    __tablename__ = "detentions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    started: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str | None] = mapped_column(String(16))  # remand, sentence, hospital; NULL: an end
    on_date: Mapped[date]  # started_on or ended_on
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class ChangeDetection(Base):
    """A change.detected: a change learned from another source, which the nominal owes a change
    notification for (s.84(1))."""

    __tablename__ = "change_detections"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    what: Mapped[str] = mapped_column(String(32))
    changed_on: Mapped[date]
    source: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class TravelNotification(Base):
    __tablename__ = "travel_notifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    departure_on: Mapped[date]
    return_on: Mapped[date | None]
    destination: Mapped[str] = mapped_column(String(2))
    notified_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    departure_at: Mapped[datetime | None]  # contract v2: the intended departure time, if given
    trip_id: Mapped[str | None] = mapped_column(String(100))  # a later one with it amends the trip


class TravelCancellation(Base):
    """A travel.cancelled: the trip (trip_id) matches nothing. Kept apart from the notifications
    so a cancellation heard of before the trip's notification still counts."""

    __tablename__ = "travel_cancellations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    trip_id: Mapped[str] = mapped_column(String(100))
    cancelled_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class BorderCheck(Base):
    __tablename__ = "border_checks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    port: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(8))
    checked_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class Action(Base):
    """A MAPP meeting or risk-management-plan action."""

    __tablename__ = "actions"
    action_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    summary: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    due_on: Mapped[date]
    status: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    state_as_of: Mapped[datetime]  # occurred_at of the upsert this row reflects
    done_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_actions_status_due_on", "status", "due_on"),)


class Visit(Base):
    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    visited_on: Mapped[date]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)


class Recall(Base):
    __tablename__ = "recalls"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    recall_type: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime]
    returned_at: Mapped[datetime | None]
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    return_event_id: Mapped[str | None] = mapped_column(String(200))


# --- alerts and what became of them ---------------------------------------------------------


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # "A-7K3Q9M": typable
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(8))
    visor_ref: Mapped[str] = mapped_column(String(32), index=True)
    team: Mapped[str] = mapped_column(String(64), index=True)
    # What the alert is about within the nominal: an action id, a due date, an event id.
    subject: Mapped[str] = mapped_column(String(200), default="")
    # kind|visor_ref|subject while not resolved, NULL once resolved: at most one live alert per
    # key, enforced by the unique index on both dialects (NULLs never collide).
    live_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # open, acknowledged, resolved
    summary: Mapped[str] = mapped_column(Text)  # no personal data: what chat may carry
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # officer id to act
    due_at: Mapped[datetime | None]
    opened_at: Mapped[datetime]
    opened_by_event: Mapped[str | None] = mapped_column(String(200))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None]
    # What the acknowledging officer said was done (`/ack <id> <outcome>`); one line, bounded.
    acknowledged_outcome: Mapped[str | None] = mapped_column(String(500))
    resolved_at: Mapped[datetime | None]
    resolved_reason: Mapped[str | None] = mapped_column(String(200))
    # Escalation: the chain snapshotted at opening, and where the alert is on it.
    escalation_chain: Mapped[list[Any]] = mapped_column(default=list)
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    next_escalation_at: Mapped[datetime | None] = mapped_column(index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_alerts_kind_state", "kind", "state"),
        # An action's (or a meeting's, an event's) live alerts are found by subject, without the
        # nominal's reference: without it every live alert of those kinds was read (migration 0011).
        Index("ix_alerts_subject_kind", "subject", "kind"),
    )


class Acknowledgement(Base):
    __tablename__ = "acknowledgements"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), index=True)
    officer_id: Mapped[str] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(32))  # slack_command, slack_button, api
    acknowledged_at: Mapped[datetime]


class Delivery(Base):
    """The outbox: one message to one receiver, written in the transaction that caused it."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("alerts.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))  # opened, acknowledged, escalated, ...
    receiver: Mapped[str] = mapped_column(String(100))  # "team:north", "officer:PC1234", ...
    channel: Mapped[str] = mapped_column(String(8))  # "slack", "email"
    target: Mapped[str] = mapped_column(String(320))  # channel id or address
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(12))  # pending, sending, sent, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    external_ref: Mapped[str | None] = mapped_column(String(300))  # Slack ts or Message-ID
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(12))  # sent, retry, dead
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class AlertThread(Base):
    """The first message about an alert on one receiver: later updates edit it or reply to it."""

    __tablename__ = "alert_threads"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"))
    channel: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(320))
    external_ref: Mapped[str] = mapped_column(String(300))  # Slack ts or email Message-ID
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("alert_id", "channel", "target"),)


class AuditEntry(Base):
    """Append-only: what was shared or looked up, with whom, when and why.

    Hash-chained (casewatch.audit.chain): `content_hash` is written with the entry; the sealer
    later gives it its place in the one chain (`seq`) and `chain_hash`, which covers the previous
    entry's chain hash. Entries not yet sealed have `seq` NULL."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)  # officer id, "system", "cli:<user>"
    action: Mapped[str] = mapped_column(String(64))  # "delivery.sent", "flags.lookup", ...
    subject: Mapped[str] = mapped_column(String(200), default="")  # alert id, visor_ref, query
    purpose: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The nominals the entry is about (sorted ViSOR references, as chained); audit_nominals is
    # its index for export --subject and chronology.
    nominals: Mapped[list[Any]] = mapped_column(default=list)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    seq: Mapped[int | None] = mapped_column(BigInteger)
    chain_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # A unique index, not a constraint: SQLite adds no constraint to a table in place.
        Index("uq_audit_log_seq", "seq", unique=True),
        # What the sealer reads: the entries not yet in the chain, oldest first.
        Index(
            "ix_audit_log_unsealed", "id",
            sqlite_where=text("seq IS NULL"), postgresql_where=text("seq IS NULL"),
        ),
    )


class AuditNominal(Base):
    """Which audit entries are about which nominal: the index behind export --subject and
    chronology. Derived from AuditEntry.nominals (which the chain covers); verify checks both
    agree."""

    __tablename__ = "audit_nominals"
    visor_ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    audit_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("audit_log.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AuditChain(Base):
    """The chain's one head row (id "main"): the newest sealed entry, the checkpoint left by the
    last retention purge, and which key (if any) the chain is keyed with."""

    __tablename__ = "audit_chain"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    base_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    base_hash: Mapped[str] = mapped_column(String(64))
    base_cut_at: Mapped[datetime | None]
    base_signature: Mapped[str] = mapped_column(String(64), default="")
    # "none", or the fingerprint of [audit].key; NULL until the first seal binds it.
    key_id: Mapped[str | None] = mapped_column(String(16))
    # Entries up to this id were written before the chain existed (migration 0009) and have no
    # content hash: the sealer computes theirs, then sets this to 0. Any other entry without a
    # content hash is sealed as it is, and verify reports it.
    legacy_through_id: Mapped[int] = mapped_column(BigInteger, default=0)


# --- schedules ------------------------------------------------------------------------------


class InboundItem(Base):
    """Something a feed received but could not turn into events (a mail that cannot be read, a
    snapshot's bad rows, a domain event with a bad body): kept as received, for a person, never
    lost. One row per (source, external_id), so a redelivery is not kept twice."""

    __tablename__ = "inbound_items"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))  # snapshot, mail, probation
    external_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(300))  # why it could not be read; no personal data
    media_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    content_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    team: Mapped[str] = mapped_column(String(64))  # whose SPOC was told
    visor_ref: Mapped[str | None] = mapped_column(String(32))
    alert_id: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(12), index=True)  # kept, reviewed
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("source", "external_id"),)


class Lease(Base):
    """A named lock with an expiry (the scheduler leader, for one)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64), index=True)
    run_key: Mapped[str] = mapped_column(String(128), unique=True)  # e.g. "digest:north:2026-11-23"
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(12))  # running, ok, failed
    error: Mapped[str | None] = mapped_column(Text)
