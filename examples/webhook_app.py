"""Receive Vapi's and Retell's end-of-call webhooks and store each call as a session.

Serve it (pip install 'voicesessions[webhooks]' uvicorn):

    export VOICESESSIONS_DSN=...            # or SUPABASE_URL + SUPABASE_SECRET_KEY
    export RETELL_API_KEY=key_...           # Retell signs its webhooks with your API key
    export VAPI_WEBHOOK_SECRET=...          # your Vapi assistant's server secret
    uvicorn examples.webhook_app:app --port 8000
    # Vapi:   server URL https://<host>/vapi    (server messages: end-of-call-report)
    # Retell: webhook URL https://<host>/retell

Each call names its trainee in its metadata (``voicesessions_profile_id``: Retell's
``metadata`` when creating the call, Vapi's ``assistantOverrides.metadata``), or set
VOICESESSIONS_WEBHOOK_PROFILE_ID for a single trainee.

Run as a script (python examples/webhook_app.py) it tries itself: it creates a trainee,
signs a sample Retell ``call_analyzed`` webhook and posts it to the app twice, in process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid

import httpx

from voicesessions import PROFILE_METADATA_KEY, AsyncVoiceSessions
from voicesessions.webhooks import create_app


def __getattr__(name: str) -> object:
    """``examples.webhook_app:app`` for uvicorn, made when asked for: secrets and client
    from the environment (a ConfigurationError names what is missing)."""
    if name == "app":
        return create_app()
    raise AttributeError(name)


def sample_call(profile_id: uuid.UUID) -> bytes:
    """A Retell ``call_analyzed`` webhook body of a short practice call."""
    start = int(time.time() * 1000) - 60_000
    lines = [
        ("agent", "Hi, this is Dana from Globex.", 0.3, 2.1),
        ("user", "Thanks for your time, Dana. How do you invoice today?", 2.8, 6.0),
    ]
    call = {
        "call_id": f"call_{uuid.uuid4().hex}",
        "call_type": "web_call",
        "agent_id": "agent_demo",
        "agent_name": "Dana",
        "start_timestamp": start,
        "end_timestamp": start + 7_000,
        "metadata": {PROFILE_METADATA_KEY: str(profile_id)},
        "transcript_object": [
            {"role": role, "content": text, "words": [{"word": text, "start": begin, "end": end}]}
            for role, text, begin, end in lines
        ],
        "call_analysis": {"call_summary": "A friendly opener.", "call_successful": True},
        "call_cost": {"combined_cost": 4.2, "product_costs": []},
    }
    return json.dumps({"event": "call_analyzed", "call": call}).encode()


def sign(raw: bytes, api_key: str) -> str:
    """``x-retell-signature`` as Retell sends it."""
    stamp = str(int(time.time() * 1000))
    digest = hmac.new(api_key.encode(), raw + stamp.encode(), hashlib.sha256).hexdigest()
    return f"v={stamp},d={digest}"


async def main() -> None:
    api_key = os.environ.get("RETELL_API_KEY") or "key_example"
    async with AsyncVoiceSessions.from_env() as vs:
        # Re-runnable: the second run finds Riley and Webhook Co instead of making new ones
        # (each run imports a new call: its call id is new).
        riley = await vs.tenants.onboard(
            "Webhook Co", "riley@webhook.example", display_name="Riley"
        )
        demo = create_app(vs, retell_api_key=api_key)
        raw = sample_call(riley.user_id)
        transport = httpx.ASGITransport(app=demo)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for _ in range(2):  # a redelivery stores nothing twice
                answer = await client.post(
                    "/retell", content=raw, headers={"x-retell-signature": sign(raw, api_key)}
                )
                print(answer.status_code, answer.json()["status"])
        session_id = answer.json()["session_id"]
        transcript = await vs.sessions.get_transcript(session_id)
        for segment in transcript.segments:
            print(f"{segment.start_ms:>5} ms {segment.speaker:>7}: {segment.text}")


if __name__ == "__main__":
    asyncio.run(main())
