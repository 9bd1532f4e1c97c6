"""A voice pipeline and a live view, async: one task streams a call while we watch it.

voicesessions local start          # or set VOICESESSIONS_DSN / SUPABASE_URL + keys
python examples/live_call.py
"""

from __future__ import annotations

import asyncio

from voicesessions import AsyncVoiceSessions

LINES = [("trainee", "Hi, it's Lee."), ("buyer", "Hello Lee."), ("trainee", "Shall we renew?")]


async def main() -> None:
    async with AsyncVoiceSessions.from_env() as vs:
        # Re-runnable: the second run finds Lee and Live Co instead of making new ones.
        lee = await vs.tenants.onboard("Live Co", "lee@live.example", display_name="Lee")
        rep = lee.user_id
        me = vs.as_user(rep)
        call = await me.sessions.create(rep, "Renewal call")

        async def pipeline() -> None:
            async with me.updates.stream(call.id, max_batch=10, max_delay_s=0.05) as s:
                for seq, (speaker, text) in enumerate(LINES):
                    segment = {"seq": seq, "speaker": speaker, "text": text}
                    await s.add({**segment, "start_ms": seq * 2000, "end_ms": seq * 2000 + 1500})
            await me.updates.update_session_status(call.id, "completed")

        heard = 0
        async with me.updates.events(call.id) as events:  # listening from here on
            writer = asyncio.create_task(pipeline())
            async for event in events:
                heard += len(event.final_segments)
                if event.event == "status":
                    break
            await writer

        transcript = await me.sessions.get_transcript(call.id)
        print(f"heard {heard} final segments live; stored transcript:\n{transcript.text}")


if __name__ == "__main__":
    asyncio.run(main())
