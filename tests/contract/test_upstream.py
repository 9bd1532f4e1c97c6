"""voicesessions._upstream against the installed realtime, supabase-auth and supabase.

An upgrade that renames, removes or retypes an attribute the adapter reads fails here, and
by name: every read goes through the adapter's check, which raises ConfigurationError naming
``Class.attribute``. The tests also pin *why* the adapter exists (what the public API does
not do), so a release that makes a workaround unnecessary fails here too and says which.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient

import supabase
from tests.contract.conftest import SERVICE_KEY
from tests.support.phoenix import PhoenixServer
from voicesessions import _realtime, _upstream
from voicesessions.errors import ConfigurationError

TOPIC = "session:upstream"
#: realtime-py reads ConnectionClosed.code, which websockets 15 deprecates (when a server
#: drops the connection; see tests/contract/test_realtime.py).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:ConnectionClosed\.(code|reason) is deprecated:DeprecationWarning"
)


def pending_realtime_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of this loop running realtime-py's code, not done."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and "/realtime/" in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    ]


def offline_client() -> AsyncRealtimeClient:
    """A real client of a server that is never contacted (building one opens nothing)."""
    return AsyncRealtimeClient("http://127.0.0.1:9/realtime/v1", SERVICE_KEY, auto_reconnect=False)


@pytest.fixture
def server() -> Iterator[PhoenixServer]:
    with PhoenixServer() as realtime:
        yield realtime


@pytest.fixture
async def joined(
    server: PhoenixServer,
) -> AsyncIterator[tuple[AsyncRealtimeClient, AsyncRealtimeChannel]]:
    """A client connected to the local Realtime server, with one channel joined. Its pushes
    wait 300 s for a reply (10 by default), so none times out while a test looks at it."""
    client = AsyncRealtimeClient(
        f"{server.url}/realtime/v1", SERVICE_KEY, auto_reconnect=False, timeout=300
    )
    await client.connect()
    channel = client.channel(TOPIC)
    await channel.subscribe()
    assert channel.is_joined
    try:
        yield client, channel
    finally:
        await _realtime._shut(client)


async def busy(
    client: AsyncRealtimeClient, channel: AsyncRealtimeChannel, server: PhoenixServer
) -> list[asyncio.Task[Any]]:
    """Give the client one task of every kind the adapter must find, as a feed can get
    them: a push awaiting its reply, a background send, then, once the server is gone, a
    push waiting for the next join and a scheduled rejoin. Returns the tasks so made."""
    await client.set_auth("a-new-token")  # an access_token push: the server never replies
    (awaiting,) = channel.messages_waiting_for_ack.values()
    # realtime-py runs sends this way (the buffered pushes after a join, presence changes)
    channel._run_in_background(asyncio.sleep(60))
    (background,) = channel._background_tasks
    server.drop()
    await server.until(lambda: not client.is_connected)
    buffered = await channel.push("broadcast", {"event": "x", "payload": {}})
    assert buffered.ref is None  # not sent: waiting in the channel's buffer
    channel.rejoin_timer.schedule_timeout(60)
    made = [awaiting.timeout_task, background, buffered.timeout_task, channel.rejoin_timer.timer]
    tasks = [task for task in made if task is not None]
    assert len(tasks) == 4
    assert not any(task.done() for task in tasks)
    return tasks


# -- every read works on the installed packages ---------------------------------------------


async def test_a_new_client_has_every_attribute_the_adapter_reads() -> None:
    client = offline_client()
    client.channel(TOPIC)
    assert _upstream.realtime_listener(client) is None
    assert _upstream.realtime_tasks(client) == []


async def test_the_adapter_finds_every_task_of_a_busy_client(
    joined: tuple[AsyncRealtimeClient, AsyncRealtimeChannel], server: PhoenixServer
) -> None:
    client, channel = joined
    listener = _upstream.realtime_listener(client)
    assert isinstance(listener, asyncio.Task)
    assert not listener.done()
    made = await busy(client, channel, server)
    found = _upstream.realtime_tasks(client)
    assert set(made) <= set(found)
    assert set(pending_realtime_tasks()) <= set(found)  # nothing realtime-py runs escapes it


async def test_shutting_a_busy_client_ends_every_task(
    joined: tuple[AsyncRealtimeClient, AsyncRealtimeChannel], server: PhoenixServer
) -> None:
    client, channel = joined
    made = await busy(client, channel, server)
    await _realtime._shut(client)
    assert all(task.done() for task in made)
    assert pending_realtime_tasks() == []


async def test_close_alone_leaves_tasks_running(
    joined: tuple[AsyncRealtimeClient, AsyncRealtimeChannel], server: PhoenixServer
) -> None:
    """Why realtime_tasks exists: the public close() leaves the rejoin timer, the reply
    timeouts and the background sends running. If this fails, realtime-py cleans up after
    itself: _shut can call close() alone and realtime_tasks can go."""
    client, channel = joined
    made = await busy(client, channel, server)
    await client.close()
    await asyncio.sleep(0)
    assert [task for task in made if task.done()] == []
    # (the fixture's _shut ends them)


async def test_a_listener_that_ended_leaves_the_client_connected(
    joined: tuple[AsyncRealtimeClient, AsyncRealtimeChannel],
) -> None:
    """Why realtime_listener exists: when the listening task ends by an exception, the
    public ``is_connected`` still says True, and nothing else tells."""
    client, _ = joined
    listener = _upstream.realtime_listener(client)
    assert listener is not None
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    assert client.is_connected
    assert _realtime._listener_failure(client) == "the listener was cancelled"


# -- a changed attribute fails loudly, by name ------------------------------------------------


def _channel(client: AsyncRealtimeClient) -> Any:
    return client.channels[f"realtime:{TOPIC}"]


#: (what the adapter reads, where it lives on a client with one channel)
REALTIME_READS: list[tuple[str, Callable[[AsyncRealtimeClient], Any], str]] = [
    ("AsyncRealtimeClient._listen_task", lambda c: c, "_listen_task"),
    ("AsyncRealtimeClient._heartbeat_task", lambda c: c, "_heartbeat_task"),
    ("AsyncRealtimeClient.channels", lambda c: c, "channels"),
    ("AsyncRealtimeChannel.rejoin_timer", _channel, "rejoin_timer"),
    ("AsyncTimer.timer", lambda c: _channel(c).rejoin_timer, "timer"),
    ("AsyncRealtimeChannel.join_push", _channel, "join_push"),
    ("AsyncRealtimeChannel.messages_waiting_for_ack", _channel, "messages_waiting_for_ack"),
    ("AsyncRealtimeChannel._push_buffer", _channel, "_push_buffer"),
    ("AsyncRealtimeChannel._background_tasks", _channel, "_background_tasks"),
    ("AsyncPush.timeout_task", lambda c: _channel(c).join_push, "timeout_task"),
]


@pytest.mark.parametrize("change", ["removed", "retyped"])
@pytest.mark.parametrize(
    ("name", "owner", "attribute"), [pytest.param(*read, id=read[0]) for read in REALTIME_READS]
)
async def test_a_changed_realtime_attribute_is_a_configuration_error_naming_it(
    name: str, owner: Callable[[AsyncRealtimeClient], Any], attribute: str, change: str
) -> None:
    client = offline_client()
    client.channel(TOPIC)
    target = owner(client)
    assert hasattr(target, attribute), f"realtime-py no longer has {name}"
    if change == "removed":
        delattr(target, attribute)
    else:
        setattr(target, attribute, "renamed elsewhere")
    with pytest.raises(ConfigurationError) as raised:
        _upstream.realtime_tasks(client)
    message = str(raised.value)
    assert f"{name} (" in message
    assert ("is missing" if change == "removed" else "is a str") in message
    assert message.startswith("realtime 2.")


# -- supabase-auth: the Auth clients' copies of the headers -----------------------------------


@pytest.fixture(params=["async", "sync"])
async def supabase_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A real supabase-py client of either face (building one sends nothing)."""
    url = "http://supabase.test"
    if request.param == "async":
        async with httpx.AsyncClient() as http:
            yield supabase.AsyncClient(
                url, SERVICE_KEY, supabase.AsyncClientOptions(httpx_client=http)
            )
    else:
        with httpx.Client() as sync_http:
            yield supabase.Client(url, SERVICE_KEY, supabase.ClientOptions(httpx_client=sync_http))


async def test_the_auth_clients_keep_copies_the_adapter_reaches(supabase_client: Any) -> None:
    """Why auth_header_copies exists: the Auth and Auth admin clients copy the client's
    headers when it is built, so removing a header from ``options.headers`` (public) leaves
    it in theirs; the adapter returns the dictionaries their requests send."""
    auth_headers, admin_headers = _upstream.auth_header_copies(supabase_client)
    assert auth_headers is supabase_client.auth._headers
    assert admin_headers is supabase_client.auth.admin._headers
    assert auth_headers is not admin_headers
    supabase_client.options.headers.pop("Authorization")
    assert auth_headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert admin_headers["Authorization"] == f"Bearer {SERVICE_KEY}"


@pytest.mark.parametrize("where", ["auth", "admin"])
async def test_changed_auth_headers_are_a_configuration_error_naming_them(
    supabase_client: Any, where: str
) -> None:
    api = supabase_client.auth if where == "auth" else supabase_client.auth.admin
    del api._headers
    with pytest.raises(ConfigurationError) as raised:
        _upstream.auth_header_copies(supabase_client)
    assert f"{type(api).__name__}._headers (" in str(raised.value)
    assert str(raised.value).startswith("supabase-auth 2.")
