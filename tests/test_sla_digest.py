"""Service levels, reminders and breaches, the weekly digest and retention, per database: SLA
attainment checked against an independent calculation, each reminder/breach raised exactly once
under a controlled clock, the digest's figures recomputed by hand, the purge's cascade."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.loop import cases, cron, sla
from app.models import (
    Case,
    CaseAlert,
    CaseEvent,
    EmailMessage,
    Impression,
    Moment,
    Outbox,
    Response,
    ResponseSku,
    Site,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)

from .conftest import free_port, make_site, public_prompt

H = timedelta(hours=1)
M = timedelta(minutes=1)
D = timedelta(days=1)
SUPPORT = "support-team@shop.example"

# My own reading of the spec: stage -> (done field, due field, the site's target field).
STAGE_FIELDS: dict[str, tuple[str, str, str | None]] = {
    "ack": ("acknowledged_at", "ack_due_at", "sla_ack_target"),
    "ack_late": ("acknowledged_at", "ack_late_due_at", "sla_ack_late_target"),
    "followup": ("followed_up_at", "followup_due_at", None),
    "close": ("closed_at", "close_due_at", "sla_close_target"),
    "loop": ("verified_at", "loop_due_at", None),
}
DUE_HOURS = {"ack_due_at": 2, "ack_late_due_at": 6, "close_due_at": 48, "loop_due_at": 72}
FOLLOWUP_HOURS = {"negative": 24, "neutral": 48, "positive": 168}


def _segment(scale: str, rating: int) -> str:
    if scale == "nps":
        return "promoter" if rating >= 9 else "passive" if rating >= 7 else "detractor"
    return "positive" if rating >= 4 else "neutral" if rating == 3 else "negative"


def _family(segment: str) -> str:
    return {"detractor": "negative", "passive": "neutral", "promoter": "positive"}.get(
        segment, segment)


def _dues(created: datetime, segment: str) -> dict[str, datetime]:
    out = {k: created + h * H for k, h in DUE_HOURS.items()}
    out["followup_due_at"] = created + FOLLOWUP_HOURS[_family(segment)] * H
    return out


def _add(site_id: int, moment: Moment, created: datetime, rating: int, *, team: str,
         channel: str = "web", skus: tuple[str, ...] = (), comment: str | None = None,
         priority: str = "routine", routed: bool = True, status: str = "new",
         done: dict[str, datetime | None] | None = None) -> dict[str, Any]:
    """Insert a response, its SKU rows and its case; returns a plain snapshot of what went in."""
    segment = _segment(moment.scale, rating)
    dues = _dues(created, segment)
    done = {"acknowledged_at": None, "followed_up_at": None, "closed_at": None,
            "verified_at": None, **(done or {})}
    r = Response(site_id=site_id, moment_id=moment.id, submission_id=uuid.uuid4().hex,
                 scale=moment.scale, rating=rating, segment=segment, comment=comment,
                 channel=channel, skus=list(skus), created_at=created, updated_at=created)
    db.session.add(r)
    db.session.flush()
    for sku in skus:
        db.session.add(ResponseSku(response_id=r.id, sku=sku, site_id=site_id))
    c = Case(response_id=r.id, site_id=site_id, status=status, priority=priority, team=team,
             tags=[], cycle=0, routed_at=created if routed else None, created_at=created,
             updated_at=created, **dues, **done)
    db.session.add(c)
    db.session.flush()
    return {"site_id": site_id, "routed": routed, "created": created, "team": team,
            "priority": priority, "segment": segment, "channel": channel, "moment": moment.key,
            "scale": moment.scale, "rating": rating, "comment": comment, "skus": list(skus),
            "response_id": r.id, "case_id": c.id, **dues, **done}


def _expected(rows: list[dict[str, Any]], site_id: int, start: datetime, end: datetime,
              now: datetime, group_by: str | None = None,
              **filters: str) -> dict[str | None, dict[str, tuple[int, int]]]:
    """Attainment computed in plain Python: {slice: {stage: (met, eligible)}}."""
    out: dict[str | None, dict[str, list[int]]] = {}
    by_sku = group_by == "sku" or "sku" in filters
    for r in rows:
        if r["site_id"] != site_id or not r["routed"] or not start <= r["created"] < end:
            continue
        for sku in (r["skus"] if by_sku else [None]):
            view = {**r, "sku": sku}
            if any(view[name] != value for name, value in filters.items()):
                continue
            key = view[group_by] if group_by else None
            figures = out.setdefault(key, {s: [0, 0] for s in STAGE_FIELDS})
            for stage, (done_f, due_f, _t) in STAGE_FIELDS.items():
                done, due = r[done_f], r[due_f]
                if due is not None and (done is not None or due <= now):
                    figures[stage][1] += 1
                    if done is not None and done <= due:
                        figures[stage][0] += 1
    return {k: {s: (m, e) for s, (m, e) in v.items()} for k, v in out.items()}


def _got(report: sla.Report) -> dict[str | None, dict[str, tuple[int, int]]]:
    return {k: {s: (a.met, a.eligible) for s, a in v.items()} for k, v in report.items()}


def _moments(site_id: int) -> dict[str, Moment]:
    rows = db.session.scalars(select(Moment).where(Moment.site_id == site_id)).all()
    return {m.key: m for m in rows}


def _count(model: Any, *where: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


# -- 1. attainment ------------------------------------------------------------------------------


def _random_done(rng: random.Random, created: datetime, due: datetime,
                 now: datetime) -> datetime | None:
    """None, early, exactly on time or late; never after `now`."""
    pick = rng.choice(("none", "early", "on_time", "late", "late"))
    if pick == "none":
        return None
    if pick == "on_time":
        value = due
    elif pick == "early":
        value = due - rng.randint(1, int((due - created) / M) - 1) * M
    else:
        value = due + rng.randint(1, 3000) * M
    return value if value <= now else None


def test_attainment_matches_independent_calculation(make_app, db_kind, clock):
    """attainment() equals met/eligible computed by hand for each period, slice and filter."""
    app = make_app(db_kind)
    site = make_site(app)
    other = make_site(app, name="Other shop")
    now = datetime(2030, 5, 15, 12, 0, tzinfo=UTC)
    start = now - 14 * D
    rng = random.Random(20300515)
    rows: list[dict[str, Any]] = []
    with app.app_context():
        s = db.session.get(Site, site.id)
        s.sla_ack_target, s.sla_ack_late_target, s.sla_close_target = 0.5, 0.8, 0.7
        db.session.commit()
        moments = _moments(site.id)
        usable = [moments[k] for k in ("checkout", "delivery", "post_chat", "support_email")]
        skus = ["SKU-1", "SKU-2", "SKU-3", "SKU-4"]
        for _ in range(60):
            moment = rng.choice(usable)
            created = now - rng.randint(60, 14 * 24 * 60 - 1) * M
            rating = rng.randint(0, 10) if moment.scale == "nps" else rng.randint(1, 5)
            dues = _dues(created, _segment(moment.scale, rating))
            ack_due = rng.choice((dues["ack_due_at"], dues["ack_late_due_at"]))
            done = {
                "acknowledged_at": _random_done(rng, created, ack_due, now),
                "followed_up_at": _random_done(rng, created, dues["followup_due_at"], now),
                "closed_at": _random_done(rng, created, dues["close_due_at"], now),
                "verified_at": _random_done(rng, created, dues["loop_due_at"], now),
            }
            rows.append(_add(
                site.id, moment, created, rating, done=done,
                team=rng.choice(("support", "logistics", "sales")),
                priority=rng.choice(("routine", "critical")),
                channel=rng.choice(("web", "email", "sms")),
                skus=tuple(rng.sample(skus, rng.randint(0, 3)))))
        checkout = moments["checkout"]
        # Boundaries: done exactly at due (met), due exactly now (eligible, missed), still open.
        rows.append(_add(site.id, checkout, now - 3 * D, 1, team="logistics", channel="email",
                         skus=("SKU-1",), done={"acknowledged_at": now - 3 * D + 2 * H}))
        rows.append(_add(site.id, checkout, now - 48 * H, 2, team="logistics", channel="email"))
        rows.append(_add(site.id, checkout, now - 10 * D, 5, team="sales", skus=("SKU-2",)))
        rows.append(_add(site.id, checkout, now - 30 * M, 4, team="support", skus=("SKU-1",)))
        # Never counted: before the period, at its end, unrouted, another site's.
        rows.append(_add(site.id, checkout, start - M, 1, team="support"))
        rows.append(_add(site.id, checkout, now, 1, team="support"))
        rows.append(_add(site.id, checkout, now - 5 * D, 1, team="support", routed=False,
                         done={"acknowledged_at": now - 5 * D + H}))
        other_checkout = _moments(other.id)["checkout"]
        rows.append(_add(other.id, other_checkout, now - 5 * D, 1, team="support",
                         done={"acknowledged_at": now - 5 * D + H}))
        db.session.commit()

        whole = _expected(rows, site.id, start, now, now)[None]
        assert all(e > 0 for _m, e in whole.values())
        assert any(m < e for m, e in whole.values())  # some missed
        counted = [r for r in rows if r["site_id"] == site.id and start <= r["created"] < now]
        assert any(r["close_due_at"] > now and r["closed_at"] is None for r in counted)

        s = db.session.get(Site, site.id)
        scenarios: list[tuple[datetime, datetime, str | None, dict[str, str]]] = [
            (start, now, None, {}),
            (now - 10 * D, now - 3 * D, None, {}),
            (start, now, "team", {}),
            (start, now, None, {"team": "logistics"}),
            (start, now, "sku", {}),
            (start, now, None, {"channel": "email"}),
            (start, now, "team", {"channel": "email"}),
            (start, now, "moment", {}),
            (start, now, "priority", {}),
            (start, now, "segment", {}),
            (start, now, "channel", {"sku": "SKU-1"}),
            (now - 10 * D, now - 3 * D, "sku", {"team": "support"}),
        ]
        for lo, hi, group_by, filters in scenarios:
            report = sla.attainment(s, lo, hi, now=now, group_by=group_by, **filters)
            expected = _expected(rows, site.id, lo, hi, now, group_by, **filters)
            assert _got(report) == expected, (lo, hi, group_by, filters)
            for figures in report.values():
                for stage, a in figures.items():
                    target_field = STAGE_FIELDS[stage][2]
                    target = getattr(s, target_field) if target_field else None
                    assert a.stage == stage and a.target == target
                    rate = a.met / a.eligible if a.eligible else None
                    assert a.rate == rate
                    want = None if target is None or rate is None else rate >= target
                    assert a.on_target is want
        assert set(sla.attainment(s, start, now, now=now, group_by="team")) == {
            "support", "logistics", "sales"}
        assert set(sla.attainment(s, now - 10 * D, now - 3 * D, now=now, group_by="sku")) <= {
            "SKU-1", "SKU-2", "SKU-3", "SKU-4"}

        clock.set(now)
        assert _got(sla.attainment(s, start, now)) == _got(sla.attainment(s, start, now, now=now))
        with pytest.raises(ValueError):
            sla.attainment(s, start, now, now=now, colour="red")
        with pytest.raises(ValueError):
            sla.attainment(s, start, now, now=now, group_by="colour")


# -- 2. reminders and breaches ------------------------------------------------------------------


def _support_with_email(app, site: Site) -> int:
    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.site_id == site.id,
                                                    Team.key == "support"))
        team.emails = [SUPPORT]
        db.session.commit()
        return team.id


def _detractor(app, client, site: Site) -> int:
    """Answer 1 with "bad" through the real prompt and form; returns the routed case's id."""
    path = public_prompt(client, site, "checkout", channel="web")
    resp = client.post(path, data={"rating": "1", "comment": "bad"})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    with app.app_context():
        return db.session.scalar(select(Case.id).order_by(Case.id.desc()))


