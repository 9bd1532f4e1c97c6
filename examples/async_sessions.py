"""The async client: the same names as VoiceSessions, with `await`.

voicesessions local start          # or set VOICESESSIONS_DSN / SUPABASE_URL + keys
python examples/async_sessions.py
"""

from __future__ import annotations

import asyncio

from voicesessions import AsyncVoiceSessions


async def main() -> None:
    async with AsyncVoiceSessions.from_env() as vs:
        # Re-runnable: the second run finds Ada and her company instead of making new ones.
        ada = await vs.tenants.onboard("Async Co", "ada@async.example", display_name="Ada")
        rep = ada.user_id
        me = vs.as_user(rep)
        sessions = await asyncio.gather(
            *(me.sessions.create(rep, f"Warm-up {i}") for i in range(3))
        )
        page = await me.sessions.list(limit=2)
        print(
            f"created {len(sessions)}; first page {len(page.items)}, more: {bool(page.next_cursor)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
