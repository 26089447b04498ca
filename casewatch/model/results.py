"""What a rule returns: the alerts that should be open and the live ones that should be resolved."""

from __future__ import annotations

from dataclasses import dataclass, field

from casewatch.model.alerts import AlertSpec


@dataclass(frozen=True)
class LiveAlert:
    """A live (open or acknowledged) alert, as the rules see it: its key, and its severity for
    reconcile.apply to raise (not part of equality: "" when not known)."""

    kind: str
    visor_ref: str
    subject: str
    severity: str = field(default="", compare=False)


@dataclass(frozen=True)
class Resolution:
    alert: LiveAlert
    reason: str


@dataclass(frozen=True)
class RuleResult:
    opens: tuple[AlertSpec, ...] = ()
    resolves: tuple[Resolution, ...] = ()


NOTHING = RuleResult()


@dataclass
class Desired:
    """Builds a RuleResult for rules that own a set of kinds: what they want open, and every live
    alert of those kinds they no longer want resolved."""

    specs: list[AlertSpec] = field(default_factory=list)

    def want(self, spec: AlertSpec) -> None:
        self.specs.append(spec)

    def against(self, live: tuple[LiveAlert, ...] | list[LiveAlert], reason: str) -> RuleResult:
        if not live:  # the common case in a scan: nothing live, so nothing to resolve
            return RuleResult(tuple(self.specs)) if self.specs else NOTHING
        wanted = {(s.kind, s.visor_ref, s.subject) for s in self.specs}
        resolves = tuple(
            Resolution(a, reason) for a in live if (a.kind, a.visor_ref, a.subject) not in wanted
        )
        return RuleResult(tuple(self.specs), resolves)
