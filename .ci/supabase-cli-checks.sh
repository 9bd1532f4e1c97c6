#!/usr/bin/env bash
# The real Supabase CLI against our migrations, without Docker.
#
# Starts a local PostgreSQL (`voicesessions local start`, which applies supabase/migrations and
# records them where the CLI reads its history), adds the Supabase objects the functions use
# only on Supabase (Realtime's schema, GoTrue's audit log: tests/support/supabase.py), then:
#   - `supabase migration list`: every file in supabase/migrations is applied;
#   - `supabase db push --dry-run`: nothing to push;
#   - `supabase db lint --level warning`: no plpgsql_check finding (the server needs the
#     plpgsql_check extension: Debian's postgresql-15-plpgsql-check);
#   - `supabase db advisors --level warn`: no security or performance warning;
#   - `supabase migration up`, on a fresh database of the same server holding only the
#     Supabase-compatibility bootstrap (src/voicesessions/local/compat.sql), applies every
#     file; `voicesessions db status` then agrees that each one is applied, the schema is the
#     one `voicesessions db migrate` builds (pg_dump --schema-only, identical), and the two
#     tools recorded the same history (versions, names, statements);
# and fails on any of these, on any CLI warning (about supabase/config.toml: unknown or
# deprecated keys), and if its own probes (a broken function, an unknown config key, a
# function more in the database `migration up` built, an unmigrated database) are not caught. The server is stopped and its directory removed on exit.
#
# Usage: SUPABASE=/path/to/supabase .ci/supabase-cli-checks.sh   (run from the activated venv;
# .ci/run installs the CLI from npm into .ci/.supabase-cli first)
# Every command here runs without Docker (checked with CLI 3.1.0); `supabase start`,
# `supabase db reset` and `supabase test db` need it and are not run (skipped, and said so,
# at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

SUPABASE="${SUPABASE:-supabase}"
# The local server listens on 127.0.0.1 without TLS: say so, so the CLI does not warn about it.
export PGSSLMODE=disable

work="$(mktemp -d)"
# As root the server runs as an unprivileged user, which must reach its data directory.
chmod o+x "$work"
export VOICESESSIONS_HOME="$work/home"
cleanup() {
  voicesessions local stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "supabase-cli-checks: $*" >&2
  exit 1
}

# Lines of CLI output that are warnings (config keys unknown or deprecated, flags deprecated).
WARNING_RE='warn|deprecat|not recognize|config\.toml'

# cli NAME ARGS...: runs the CLI, shows its output, fails on a non-zero exit or a warning.
# The output is left in $work/NAME.out.
cli() {
  local name="$1"
  shift
  local out="$work/$name.out" rc=0
  echo "+ supabase $*"
  "$SUPABASE" "$@" >"$out" 2>&1 || rc=$?
  cat "$out"
  [ "$rc" -eq 0 ] || fail "supabase $1 exited with $rc"
  if grep -Eiv '"level"' "$out" | grep -Eiq "$WARNING_RE"; then
    fail "supabase $1 printed a warning (see above)"
  fi
}

# run_sql DSN SQL: runs SQL on the database of DSN.
run_sql() {
  python -c '
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(sys.argv[2].encode())
' "$1" "$2"
}

echo "Supabase CLI $("$SUPABASE" --version)"

voicesessions local start >"$work/start.out" || { cat "$work/start.out"; fail "local start failed"; }
dsn="$(grep -o 'postgresql://[^ ]*' "$work/start.out" | head -n 1)"
[ -n "$dsn" ] || { cat "$work/start.out"; fail "no DSN in the output of voicesessions local start"; }

# supabase_only DSN: adds those objects to the database of DSN.
supabase_only() {
  python - "$1" <<'PY'
import sys

import psycopg

from tests.support.supabase import AUTH_AUDIT_LOG_DDL, REALTIME_DDL

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(REALTIME_DDL.encode())
    conn.execute(AUTH_AUDIT_LOG_DDL)
PY
}
supabase_only "$dsn"

# 1. Every migration file is applied, as the CLI reads the history.
cli list migration list --remote "$dsn"
for file in supabase/migrations/*.sql; do
  version="$(basename "$file" | cut -d_ -f1)"
  tr -d '`' <"$work/list.out" | grep -Eq "^\s*$version\s*\|\s*$version\s*\|" \
    || fail "migration $version is not listed as applied"
done

# 2. Nothing to push.
cli push db push --remote "$dsn" --dry-run
grep -q "Remote database is up to date" "$work/push.out" || fail "db push --dry-run would push"

# 3. plpgsql_check clean at the warning level.
cli lint db lint --remote "$dsn" --level warning --fail-on warning
grep -q "No schema errors found" "$work/lint.out" || fail "db lint found something"

# 4. The advisors (security and performance) clean at the warn level.
cli advisors db advisors --remote "$dsn" --level warn --fail-on warn
grep -q "No issues found" "$work/advisors.out" || fail "db advisors found something"

# 5. `supabase migration up` applies our files on top of the compat bootstrap alone: a fresh
#    database on the same server, bootstrapped as `voicesessions db migrate` does on plain
#    PostgreSQL, then migrated by the CLI and read back by voicesessions.
fresh="$(python - "$dsn" <<'PY'
import sys

from urllib.parse import urlsplit

import psycopg

from voicesessions.local import migrations

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("create database vs_cli_migration_up")
# A URL (what --remote takes), naming the new database.
fresh = urlsplit(sys.argv[1])._replace(path="/vs_cli_migration_up").geturl()
with psycopg.connect(fresh, autocommit=True) as conn:
    assert migrations.bootstrap(conn), "the compat bootstrap did not run on plain PostgreSQL"
print(fresh)
PY
)"
# db_status DSN: "<applied> <known> <unknown>" as `voicesessions db status --json` reports.
db_status() {
  voicesessions db status --dsn "$1" --json | python -c '
import json, sys
rows = json.load(sys.stdin)
print(sum(r["applied"] for r in rows), sum(r["known"] for r in rows), sum(not r["known"] for r in rows))'
}
total="$(ls supabase/migrations/*.sql | wc -l)"
[ "$(db_status "$fresh")" = "0 $total 0" ] \
  || fail "probe: voicesessions db status does not show the fresh database as unmigrated"
cli up migration up --remote "$fresh" --yes
[ "$(db_status "$fresh")" = "$total $total 0" ] \
  || { voicesessions db status --dsn "$fresh"; fail "migration up left migrations pending"; }
for file in supabase/migrations/*.sql; do
  grep -q "Applying migration $(basename "$file")" "$work/up.out" \
    || fail "migration up did not apply $(basename "$file")"
done
voicesessions db migrate --dsn "$fresh" --dry-run | tee "$work/dry.out"
grep -q "Database is up to date ($total migrations applied)" "$work/dry.out" \
  || fail "voicesessions db migrate would apply something after supabase migration up"
supabase_only "$fresh"  # as on the first database: after the migrations
bindir="$(python -c 'from voicesessions.local.server import find_binaries; print(find_binaries().bindir)')"
# schema DSN FILE: the schema of DSN (pg_dump's \restrict lines carry a random key per run:
# left out of the comparison).
schema() {
  "$bindir/pg_dump" --schema-only --no-owner "$1" | grep -Ev '^\\(un)?restrict ' >"$2"
}
schema "$dsn" "$work/ours.sql"
schema "$fresh" "$work/cli.sql"
grep -q 'CREATE TABLE public.sessions ' "$work/ours.sql" || fail "pg_dump printed no schema"
diff -u "$work/ours.sql" "$work/cli.sql" >"$work/schema.diff" \
  || { head -n 60 "$work/schema.diff"; fail "migration up built another schema than voicesessions db migrate"; }
# Probe: one more function in either database is a difference.
run_sql "$fresh" 'create function public.vs_ci_probe() returns int language sql return 1'
schema "$fresh" "$work/probe.sql"
if diff -q "$work/ours.sql" "$work/probe.sql" >/dev/null; then
  fail "probe: the schema comparison did not see an added function"
fi
run_sql "$fresh" 'drop function public.vs_ci_probe()'
python - "$dsn" "$fresh" <<'PY' || fail "the CLI recorded another history than voicesessions"
import sys

import psycopg


def history(dsn: str) -> list[tuple[str, str, list[str]]]:
    # The CLI strips each statement's final semicolon, sqlparse keeps it: the same statement.
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).fetchall()
    return [(v, n, [s.strip().removesuffix(";").rstrip() for s in st]) for v, n, st in rows]


ours, cli = history(sys.argv[1]), history(sys.argv[2])
if ours != cli:
    print("histories differ at", [a[0] for a, b in zip(ours, cli) if a != b], len(ours), len(cli))
    sys.exit(1)
PY

# Probes: the checks above must be able to fail.
psql_probe() {
  run_sql "$dsn" "$1"
}
psql_probe 'create function public.vs_ci_probe() returns int language plpgsql
  as $$ begin return (select 1 from public.vs_ci_no_such_table); end $$'
if "$SUPABASE" db lint --remote "$dsn" --level warning --fail-on warning >"$work/probe.out" 2>&1; then
  cat "$work/probe.out"
  fail "probe: db lint did not fail on a function reading a missing table"
fi
psql_probe 'drop function public.vs_ci_probe()'

mkdir -p "$work/probe/supabase"
cp supabase/config.toml "$work/probe/supabase/"
printf '\n[auth.email.vs_ci_probe]\nunknown = true\n' >>"$work/probe/supabase/config.toml"
"$SUPABASE" --workdir "$work/probe" migration list --remote "$dsn" >"$work/probe.out" 2>&1 || true
grep -Eiq "$WARNING_RE" "$work/probe.out" \
  || { cat "$work/probe.out"; fail "probe: no CLI warning for an unknown config key"; }

echo "supabase-cli-checks: skipped (they need Docker): supabase start, supabase db reset, supabase test db"
echo "supabase-cli-checks: all checks passed"
