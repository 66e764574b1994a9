"""Step retries with Trigger.dev's semantics, on top of Dagster: ``@retrying`` under ``@dg.op``/``@dg.asset``.

Trigger.dev's policy has a factor and a cap on the delay: the wait before attempt n+1 is
``min(max_delay, r * min_delay * factor**(n-1))`` with ``r`` drawn from [1, 2) when ``randomize`` (else 1),
and ``max_attempts`` counts the first attempt. Dagster's ``RetryPolicy`` has neither factor nor cap, and
it cannot see the run's tags or tell a 404 from a timeout. So the policy is applied from inside the step:
``retrying`` wraps the op's body, and when the body fails with an error ``is_retryable`` accepts, it
raises ``dg.RetryRequested(max_retries, seconds_to_wait)`` with the delay it computed; Dagster then
schedules the next attempt (the executor sleeps until it is due) exactly as for its own policy. A
non-retryable error, or the last attempt's, is re-raised as it is, so the step fails with its own message.

Why a decorator rather than a ``dg.RetryPolicy`` subclass or an op factory: it needs nothing from
Dagster's internals, it works unchanged on ops and assets (the context comes from
``dg.OpExecutionContext.get()``, so the body need not take one), and the op keeps its own signature,
config and resources. Every attempt logs its number, the error and the delay it chose.

Which policy applies, most specific first (Trigger.dev's order: trigger > task > project):

1. the run tag ``offload/max_attempts`` (per run; only the number of attempts, as ``maxAttempts`` on trigger);
2. the job's policy, the tag ``offload/retry`` that ``RetryPolicy.tags()`` makes for ``to_job(tags=...)``;
3. the policy given to ``@retrying(...)`` on the op;
4. ``DEFAULT_POLICY``, the project default (Trigger.dev's ``retries.default``): 3 attempts, factor 2,
   1 s, 10 s.

In development (a process started by ``dagster dev`` / ``offload dev``), ``OFFLOAD_RETRIES_IN_DEV=false``
turns every step to a single attempt (Trigger.dev's ``enabledInDev``). It defaults to true here, unlike
Trigger.dev's template: ``offload dev`` is also how the embedded default runs jobs on one machine, and
there a transient error should be retried as in production.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offload.errors import AbortTaskRunError, is_retryable
from offload.log import StepLog

MAX_ATTEMPTS_TAG = "offload/max_attempts"
"""Run tag: the number of attempts for every retrying step of this run (Trigger.dev's per-trigger
``maxAttempts``)."""
POLICY_TAG = "offload/retry"
"""Job (or run) tag: a whole ``RetryPolicy`` as JSON; ``RetryPolicy.tags()`` writes it."""
RETRIES_IN_DEV_ENV = "OFFLOAD_RETRIES_IN_DEV"
MAX_ATTEMPTS_LIMIT = 100

F = TypeVar("F", bound=Callable[..., Any])


class RetryPolicy(BaseModel):
    """How often a step is tried and how long to wait in between (Trigger.dev's ``retry`` options).

    ``max_attempts`` counts the first attempt; delays are in seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS_LIMIT)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    min_delay: float = Field(default=1.0, ge=0.0)
    max_delay: float = Field(default=10.0, ge=0.0)
    randomize: bool = True

    @model_validator(mode="after")
    def _cap_not_below_minimum(self) -> RetryPolicy:
        if self.max_delay < self.min_delay:
            raise ValueError(f"max_delay ({self.max_delay}) must not be below min_delay ({self.min_delay})")
        return self

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after attempt ``attempt`` (1 = the first) failed, before the next one."""
        if attempt < 1:
            raise ValueError(f"attempt: must be 1 or more, got {attempt}")
        r = 1.0 + rand() if self.randomize else 1.0  # random() is in [0, 1), so r in [1, 2)
        return min(self.max_delay, r * self.min_delay * self.factor ** (attempt - 1))

    def tags(self) -> dict[str, str]:
        """The job tag that makes this the policy of every retrying step of a job (``to_job(tags=...)``)."""
        return {POLICY_TAG: self.model_dump_json()}


DEFAULT_POLICY = RetryPolicy()
"""The project-wide default, set here only: 3 attempts, factor 2, 1 s, capped at 10 s, randomized."""


def retries_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False only in development (``dagster dev`` sets ``DAGSTER_IS_DEV_CLI``) with retries switched off."""
    env = os.environ if environ is None else environ
    if not env.get("DAGSTER_IS_DEV_CLI"):
        return True
    value = env.get(RETRIES_IN_DEV_ENV, "true").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{RETRIES_IN_DEV_ENV}: must be true or false, got {value!r}")


