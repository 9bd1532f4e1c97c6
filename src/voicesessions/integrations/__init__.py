"""Voice-stack integrations: store a live call from a voice-agent framework as a session.

    from voicesessions.integrations.pipecat import session_observer      # extra `pipecat`
    from voicesessions.integrations.livekit import record_agent_session  # extra `livekit`

Both are thin adapters over :class:`CallRecorder` (asyncio only: the frameworks are), which
holds the guarantees: segments numbered in order, a bounded buffer between the audio path
and the database (nothing in the frame path waits for the database), nothing final dropped
silently, the session completed at the end of the call. Importing this package imports no
framework; each adapter module imports its own and says which extra to install.
"""

from voicesessions.integrations._call import CallEnd, CallRecorder, CallResult

__all__ = ["CallEnd", "CallRecorder", "CallResult"]
