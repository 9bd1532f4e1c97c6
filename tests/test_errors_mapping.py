"""The error mapping as a whole: every code becomes a documented exception, only what can
succeed later is retried, and no exception repeats a huge value.

- every SQLSTATE PostgreSQL defines (psycopg's list) maps to an APIError subclass that is
  public; only the documented transient codes are TransientError; the statement timeout
  (57014) is QueryTimeoutError and fails after one attempt; program limits (54*) are
  InvalidInputError;
- every HTTP status 400..499 but 408 and 429 is permanent (one attempt), 401/403 are
  PermissionDeniedError;
- rows and answers of any shape are read into the models or refused with
  UnexpectedResponseError (hypothesis);
- messages, details and hints are capped.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import psycopg.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voicesessions
from voicesessions import models
from voicesessions._async import retry as async_retry
from voicesessions._retry_policy import RetryPolicy
from voicesessions._sync import retry as sync_retry
from voicesessions._validation import parse_model
from voicesessions.errors import (
    MAX_MESSAGE_CHARS,
    MAX_QUOTED_CHARS,
    APIError,
    InvalidInputError,
    PermissionDeniedError,
    QueryTimeoutError,
    TransientError,
    UnexpectedResponseError,
    brief,
    error_class_for_code,
    from_postgrest,
    from_sqlstate,
)

#: Every SQLSTATE PostgreSQL defines.
SQLSTATES = sorted(
    {
        cls.sqlstate
        for cls in vars(psycopg.errors).values()
        if inspect.isclass(cls) and isinstance(getattr(cls, "sqlstate", None), str)
    }
)

#: The codes documented as transient (README "Errors", errors.TransientError).
TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
TRANSIENT_CLASSES = {"08", "53"}

PUBLIC_ERRORS = {
    value
    for value in vars(voicesessions).values()
    if inspect.isclass(value) and issubclass(value, APIError)
}


def test_the_list_of_codes_is_postgresqls() -> None:
    assert len(SQLSTATES) > 200
    assert {"57014", "54001", "28P01", "3D000", "23505"} <= set(SQLSTATES)


@pytest.mark.parametrize("code", SQLSTATES)
def test_every_sqlstate_maps_to_a_public_error(code: str) -> None:
    error = from_sqlstate(code, "message")
    assert type(error) in PUBLIC_ERRORS
    transient = code in TRANSIENT or code[:2] in TRANSIENT_CLASSES
    assert isinstance(error, TransientError) == transient, code
    if code[:2] in ("22", "54"):
        assert isinstance(error, InvalidInputError)
    if code[:2] == "28":
        assert isinstance(error, PermissionDeniedError)


def test_a_statement_timeout_is_permanent() -> None:
    error = from_sqlstate("57014", "canceling statement due to statement timeout")
    assert isinstance(error, QueryTimeoutError)
    assert not isinstance(error, TransientError)
    # PostgREST answers it with a 500, which alone would read as transient: the code wins
    assert isinstance(
        from_postgrest({"code": "57014", "message": "x"}, http_status=500), QueryTimeoutError
    )


@pytest.mark.parametrize("status", range(400, 500))
def test_client_errors_over_http_are_permanent(status: int) -> None:
    cls = error_class_for_code(str(status), status)
    assert issubclass(cls, APIError)
    assert issubclass(cls, TransientError) == (status in (408, 429))
    if status in (401, 403):
        assert cls is PermissionDeniedError
    body_error = from_postgrest({"code": None, "message": "no"}, http_status=status)
    assert isinstance(body_error, TransientError) == (status in (408, 429))


# -- retries: one attempt for whatever is not transient -------------------------------------


async def attempts(face: str, error: BaseException) -> int:
    """How many times the retry policy calls a function that always raises ``error``."""
    calls = 0
    module: Any = async_retry if face == "async" else sync_retry

    async def no_sleep(_: float) -> None:
        return None

    def record() -> Any:
        nonlocal calls
        calls += 1
        raise error

    async def async_record() -> Any:
        return record()

    original = module._sleep
    module._sleep = no_sleep if face == "async" else (lambda _: None)
    try:
        policy = RetryPolicy(max_attempts=4)
        if face == "async":
            await module.call_with_retry(policy, async_record, idempotent=True)
        else:
            module.call_with_retry(policy, record, idempotent=True)
    except type(error):
        pass
    finally:
        module._sleep = original
    return calls


PERMANENT_ERRORS = [
    from_sqlstate("57014", "canceling statement due to statement timeout"),
    from_sqlstate("54001", "stack depth limit exceeded"),
    from_sqlstate("28P01", "password authentication failed"),
    from_sqlstate("3D000", 'database "x" does not exist'),
    *(
        from_postgrest({"code": None, "message": "no"}, http_status=s)
        for s in (400, 401, 403, 404, 409, 413, 422)
    ),
    from_postgrest({"code": "PGRST301", "message": "JWT expired"}, http_status=401),
    voicesessions.ConfigurationError("cannot connect"),
]


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize("error", PERMANENT_ERRORS, ids=lambda e: f"{type(e).__name__}")
async def test_permanent_errors_are_not_retried(face: str, error: BaseException) -> None:
    assert await attempts(face, error) == 1


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_transient_errors_still_are(face: str) -> None:
    assert await attempts(face, from_sqlstate("40001", "serialization failure")) == 4


# -- reading answers -------------------------------------------------------------------------

ROW_MODELS = [
    m
    for m in vars(models).values()
    if inspect.isclass(m) and issubclass(m, models._Row) and m is not models._Row
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def rows_for(draw: st.DrawFn, model: type[Any]) -> Any:
    """Mostly dicts with the model's field names and values of any JSON type; sometimes not
    a dict at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    fields = list(model.model_fields)
    chosen = draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
    row = {name: draw(json_values | st.just(str(uuid.uuid4()))) for name in chosen}
    return row