def _one_line(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in error.errors())


def effective_policy(
    declared: RetryPolicy | None, tags: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> RetryPolicy:
    """The policy a step runs under, from the run's tags, the op's declaration and the project default.

    A bad tag raises ``ValueError`` with one line naming the tag and the rule.
    """
    policy = declared or DEFAULT_POLICY
    if POLICY_TAG in tags:
        try:
            policy = RetryPolicy.model_validate_json(tags[POLICY_TAG])
        except ValidationError as error:
            raise ValueError(f"tag {POLICY_TAG}: {_one_line(error)}") from None
    if MAX_ATTEMPTS_TAG in tags:
        raw = tags[MAX_ATTEMPTS_TAG].strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(
                f"tag {MAX_ATTEMPTS_TAG} = {raw!r}: must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"
            )
        policy = policy.model_copy(update={"max_attempts": int(raw)})
    if not retries_enabled(environ):
        policy = policy.model_copy(update={"max_attempts": 1})
    return policy


def _summary(error: BaseException) -> str:
    if isinstance(error, dg.Failure) and error.description:
        return error.description
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Attempt:
    """One attempt of a retrying step: which it is, under which policy, and what follows a failure."""

    def __init__(self, declared: RetryPolicy | None):
        context = dg.OpExecutionContext.get()
        self.log = StepLog(context)
        try:
            self.policy = effective_policy(declared, context.run.tags)
        except ValueError as error:
            raise AbortTaskRunError(str(error)) from None
        self.number = context.retry_number + 1
        if self.number > 1:
            self.log.info(
                f"attempt {self.number} of {self.policy.max_attempts}",
                {"attempt": self.number, "max_attempts": self.policy.max_attempts},
            )

    def after(self, error: Exception) -> dg.RetryRequested | None:
        """Log the failure; the ``RetryRequested`` to raise if another attempt is due, else None."""
        fields: dict[str, Any] = {
            "attempt": self.number,
            "max_attempts": self.policy.max_attempts,
            "error": _summary(error),
        }
        head = f"attempt {self.number} of {self.policy.max_attempts} failed"
        if not is_retryable(error):
            self.log.error(f"{head}, not retryable", fields)
            return None
        if self.number >= self.policy.max_attempts:
            self.log.error(f"{head}, no attempts left", fields)
            return None
        delay = self.policy.delay(self.number)
        fields["delay_s"] = round(delay, 3)
        self.log.warning(f"{head}, retrying in {delay:.2f} s", fields)
        return dg.RetryRequested(max_retries=self.policy.max_attempts - 1, seconds_to_wait=delay)


@contextmanager
def _attempt(declared: RetryPolicy | None) -> Iterator[None]:
    """Run one attempt's body; turn a retryable failure into ``dg.RetryRequested``, re-raise any other."""
    attempt = _Attempt(declared)
    try:
        yield
    except dg.RetryRequested:
        raise  # the body chose its own retry; respect it
    except Exception as error:
        request = attempt.after(error)
        if request is None:
            raise
        raise request from error


def retrying(policy: RetryPolicy | None = None) -> Callable[[F], F]:
    """Retry the decorated op or asset body under Trigger.dev's semantics; put it under ``@dg.op``.

    ``policy`` is the op's own policy; without it the op follows the job's (``RetryPolicy.tags()``) or the
    project default. Plain functions, generators (ops that yield outputs) and coroutines are supported.
    """

    def decorate(fn: F) -> F:
        wrapper = _wrap(fn, policy)
        # Dagster reads config, resources and inputs off the signature. Under ``from __future__ import
        # annotations`` its annotations are strings, which Dagster would resolve in this module: hand it
        # the signature resolved in ``fn``'s own module instead. A name imported only for type checking
        # cannot be resolved: then the strings are left to Dagster.
        with contextlib.suppress(NameError):
            wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _wrap(fn: F, policy: RetryPolicy | None) -> F:
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            with _attempt(policy):
                return (yield from fn(*args, **kwargs))

        return cast(F, generator)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            with _attempt(policy):
                return await fn(*args, **kwargs)

        return cast(F, coroutine)

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        with _attempt(policy):
            return fn(*args, **kwargs)

    return cast(F, plain)
