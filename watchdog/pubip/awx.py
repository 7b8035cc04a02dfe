"""A small client for the AWX / Automation Controller API v2: the calls pubip makes, nothing more.

- GET  {prefix}job_templates/ID/jobs/?status__in=pending,waiting,running   is a job of the template active?
- POST {prefix}job_templates/ID/launch/   201 {"job": N, ...}; 400 (missing input, or prompts it refuses),
  403 (not allowed), 404 (no such template), 405 / 409 (cannot be launched now)
- GET  {prefix}jobs/N/   status: new, pending, waiting, running, successful, failed, error, canceled
- GET  {prefix}jobs/N/job_events/?event=runner_on_ok   the plan the takeover run computed (its plan task)

Authentication: an OAuth2 / personal access token as `Authorization: Bearer`. AAP 2.5 and newer
serve the controller API under /api/controller/v2/ (api_prefix).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PubipError

if TYPE_CHECKING:
    import ssl

ACTIVE = ("pending", "waiting", "running")
FINISHED = ("successful", "failed", "error", "canceled")
PLAN_TASK = "Plan the assignment"


@dataclass
class AwxBackend:
    url: str
    job_template: int
    token: str
    api_prefix: str = "/api/v2/"
    timeout: float = 5.0
    verify_tls: bool = True


class AwxError(PubipError):
    """An AWX answer other than success; `code` is the HTTP status (0: no answer at all)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code

    @property
    def retryable(self) -> bool:
        # No answer, a server error, or "not now" (409): asking again later may work. 400/401/403/404
        # are configuration errors that the same request will meet again.
        return self.code == 0 or self.code >= 500 or self.code in (405, 409, 429)


class AwxClient:
    def __init__(self, url: str, token: str, api_prefix: str = "/api/v2/", timeout: float = 5.0,
                 verify_tls: bool = True):
        self.api = url.rstrip("/") + "/" + api_prefix.strip("/") + "/"
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if not verify_tls:
            import ssl

            self.context = ssl._create_unverified_context()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.error
        import urllib.request

        url = self.api + path
        req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise AwxError(exc.code, f"{method} {url}: HTTP {exc.code} {_detail(exc.read())}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AwxError(0, f"{method} {url}: {getattr(exc, 'reason', exc)}") from None

    def active_job(self, template: int) -> dict[str, Any] | None:
        """A pending, waiting or running job of the template, if any."""
        answer = self.call("GET", f"job_templates/{template}/jobs/?status__in={','.join(ACTIVE)}&page_size=1"
                                  "&order_by=-id") or {}
        results = answer.get("results") or []
        return results[0] if answer.get("count", 0) > 0 and results else (
            {"id": None, "status": "queued"} if answer.get("count", 0) > 0 else None)

    def launch(self, template: int, extra_vars: dict[str, Any], check: bool = False) -> int:
        """Launch the job template; AWX applies extra_vars / job_type only when the template asks on launch."""
        body: dict[str, Any] = {"extra_vars": extra_vars}
        if check:
            body.update(job_type="check", diff_mode=True)
        answer = self.call("POST", f"job_templates/{template}/launch/", body) or {}
        job = answer.get("job", answer.get("id"))
        if not isinstance(job, int):
            raise AwxError(0, f"launch of job template {template} answered without a job id: {answer}")
        ignored = answer.get("ignored_fields") or {}
        if "extra_vars" in ignored:
            raise AwxError(400, f"job template {template} ignored extra_vars: turn on 'Prompt on launch' "
                                f"for variables (ask_variables_on_launch)")
        return job

    def job(self, job: int) -> dict[str, Any]:
        return self.call("GET", f"jobs/{job}/") or {}

    def wait(self, job: int, timeout: float, poll: float = 0.5,
             on_status: Callable[[str], None] | None = None, cancelled: Callable[[], bool] | None = None
             ) -> dict[str, Any]:
        """Follow the job until it finishes; on_status sees every new status."""
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            data = self.job(job)
            status = str(data.get("status"))
            if status != seen and on_status:
                on_status(status)
            seen = status
            if status in FINISHED:
                return data
            if time.monotonic() > deadline or (cancelled and cancelled()):
                raise AwxError(0, f"job {job} still {status} after {timeout:.0f}s")
            time.sleep(poll)

    def plan(self, job: int) -> dict[str, Any] | None:
        """The takeover run's plan (the pubip_plan fact of its plan task), from the job's events."""
        # The task name AWX stores may carry the role's prefix: match it on our side.
        answer = self.call("GET", f"jobs/{job}/job_events/?event=runner_on_ok&page_size=200&order_by=counter") or {}
        for event in answer.get("results") or []:
            if not str(event.get("task") or "").endswith(PLAN_TASK):
                continue
            plan = (((event.get("event_data") or {}).get("res") or {}).get("ansible_facts") or {}).get("pubip_plan")
            if plan:
                return dict(plan)
        return None


def _detail(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return json.dumps(data)[:300]