def _alerts() -> set[tuple[int, str, str, int, datetime]]:
    return {(a.case_id, a.stage, a.kind, a.cycle, a.due_at)
            for a in db.session.scalars(select(CaseAlert))}


def _sla_mail() -> list[tuple[str, str]]:
    rows = db.session.scalars(select(EmailMessage).where(
        EmailMessage.kind.in_(("sla_reminder", "sla_breach")))).all()
    assert all(m.recipients == [SUPPORT] for m in rows)
    return sorted((m.kind, m.ref_key) for m in rows)


def test_reminders_and_breaches_raised_once(make_app, db_kind, clock):
    """scan() raises each due reminder and breach once; none for stages done in time or resolved."""
    app = make_app(db_kind, MAIL_PORT=free_port())
    site = make_site(app)
    _support_with_email(app, site)
    client = app.test_client()
    t0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
    clock.set(t0)
    a, b, c, d = (_detractor(app, client, site) for _ in range(4))

    def scan_at(at: datetime) -> dict[str, int]:
        clock.set(at)
        with app.app_context():
            return sla.scan(at)

    with app.app_context():
        for case_id in (a, b, c, d):
            row = db.session.get(Case, case_id)
            assert (row.team, row.priority, row.status) == ("support", "critical", "new")
            assert row.created_at == t0
            assert (row.ack_due_at, row.followup_due_at, row.close_due_at) == (
                t0 + 2 * H, t0 + 24 * H, t0 + 48 * H)
        assert _count(CaseAlert) == 0 and _sla_mail() == []

    clock.set(t0 + 30 * M)
    with app.app_context():
        cases.transition(d, "resolved", "agent@x", resolution="Refunded")
    assert scan_at(t0 + H) == {"reminder": 0, "breach": 0}
    clock.set(t0 + H)
    with app.app_context():
        cases.transition(b, "acknowledged", "agent@x")  # well before its ack reminder

    assert scan_at(t0 + H + 31 * M) == {"reminder": 2, "breach": 0}  # a and c
    assert scan_at(t0 + H + 31 * M) == {"reminder": 0, "breach": 0}
    clock.set(t0 + H + 45 * M)
    with app.app_context():
        cases.transition(c, "acknowledged", "agent@x")  # after its reminder, before due
    assert scan_at(t0 + 2 * H + M) == {"reminder": 0, "breach": 1}  # a only
    assert scan_at(t0 + 2 * H + M) == {"reminder": 0, "breach": 0}
    assert scan_at(t0 + 6 * H) == {"reminder": 0, "breach": 0}

    assert scan_at(t0 + 23 * H + 31 * M) == {"reminder": 3, "breach": 0}  # follow-ups a, b, c
    clock.set(t0 + 23 * H + 45 * M)
    with app.app_context():
        cases.transition(c, "in_progress", "agent@x")  # followed up in time
    assert scan_at(t0 + 24 * H + M) == {"reminder": 0, "breach": 2}  # a, b
    assert scan_at(t0 + 24 * H + M) == {"reminder": 0, "breach": 0}
    assert scan_at(t0 + 47 * H + 31 * M) == {"reminder": 3, "breach": 0}  # closes a, b, c
    assert scan_at(t0 + 48 * H + M) == {"reminder": 0, "breach": 3}
    assert scan_at(t0 + 48 * H + M) == {"reminder": 0, "breach": 0}
    assert scan_at(t0 + 100 * H) == {"reminder": 0, "breach": 0}

    due = {"ack": t0 + 2 * H, "followup": t0 + 24 * H, "close": t0 + 48 * H}
    raised = [(a, "ack", "reminder"), (c, "ack", "reminder"), (a, "ack", "breach"),
              (a, "followup", "reminder"), (b, "followup", "reminder"),
              (c, "followup", "reminder"), (a, "followup", "breach"), (b, "followup", "breach"),
              (a, "close", "reminder"), (b, "close", "reminder"), (c, "close", "reminder"),
              (a, "close", "breach"), (b, "close", "breach"), (c, "close", "breach")]
    with app.app_context():
        assert _alerts() == {(i, stage, kind, 0, due[stage]) for i, stage, kind in raised}
        assert _count(CaseAlert) == len(raised)
        assert _sla_mail() == sorted((f"sla_{kind}", f"case:{i}:{stage}:0")
                                     for i, stage, kind in raised)
        assert _count(CaseAlert, CaseAlert.case_id == d) == 0
        assert _count(EmailMessage, EmailMessage.case_id == d,
                      EmailMessage.kind.like("sla_%")) == 0
        breach = db.session.scalar(select(EmailMessage).where(
            EmailMessage.kind == "sla_breach", EmailMessage.ref_key == f"case:{a}:ack:0"))
        assert breach.case_id == a
        assert breach.subject == f"[Shop] SLA breached: case #{a} (ack, critical)"
        assert "bad" in breach.body_text
        # Undeliverable here (nothing listens on MAIL_PORT): stored, pending, retried later.
        assert breach.status == "pending" and breach.next_attempt_at is not None


