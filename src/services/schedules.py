"""Schedules: a user's message sent to a workflow on a cron expression or an interval.

Contract:
- `create`, `list_schedules`, `get`, `update`, `delete` take the acting user; another user's
  schedule answers exactly like a missing one (404). A bad `cron` (5 fields, croniter), `tz`
  (IANA), `every_s` (at least 10), both or neither of `cron` and `every_s`, a `workflow_id` the
  user cannot run (missing, or another user's: the same answer) or a webhook host that is not
  allowed is a 400 naming the field; nothing is stored.
- Each firing is an ordinary run (`RunManager.submit`, as `POST /api/runs` starts one) of the
  workflow as it is then, as the schedule's owner, in the schedule's own session
  (`schedule-<id>`, made by the first firing), with the owner's limits and budget, and nobody to
  answer a human-input prompt. A firing the run path refuses (a limit, a credential that is gone)
  starts no run and is recorded on the schedule (`last_error`); the schedule goes on.
- Exactly one firing per due time across every process: each process's ticker (`fire_due`)
  claims a due time in the database (`ScheduleRepository.claim`, a conditional UPDATE) before it
  fires, and the claim moves `next_fire_at` to the first due time after now. So times missed
  while no server ran are not fired in a burst: the first tick after a start fires once for all
  of them (at most one catch-up firing), then the schedule keeps its rhythm. A process that dies
  between the claim and the run's start loses that one firing (never fires it twice).
- A schedule stops, with `stopped_reason`, when its workflow was deleted or the API key that
  created it (in `auth.mode: token`) was revoked; a change (PATCH) re-checks it and, with a
  workflow it can run (and, signed in with a key, that key now), restarts it.
"""

from __future__ import annotations

import logging
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from croniter import croniter

from ..schemas.chat import Message
from ..schemas.pagination import Page
from ..schemas.schedules import CreateScheduleRequest, ScheduleInfo, UpdateScheduleRequest
from ..schemas.webhooks import WebhookSpec
from ..storage.schedules import ScheduleRepository, StoredSchedule
from ..storage.workflows import from_micros
from .errors import BadRequest, LimitExceeded, NotFound, RunFailed, Unavailable
from .history import zone
from .pagination import Listing, listing, start_after
from .runs import RunManager
from .webhooks import WebhookService
from .workflows import WorkflowService

log = logging.getLogger(__name__)

SCHEDULES = "schedules"
KEY_SHAPE: tuple[type, ...] = (int, str)
CRON_FIELDS = 5
# Firings one process starts at once in a tick (each stores a run and queues it).
FIRERS = 4


def check_cron(expression: str) -> str:
    """A 5-field cron expression croniter reads (the API names the field in the 400)."""
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != CRON_FIELDS:
        raise BadRequest(
            "invalid request: cron: must have 5 fields (minute hour day-of-month month day-of-week), e.g. '0 7 * * 1-5'"
        )
    try:
        croniter(expression).get_next(datetime)  # an expression no date matches (Feb 31) raises here
    except Exception as exc:  # CroniterError mostly; whatever the parser raises, it is not valid
        raise BadRequest(f"invalid request: cron: not a valid cron expression ({exc})") from None
    return expression


def next_due(
    cron: str | None, every_s: int | None, tz: str, now: datetime, anchor: datetime | None = None
) -> datetime:
    """The first due time after `now`: the cron expression's next time in `tz`, or `anchor`
    (the last due time, else now) plus a whole number of intervals."""
    if cron is not None:
        local = now.astimezone(zone(tz))
        found: datetime = croniter(cron, local).get_next(datetime)
        return found.astimezone(UTC)
    assert every_s is not None
    if anchor is None or anchor > now:
        return now + timedelta(seconds=every_s)
    steps = math.floor((now - anchor).total_seconds() / every_s) + 1
    return anchor + timedelta(seconds=every_s * steps)