@pytest.mark.parametrize("model", ROW_MODELS, ids=lambda m: m.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_answers_of_any_shape_are_read_or_refused_as_unexpected(
    model: type[Any], data: st.DataObject
) -> None:
    row = data.draw(rows_for(model))
    message = None
    try:
        parsed = parse_model(model, row)
    except UnexpectedResponseError as exc:
        message = str(exc)
    else:
        assert isinstance(parsed, model)
    if message is not None:
        assert message.startswith(f"cannot read the answer as {model.__name__}")
        assert len(message) <= MAX_MESSAGE_CHARS + 100


def test_a_deeply_nested_answer_is_unexpected_not_a_recursion_error() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    with pytest.raises(UnexpectedResponseError):
        parse_model(models.Session, {"id": str(uuid.uuid4()), "metadata": deep})


# -- capped messages ---------------------------------------------------------------------------

HUGE = "x" * 1_000_000


def test_api_errors_cap_what_they_keep() -> None:
    error = from_postgrest(
        {"code": "22023", "message": HUGE, "details": HUGE, "hint": HUGE}, http_status=400
    )
    for text in (error.message, error.details, error.hint, str(error), repr(error)):
        assert len(text) < 4 * MAX_MESSAGE_CHARS
    assert error.message.startswith("xxx")
    assert "more characters" in error.message
    structured = APIError("m", details=[{"k": HUGE}] * 1000)
    assert len(repr(structured)) < 4 * MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "value",
    [HUGE, HUGE.encode(), [HUGE] * 10, {"k": [HUGE] * 10}, list(range(100_000)), {HUGE: 1}],
    ids=["str", "bytes", "list", "dict", "long-list", "huge-key"],
)
def test_brief_quotes_at_most_the_cap(value: Any) -> None:
    assert len(brief(value)) <= MAX_QUOTED_CHARS + 40


def test_brief_survives_deep_and_broken_values() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert len(brief(deep)) <= MAX_QUOTED_CHARS + 40
    assert brief(Broken()) == "<Broken>"