# -- 3. weekly digest ---------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _delta(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f" ({a - b:+.1f})"


def _digest_lines(rows: list[dict[str, Any]], site: Site, team: str, start: datetime,
                  end: datetime, now: datetime) -> dict[str, Any]:
    """The digest's figures for `team` and [start, end), computed by hand from the fixture."""

    def week(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
        return [r for r in rows if r["team"] == team and lo <= r["created"] < hi]

    def figures(answers: list[dict[str, Any]]) -> dict[str, Any]:
        nps = [r for r in answers if r["scale"] == "nps"]
        csat = [r for r in answers if r["scale"] == "csat"]
        ces = [r for r in answers if r["scale"] == "ces"]
        neg = [r for r in answers if r["segment"] in ("detractor", "negative")]
        return {
            "volume": len(answers),
            "nps": 100 * (sum(r["rating"] >= 9 for r in nps) - sum(r["rating"] <= 6 for r in nps))
            / len(nps) if nps else None,
            "csat": 100 * sum(r["rating"] >= 4 for r in csat) / len(csat) if csat else None,
            "ces": 100 * sum(r["rating"] >= 4 for r in ces) / len(ces) if ces else None,
            "neg_rate": len(neg) / len(answers) if answers else None,
            "averages": {s: (sum(r["rating"] for r in g) / len(g), len(g))
                         for s, g in (("nps", nps), ("csat", csat), ("ces", ces)) if g},
        }

    cur, prev = week(start, end), week(start - 7 * D, start)
    fc, fp = figures(cur), figures(prev)

    def top(key: str) -> list[str]:
        neg: dict[str, int] = defaultdict(int)
        total: dict[str, int] = defaultdict(int)
        for r in cur:
            for k in (r["skus"] if key == "skus" else [r["moment"]]):
                total[k] += 1
                neg[k] += r["segment"] in ("detractor", "negative")
        ranked = sorted((k for k in total if neg[k]), key=lambda k: (-neg[k], k))[:5]
        return [f"{k}: {neg[k]}/{total[k]}" for k in ranked]

    lines = [
        f"Answers: {fc['volume']} (previous week: {fp['volume']})",
        f"NPS: {_num(fc['nps'])}{_delta(fc['nps'], fp['nps'])}",
        f"CSAT: {_num(fc['csat'])} %{_delta(fc['csat'], fp['csat'])}",
        f"CES: {_num(fc['ces'])} %{_delta(fc['ces'], fp['ces'])}",
        f"Negative-experience rate: {_pct(fc['neg_rate'])} "
        f"(previous week: {_pct(fp['neg_rate'])})",
    ]
    lines += [f"Average {s}: {avg:.2f} ({n})" for s, (avg, n) in fc["averages"].items()]
    for stage, (met, eligible) in _expected(rows, site.id, start, end, now, None,
                                            team=team)[None].items():
        target_field = STAGE_FIELDS[stage][2]
        line = f"{stage}: {_pct(met / eligible if eligible else None)} ({met}/{eligible})"
        if target_field:
            target = getattr(site, target_field)
            line += f" · target {_pct(target)}"
            if eligible and met / eligible < target:
                line += " · MISSED"
        lines.append(line)
    lines += top("skus") + top("moment")
    commented = sorted((r for r in cur if r["comment"]), key=lambda r: r["created"],
                       reverse=True)
    negative = [r for r in commented if r["segment"] in ("detractor", "negative")][:3]
    positive = [r for r in commented if r["segment"] in ("promoter", "positive")][:2]
    samples = [f"[{r['rating']} {r['segment']}] {r['comment']}" for r in negative + positive]
    left_out = [r["comment"] for r in commented if r not in negative + positive]
    return {"lines": lines + samples, "left_out": left_out, "top_sku": top("skus")[0],
            "top_moment": top("moment")[0], "volume": fc["volume"]}


def test_weekly_digest_figures(make_app, db_kind, clock):
    """The Monday digest carries the hand-computed figures of last week, once, escaped in HTML."""
    app = make_app(db_kind, MAIL_PORT=free_port())
    site = make_site(app)
    support_id = _support_with_email(app, site)
    now = datetime(2030, 3, 11, 7, 0, tzinfo=UTC)  # a Monday
    week_start, week_end = now.replace(hour=0) - 7 * D, now.replace(hour=0)
    label = "2030-W10"
    assert cron.week_of(now) == (week_start, week_end, label)
    clock.set(now)
    rows: list[dict[str, Any]] = []
    script = "<script>alert(1)</script>"
    with app.app_context():
        sales = db.session.scalar(select(Team).where(Team.site_id == site.id,
                                                     Team.key == "sales"))
        sales.emails, sales.weekly_digest = ["sales@shop.example"], False
        ms = _moments(site.id)
        dl, co, pc = ms["delivery"], ms["checkout"], ms["post_chat"]
        w = week_start

        def ack(at: datetime) -> dict[str, datetime]:
            return {"acknowledged_at": at}

        week = [  # (moment, created, rating, skus, comment, done)
            (dl, w, 10, ("SKU-A",), None, ack(w + H)),
            (dl, w + 1 * D, 9, ("SKU-B",), "Fast", ack(w + 1 * D + 3 * H)),
            (dl, w + 2 * D, 7, ("SKU-A",), None, {}),
            (dl, w + 2 * D + 5 * H, 3, ("SKU-A", "SKU-B"), "Late again",
             {**ack(w + 2 * D + 6 * H), "closed_at": w + 3 * D}),
            (dl, w + 3 * D, 0, ("SKU-A",), "Never again", ack(w + 3 * D + H)),
            (co, w + 3 * D + 4 * H, 5, ("SKU-B",), "Smooth checkout", {}),
            (co, w + 4 * D, 4, ("SKU-C",), None, ack(w + 4 * D + 2 * H)),
            (co, w + 4 * D + 8 * H, 3, ("SKU-C",), "Meh", {"closed_at": w + 5 * D}),
            (pc, w + 5 * D, 2, ("SKU-C",), "Slow chat", ack(w + 5 * D + 30 * M)),
            (pc, w + 6 * D, 5, (), "Lovely agent", ack(w + 6 * D + 7 * H)),
            (co, week_end - H, 1, ("SKU-A",), script, {}),  # Sunday 23:00
        ]
        for moment, created, rating, skus, comment, done in week:
            rows.append(_add(site.id, moment, created, rating, team="support", skus=skus,
                             comment=comment, done=done, priority="critical"))
        for moment, created, rating in ((dl, w - 7 * D, 10), (dl, w - 6 * D, 10),
                                        (dl, w - 5 * D, 5), (co, w - 4 * D, 5),
                                        (co, w - 1 * M, 1)):  # the week before
            rows.append(_add(site.id, moment, created, rating, team="support",
                             skus=("SKU-OLD",), comment="from the week before"))
        rows.append(_add(site.id, dl, w - 7 * D - M, 0, team="support", comment="too old"))
        for created in (week_end, now - H):  # this week: not yet in any digest
            rows.append(_add(site.id, co, created, 1, team="support", skus=("SKU-NOW",),
                             comment="this week"))
        for i in range(4):  # other teams' answers
            rows.append(_add(site.id, dl, w + i * D, 0, team="logistics", skus=("SKU-L",),
                             comment="logistics only"))
            rows.append(_add(site.id, co, w + i * D, 1, team="sales", skus=("SKU-S",),
                             comment="sales only"))
        db.session.commit()
        s = db.session.get(Site, site.id)
        s.sla_ack_target = 0.4  # met this week: its line shows no MISSED
        db.session.commit()
        expected = _digest_lines(rows, s, "support", week_start, week_end, now)

        assert cron.weekly_digest(now) == 1
        mails = db.session.scalars(select(EmailMessage).where(EmailMessage.kind == "digest")).all()
        assert [(m.ref_key, m.recipients) for m in mails] == [
            (f"team:{support_id}:{label}", [SUPPORT])]
        mail = mails[0]
        assert mail.subject == f"[Shop] Weekly feedback digest for Customer support, {label}"
        text = {line.strip() for line in mail.body_text.splitlines()}
        for line in expected["lines"]:
            assert line in text, (line, mail.body_text)
        # The same figures, spelled out: the fixture's arithmetic checked by hand too.
        assert {"Answers: 11 (previous week: 5)", "NPS: 0.0 (-33.3)", "CSAT: 50.0 %",
                "CES: 50.0 % (+0.0)",
                "Negative-experience rate: 36.4 % (previous week: 40.0 %)",
                "ack: 45.5 % (5/11) · target 40.0 %",
                "close: 22.2 % (2/9) · target 95.0 % · MISSED", "followup: 0.0 % (0/6)",
                "SKU-A: 3/5", "delivery: 2/5", f"[1 negative] {script}"} <= text
        assert expected["top_sku"] == "SKU-A: 3/5" and expected["top_moment"] == "delivery: 2/5"
        for absent in ("SKU-NOW", "this week", "SKU-L", "logistics only", "sales only",
                       "SKU-OLD", "from the week before", "too old", *expected["left_out"]):
            assert absent not in mail.body_text, absent
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.body_html
        assert "<script>" not in mail.body_html
        assert "Late again" not in mail.body_text  # the 4th negative comment: only 3 shown

        assert cron.weekly_digest(now) == 0
        assert cron.weekly_digest(now + 2 * H) == 0
        assert _count(EmailMessage, EmailMessage.kind == "digest") == 1


def test_empty_week_sends_no_digest(make_app, db_kind, clock):
    """A team with no answers and no case activity last week gets no digest; a timeline event
    on one of its older cases (work done last week) is activity, so that week's digest goes."""
    app = make_app(db_kind, MAIL_PORT=free_port())
    site = make_site(app)
    support_id = _support_with_email(app, site)
    now = datetime(2030, 3, 11, 7, 0, tzinfo=UTC)  # a Monday
    week_start = now.replace(hour=0) - 7 * D
    clock.set(now)
    with app.app_context():
        ms = _moments(site.id)
        old = _add(site.id, ms["checkout"], week_start - 10 * D, 1, team="support",
                   comment="older")
        _add(site.id, ms["checkout"], now - H, 1, team="support")  # this week: not last week
        _add(site.id, ms["checkout"], week_start + D, 1, team="sales")  # another team's
        db.session.commit()
        assert cron.weekly_digest(now) == 0
        assert _count(EmailMessage, EmailMessage.kind == "digest") == 0

        db.session.add(CaseEvent(case_id=old["case_id"], kind="acknowledged",
                                 actor="agent@shop.example", created_at=week_start + 2 * D))
        db.session.commit()
        assert cron.weekly_digest(now) == 1
        (digest,) = db.session.scalars(select(EmailMessage).where(EmailMessage.kind == "digest"))
        assert digest.recipients == [SUPPORT]
        assert digest.ref_key == f"team:{support_id}:2030-W10"
        assert "Answers: 0 (previous week: 0)" in digest.body_text


# -- 4. retention -------------------------------------------------------------------------------


def _retention_fixture(app, now: datetime) -> dict[str, list[int]]:
    """Old (31 days) and new (exactly 30, 29 and 1 days) answers with every child row."""
    site = make_site(app)
    out: dict[str, list[int]] = {"old": [], "new": []}
    with app.app_context():
        ms = _moments(site.id)
        endpoint = WebhookEndpoint(site_id=site.id, url="https://hooks.example/in", events=[])
        db.session.add(endpoint)
        db.session.flush()
        for age, bucket in ((31 * D, "old"), (40 * D, "old"), (30 * D, "new"), (29 * D, "new"),
                            (1 * D, "new")):
            created = now - age
            row = _add(site.id, ms["checkout"], created, 1, team="support",
                       skus=("SKU-1", "SKU-2"), comment="gone or kept")
            case_id = row["case_id"]
            db.session.add(CaseEvent(case_id=case_id, kind="routed", created_at=created))
            db.session.add(CaseAlert(case_id=case_id, stage="ack", kind="breach", cycle=0,
                                     due_at=created + 2 * H, created_at=created + 2 * H))
            db.session.add(EmailMessage(
                site_id=site.id, case_id=case_id, kind="alert", ref_key=f"case:{case_id}",
                recipients=[SUPPORT], subject="s", body_text="t", body_html="h",
                message_id=f"<alert.{case_id}@x>", created_at=created))
            db.session.add(Impression(site_id=site.id, moment_id=ms["checkout"].id,
                                      channel="web", created_at=created))
            db.session.add(WebhookDelivery(endpoint_id=endpoint.id, site_id=site.id,
                                           event="response.created",
                                           dedupe_key=f"response:{row['response_id']}",
                                           payload="{}", created_at=created))
            db.session.add(Outbox(topic="route_response", ref_id=row["response_id"],
                                  created_at=created, attempts=1, done_at=created))
            out[bucket].append(row["response_id"])
            # A digest quotes comments but belongs to no case: it ages out by itself.
            db.session.add(EmailMessage(
                site_id=site.id, kind="digest", ref_key=f"team:1:{bucket}{age.days}",
                recipients=[SUPPORT], subject="s", body_text="t", body_html="h",
                message_id=f"<digest.{age.days}@x>", created_at=created))
        # An old outbox item never done stays: the sweeper still owes it.
        db.session.add(Outbox(topic="send_email", ref_id=999, created_at=now - 60 * D,
                              attempts=3))
        db.session.commit()
    return out


def _table_counts() -> dict[str, int]:
    return {m.__tablename__: _count(m) for m in (
        Response, ResponseSku, Case, CaseEvent, CaseAlert, EmailMessage, Impression,
        WebhookDelivery, Outbox)}


def test_purge_deletes_old_answers_with_children(make_app, db_kind):
    """RETENTION_DAYS=30 deletes older answers with all their children, keeps newer, runs twice."""
    app = make_app(db_kind, RETENTION_DAYS=30)
    now = datetime(2030, 6, 1, 3, 30, tzinfo=UTC)
    ids = _retention_fixture(app, now)
    with app.app_context():
        before = _table_counts()
        assert cron.purge(now) == {"short_links": 0, "voice_notes": 0, "responses": 2,
                                   "impressions": 2, "webhook_deliveries": 2, "emails": 2,
                                   "outbox": 2}
        db.session.expire_all()
        assert set(db.session.scalars(select(Response.id))) == set(ids["new"])
        for model in (ResponseSku, Case):
            assert _count(model, model.response_id.in_(ids["old"])) == 0
        after = _table_counts()
        removed = {k: before[k] - after[k] for k in before}
        assert removed == {"responses": 2, "response_skus": 4, "cases": 2, "case_events": 2,
                           "case_alerts": 2, "emails": 4, "impressions": 2,
                           "webhook_deliveries": 2, "outbox": 2}
        assert _count(Outbox, Outbox.done_at.is_(None)) == 1

        assert cron.purge(now.isoformat()) == {"short_links": 0, "voice_notes": 0,
                                               "responses": 0, "impressions": 0,
                                               "webhook_deliveries": 0, "emails": 0,
                                               "outbox": 0}
        assert _table_counts() == after


def test_purge_disabled_with_zero_retention(make_app, db_kind):
    """RETENTION_DAYS=0 keeps every answer: purge deletes no row (only expired SMS links,
    of which there are none here)."""
    app = make_app(db_kind, RETENTION_DAYS=0)
    now = datetime(2030, 6, 1, 3, 30, tzinfo=UTC)
    _retention_fixture(app, now)
    with app.app_context():
        before = _table_counts()
        assert cron.purge(now) == {"short_links": 0}
        assert _table_counts() == before