class ScheduleService:
    def __init__(
        self,
        store: ScheduleRepository,
        runs: RunManager,
        workflows: WorkflowService,
        webhooks: WebhookService,
    ) -> None:
        self._store = store
        self._runs = runs
        self._workflows = workflows
        self._webhooks = webhooks

    # the owner's -------------------------------------------------------------------------------

    def create(self, user_id: str, body: CreateScheduleRequest, key_id: str | None) -> ScheduleInfo:
        cron, every_s = self._timing(body.cron, body.every_s)
        tz = self._tz(body.tz)
        self._runnable(user_id, body.workflow_id)
        webhook_url = self._webhook(body.webhook)
        now = datetime.now(UTC)
        schedule_id = "sch_" + uuid.uuid4().hex
        stored = StoredSchedule(
            schedule_id=schedule_id,
            user_id=user_id,
            workflow_id=body.workflow_id,
            message=body.message,
            cron=cron,
            every_s=every_s,
            tz=tz,
            enabled=body.enabled,
            webhook_url=webhook_url,
            session_id=f"schedule-{schedule_id}",
            key_id=key_id,
            stopped_reason=None,
            next_fire_at=next_due(cron, every_s, tz, now) if body.enabled else None,
            last_fired_at=None,
            last_run_id=None,
            last_error=None,
            last_error_at=None,
            fire_count=0,
            created_at=now,
            updated_at=now,
        )
        self._store.create(stored)
        return info(stored)

    def list_schedules(self, user_id: str, limit: int, cursor: str | None = None) -> Listing[ScheduleInfo]:
        after = start_after(SCHEDULES, cursor, KEY_SHAPE)
        since = None
        if after is not None:
            try:
                since = (from_micros(int(after[0])), str(after[1]))
            except OverflowError as exc:
                raise BadRequest(f"invalid request: cursor: not a cursor of this list ({SCHEDULES})") from exc
        page = self._store.page(user_id, limit, since)
        return listing(SCHEDULES, Page([info(s) for s in page.items], page.next_key))

    def get(self, user_id: str, schedule_id: str) -> ScheduleInfo:
        return info(self._own(user_id, schedule_id))

    def update(
        self, user_id: str, schedule_id: str, body: UpdateScheduleRequest, key_id: str | None
    ) -> ScheduleInfo:
        """Change the fields sent. A change re-checks the workflow (unless it pauses the
        schedule) and, signed in with a key, ties the schedule to that key: so it restarts a
        stopped schedule whose cause is gone."""
        current = self._own(user_id, schedule_id)
        sent = body.model_fields_set - {"user_id"}
        for name in ("workflow_id", "message", "enabled"):
            if name in sent and getattr(body, name) is None:
                raise BadRequest(f"invalid request: {name}: cannot be null")
        cron, every_s = current.cron, current.every_s
        if "cron" in sent or "every_s" in sent:
            cron, every_s = self._timing(body.cron, body.every_s)
        tz = self._tz(body.tz) if "tz" in sent else current.tz
        workflow_id = body.workflow_id or current.workflow_id
        enabled = current.enabled if body.enabled is None else body.enabled
        if "workflow_id" in sent or enabled:  # pausing one whose workflow is gone is fine
            self._runnable(user_id, workflow_id)
        values: dict[str, object] = {
            "cron": cron,
            "every_s": every_s,
            "tz": tz,
            "workflow_id": workflow_id,
            "message": body.message or current.message,
            "enabled": enabled,
        }
        if "webhook" in sent:
            values["webhook_url"] = self._webhook(body.webhook)
        if key_id is not None:
            values["key_id"] = key_id
        elif current.key_id is not None and self._store.key_revoked(current.key_id):
            raise BadRequest(
                "the API key that created this schedule was revoked: change it signed in with a live key"
            )
        retimed = bool({"cron", "every_s", "tz", "enabled"} & sent) or current.stopped_reason is not None
        if retimed or current.next_fire_at is None:
            values["next_fire_at"] = next_due(cron, every_s, tz, datetime.now(UTC)) if enabled else None
        changed = self._store.change(user_id, schedule_id, values, restart=True)
        if changed is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return info(changed)

    def delete(self, user_id: str, schedule_id: str) -> None:
        """The schedule goes; its session and the runs it started stay."""
        if not self._store.delete(user_id, schedule_id):
            raise NotFound(f"schedule {schedule_id} not found")

    def _own(self, user_id: str, schedule_id: str) -> StoredSchedule:
        found = self._store.get(user_id, schedule_id)
        if found is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return found

    @staticmethod
    def _timing(cron: str | None, every_s: int | None) -> tuple[str | None, int | None]:
        if cron is not None and every_s is not None:
            raise BadRequest("invalid request: cron: give cron or every_s, not both")
        if cron is None and every_s is None:
            raise BadRequest("invalid request: cron: give cron (5 fields) or every_s (seconds), one of them")
        return (check_cron(cron) if cron is not None else None), every_s

    @staticmethod
    def _tz(tz: str | None) -> str:
        zone(tz)  # a 400 naming `tz` when it is no IANA zone
        return tz or "UTC"

    def _runnable(self, user_id: str, workflow_id: str) -> None:
        try:
            self._workflows.resolve(user_id, workflow_id)
        except NotFound as exc:
            raise BadRequest(f"workflow_id: {exc}") from None

    def _webhook(self, spec: WebhookSpec | None) -> str | None:
        return None if spec is None else self._webhooks.check(spec.url, "webhook.url")

    # the ticker's ------------------------------------------------------------------------------

    def fire_due(self) -> int:
        """One tick: claim every schedule whose due time has come (those another process claims
        first are its own), then fire the claimed ones, a few at once. Returns how many this
        process fired."""
        now = datetime.now(UTC)
        claimed = [s for s in self._store.due(now) if self._claim(s, now)]
        if claimed:
            with ThreadPoolExecutor(min(FIRERS, len(claimed)), thread_name_prefix="schedule") as pool:
                for _ in pool.map(lambda s: self._fire_safely(s, now), claimed):
                    pass
        return len(claimed)

    def _claim(self, schedule: StoredSchedule, now: datetime) -> bool:
        due = schedule.next_fire_at
        assert due is not None
        following = next_due(schedule.cron, schedule.every_s, schedule.tz, now, anchor=due)
        return self._store.claim(schedule.schedule_id, due, following)

    def _fire_safely(self, schedule: StoredSchedule, now: datetime) -> None:
        try:
            self._fire(schedule, now)
        except Exception as exc:  # never the ticker's end: the schedule says what happened
            log.exception("schedule %s: the firing failed", schedule.schedule_id)
            self._store.refused(schedule.schedule_id, f"internal error ({type(exc).__name__})", now)

    def _fire(self, schedule: StoredSchedule, now: datetime) -> None:
        sid = schedule.schedule_id
        if schedule.key_id is not None and self._store.key_revoked(schedule.key_id):
            reason = f"the API key {schedule.key_id} that created the schedule was revoked"
            self._stop(sid, reason)
            return
        try:
            flow, ref = self._workflows.resolve(schedule.user_id, schedule.workflow_id)
        except NotFound:
            self._stop(
                sid, f"workflow {schedule.workflow_id} was deleted: give the schedule another workflow_id"
            )
            return
        message = Message(
            user_id=schedule.user_id, role="user", content=schedule.message, session_id=schedule.session_id
        )
        try:
            prepared = self._runs.submit(
                message, flow, interactive=False, workflow=ref, webhook=schedule.webhook_url
            )
        except LimitExceeded as exc:
            self._store.refused(sid, f"no run: a limit of the owner was reached ({exc.limit}): {exc}", now)
        except (BadRequest, RunFailed, Unavailable) as exc:
            self._store.refused(sid, f"no run: {exc}", now)
        else:
            self._store.fired(sid, prepared.run_id, now)

    def _stop(self, schedule_id: str, reason: str) -> None:
        log.warning("schedule %s stopped: %s", schedule_id, reason)
        self._store.stop(schedule_id, reason)


def info(s: StoredSchedule) -> ScheduleInfo:
    state = "stopped" if s.stopped_reason is not None else ("active" if s.enabled else "paused")
    return ScheduleInfo(
        id=s.schedule_id,
        user_id=s.user_id,
        workflow_id=s.workflow_id,
        message=s.message,
        cron=s.cron,
        every_s=s.every_s,
        tz=s.tz,
        enabled=s.enabled,
        webhook=WebhookSpec(url=s.webhook_url) if s.webhook_url else None,
        session_id=s.session_id,
        state=state,
        stopped_reason=s.stopped_reason,
        next_fire_at=s.next_fire_at,
        last_fired_at=s.last_fired_at,
        last_run_id=s.last_run_id,
        last_error=s.last_error,
        last_error_at=s.last_error_at,
        fire_count=s.fire_count,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )
