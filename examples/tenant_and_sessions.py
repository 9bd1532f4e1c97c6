"""Provision a company with a manager and a trainee, run a session as the trainee, and look
at it as the manager: the same API, with Row-Level Security deciding what each one sees.

    voicesessions local start          # or set VOICESESSIONS_DSN / SUPABASE_URL + keys
    python examples/tenant_and_sessions.py
"""

from __future__ import annotations

from voicesessions import PermissionDeniedError, VoiceSessions


def main() -> None:
    with VoiceSessions.from_env() as vs:  # service role: provisioning, safe to run again
        mia = vs.tenants.onboard(
            "Northwind",
            "manager@northwind.example",
            role="manager",
            display_name="Mia",
            retention={"audio_days": 30},
        )
        company, manager_id = mia.company, mia.user_id
        trainee_id = vs.tenants.ensure_user("trainee@northwind.example")  # found or created
        vs.tenants.create_profile(trainee_id, company.id, display_name="Theo")  # or the same one

        trainee = vs.as_user(trainee_id)
        call = trainee.sessions.create(trainee_id, "Objection handling", scenario="price")
        print(f"Theo started {call.title!r} ({call.status.value})")

        manager = vs.as_user(manager_id)
        seen = manager.sessions.list(company_id=company.id, status="active")
        print(f"Mia sees {len(seen.items)} active session(s) of her team")
        try:
            manager.sessions.complete(call.id)
        except PermissionDeniedError as exc:
            print(f"Mia cannot end Theo's session: {exc.message}")

        done = trainee.sessions.complete(call.id)
        print(f"Theo ended it after {done.duration_seconds} s; status {done.status.value}")


if __name__ == "__main__":
    main()
