"""Supabase advisor (splinter) invariants, as catalog queries over the migrated template.

Each test names the lint it stands for (supabase/splinter, docs/supabase-facts.md section 4).
Every check first asserts that the list it walks is the real one (non-empty where the schema
has such objects), so a query that silently matched nothing cannot pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from tests.conftest import Database
from tests.support.world import PUBLIC_TABLES as ALL_PUBLIC_TABLES

OUR_SCHEMAS = ("public", "private")
PUBLIC_TABLES = frozenset(ALL_PUBLIC_TABLES)
# Functions that belong to an extension are the extension's business, not ours.
NOT_EXTENSION_MEMBER = (
    "not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass"
    " and d.objid = p.oid and d.deptype = 'e')"
)


@pytest.fixture
def catalog(template_db: Database) -> Iterator[psycopg.Connection[TupleRow]]:
    """A read-only connection to the template, closed after each test so that clones of the
    template (which need it to have no other sessions) are never blocked."""
    with psycopg.connect(template_db.dsn, autocommit=True) as conn:
        conn.execute("set default_transaction_read_only = on")
        yield conn


def rows(
    conn: psycopg.Connection[TupleRow], query: str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def public_tables(conn: psycopg.Connection[TupleRow]) -> list[str]:
    found = [
        str(r[0])
        for r in rows(
            conn,
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1",
        )
    ]
    assert set(found) >= PUBLIC_TABLES
    return found


# -- 0013 rls_disabled_in_public, 0007 policy_exists_rls_disabled, 0008 rls_enabled_no_policy


def test_rls_enabled_on_every_public_table(catalog: psycopg.Connection[TupleRow]) -> None:
    public_tables(catalog)
    disabled = rows(
        catalog,
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity",
    )
    assert disabled == []


def test_no_policy_on_a_table_without_rls(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select distinct p.schemaname, p.tablename from pg_policies p"
        " join pg_class c on c.relname = p.tablename"
        " join pg_namespace n on n.oid = c.relnamespace and n.nspname = p.schemaname"
        " where not c.relrowsecurity",
    )
    assert found == []


def test_every_rls_table_has_a_policy(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = any(%s) and c.relrowsecurity"
        " and not exists (select 1 from pg_policy pol where pol.polrelid = c.oid)"
        # A partition is read through its parent, whose policies apply; RLS on the
        # partition itself (without policies) refuses everything to a direct reader.
        " and not c.relispartition",
        (list(OUR_SCHEMAS),),
    )
    assert found == []


# -- 0011 function_search_path_mutable -----------------------------------------------------


def test_every_function_has_a_fixed_search_path(catalog: psycopg.Connection[TupleRow]) -> None:
    functions = rows(
        catalog,
        "select p.oid::regprocedure::text, coalesce(p.proconfig, '{}') from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        f" where n.nspname = any(%s) and {NOT_EXTENSION_MEMBER} order by 1",
        (list(OUR_SCHEMAS),),
    )
    names = {name for name, _ in functions}
    # The helpers the policies rely on are among the functions checked.
    assert {"private.my_company_id()", "private.audit_log_append_only()"} <= names
    mutable = [
        name
        for name, config in functions
        if not any(str(c).startswith("search_path=") for c in config)
    ]
    assert mutable == []


# -- 0028/0029 anon/authenticated_security_definer_function_executable ----------------------


def test_no_security_definer_function_is_executable_by_anon(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    definers = rows(
        catalog,
        "select p.oid::regprocedure::text, has_function_privilege('anon', p.oid, 'execute')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where p.prosecdef and n.nspname not in ('pg_catalog', 'information_schema')"
        " order by 1",
    )
    assert "private.my_company_id()" in {name for name, _ in definers}
    assert [name for name, executable in definers if executable] == []


def test_no_security_definer_function_in_public_is_executable_by_api_users(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    found = rows(
        catalog,
        "select p.oid::regprocedure::text, r.rolname from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " cross join (values ('anon'), ('authenticated')) r(rolname)"
        " where p.prosecdef and n.nspname = 'public'"
        " and has_function_privilege(r.rolname, p.oid, 'execute')",
    )
    assert found == []


def test_no_function_of_ours_is_executable_by_public(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    """The migrations leave default privileges to the project (PostgreSQL's make a new
    function executable by PUBLIC; see test_default_privileges.py), so each function revokes
    it itself."""
    functions = rows(
        catalog,
        "select p.oid::regprocedure::text, p.proacl is null"
        " or exists (select 1 from aclexplode(p.proacl) a"
        "            where a.grantee = 0 and a.privilege_type = 'EXECUTE')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        f" where n.nspname = any(%s) and {NOT_EXTENSION_MEMBER} order by 1",
        (list(OUR_SCHEMAS),),
    )
    assert len(functions) >= 10
    assert {str(name).split("(")[0] for name, _ in functions} >= {"accept_invitation"}
    assert [name for name, to_public in functions if to_public] == []


def test_anon_has_no_privilege_in_private(catalog: psycopg.Connection[TupleRow]) -> None:
    assert rows(catalog, "select has_schema_privilege('anon', 'private', 'usage')") == [(False,)]
    exposed = rows(
        catalog,
        "select c.relname, r.rolname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " cross join (values ('anon'), ('authenticated')) r(rolname)"
        " where n.nspname = 'private' and c.relkind in ('r', 'p', 'v', 'm', 'S')"
        " and (has_table_privilege(r.rolname, c.oid, 'select,insert,update,delete,truncate')"
        "      or has_any_column_privilege(r.rolname, c.oid, 'select,insert,update'))",
    )
    assert exposed == []


# -- 0010 security_definer_view, 0016 materialized_view_in_api, 0002 auth_users_exposed -----


def test_every_view_is_security_invoker(catalog: psycopg.Connection[TupleRow]) -> None:
    views = rows(
        catalog,
        "select n.nspname, c.relname, coalesce(c.reloptions, '{}') from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind = 'v' and n.nspname = any(%s) order by 1, 2",
        (list(OUR_SCHEMAS),),
    )
    definer_views = [
        f"{schema}.{name}"
        for schema, name, options in views
        if not any(
            re.fullmatch(r"security_invoker=(true|on|1|yes)", str(o), re.IGNORECASE)
            for o in options
        )
    ]
    assert definer_views == []
    # The list above came from pg_class; cross-check it with information_schema so that an
    # empty list means "no views", not "the query matched nothing".
    listed = rows(
        catalog,
        "select table_schema, table_name from information_schema.views"
        " where table_schema = any(%s) order by 1, 2",
        (list(OUR_SCHEMAS),),
    )
    assert [(s, n) for s, n, _ in views] == listed
    if not views:
        assert rows(catalog, "select count(*) from pg_views where schemaname = 'public'") == [(0,)]


def test_no_materialized_view_is_exposed(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind = 'm' and n.nspname = 'public'"
        " and (has_table_privilege('anon', c.oid, 'select')"
        "      or has_table_privilege('authenticated', c.oid, 'select'))",
    )
    assert found == []


def test_no_public_view_reads_auth_users(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select distinct v.relname from pg_depend d"
        " join pg_rewrite rw on rw.oid = d.objid"
        " join pg_class v on v.oid = rw.ev_class"
        " join pg_namespace n on n.oid = v.relnamespace"
        " where d.classid = 'pg_rewrite'::regclass and d.refobjid = 'auth.users'::regclass"
        " and n.nspname = 'public'",
    )
    assert found == []


# -- 0001 unindexed_foreign_keys -------------------------------------------------------------


def test_every_foreign_key_is_indexed(catalog: psycopg.Connection[TupleRow]) -> None:
    fkeys = rows(
        catalog,
        "select c.conrelid::regclass::text, c.conname, c.conrelid, c.conkey::int2[]"
        " from pg_constraint c join pg_class t on t.oid = c.conrelid"
        " join pg_namespace n on n.oid = t.relnamespace"
        " where c.contype = 'f' and n.nspname = any(%s) order by 1, 2",
        (list(OUR_SCHEMAS),),
    )
    assert len(fkeys) >= 10
    indexes: dict[int, list[list[int]]] = {}
    for relid, indkey in rows(
        catalog,
        "select i.indrelid, i.indkey::int2[] from pg_index i join pg_class ic on ic.oid ="
        " i.indexrelid join pg_am am on am.oid = ic.relam"
        " where am.amname = 'btree' and i.indisvalid and i.indpred is null",
    ):
        indexes.setdefault(int(relid), []).append([int(k) for k in indkey])
    unindexed = []
    for table, name, relid, conkey in fkeys:
        columns = {int(k) for k in conkey}
        if not any(set(index[: len(columns)]) == columns for index in indexes.get(int(relid), [])):
            unindexed.append(f"{table}.{name}")
    assert unindexed == []


# -- 0021 fkey_to_auth_unique ----------------------------------------------------------------


def test_references_to_auth_users_use_its_primary_key(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    found = rows(
        catalog,
        "select c.conname, c.confkey::int2[] = pk.conkey::int2[], c.confdeltype"
        " from pg_constraint c join pg_constraint pk on pk.conrelid = c.confrelid"
        " and pk.contype = 'p' join pg_class t on t.oid = c.conrelid"
        " join pg_namespace n on n.oid = t.relnamespace"
        " where c.contype = 'f' and c.confrelid = 'auth.users'::regclass and n.nspname = any(%s)",
        (list(OUR_SCHEMAS),),
    )
    assert found, "profiles.id references auth.users"
    # Referencing the primary key, and cascading so that deleting a user is possible.
    assert all(uses_pk and deltype == "c" for _, uses_pk, deltype in found), found


# -- 0015 rls_references_user_metadata, policies ---------------------------------------------


def policies(conn: psycopg.Connection[TupleRow]) -> list[tuple[Any, ...]]:
    found = rows(
        conn,
        "select schemaname, tablename, policyname, roles::text[], coalesce(qual, ''),"
        " coalesce(with_check, ''), permissive, cmd from pg_policies"
        " where schemaname = any(%s) order by 1, 2, 3",
        (list(OUR_SCHEMAS),),
    )
    assert {str(r[1]) for r in found} >= PUBLIC_TABLES
    return found


def test_no_policy_reads_user_metadata(catalog: psycopg.Connection[TupleRow]) -> None:
    offending = [
        name
        for _, _, name, _, qual, check, _, _ in policies(catalog)
        if re.search(r"user_metadata|raw_user_meta_data|raw_app_meta_data", qual + check)
    ]
    assert offending == []


def test_every_policy_is_for_authenticated(catalog: psycopg.Connection[TupleRow]) -> None:
    offending = [
        (table, name, roles)
        for _, table, name, roles, *_ in policies(catalog)
        if list(roles) != ["authenticated"]
    ]
    assert offending == []


def test_no_policy_is_always_true(catalog: psycopg.Connection[TupleRow]) -> None:
    offending = [
        name
        for _, _, name, _, qual, check, _, _ in policies(catalog)
        if qual.strip() == "true" or check.strip() == "true"
    ]
    assert offending == []


def test_no_multiple_permissive_policies(catalog: psycopg.Connection[TupleRow]) -> None:
    """0006: for a role and an action, one permissive policy per table."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for _, table, name, roles, _, _, permissive, cmd in policies(catalog):
        if permissive != "PERMISSIVE":
            continue
        actions = ["SELECT", "INSERT", "UPDATE", "DELETE"] if cmd == "ALL" else [cmd]
        for role in roles:
            for action in actions:
                seen.setdefault((table, role, action), []).append(name)
    assert {key: names for key, names in seen.items() if len(names) > 1} == {}


# Calls whose result is the same for every row: auth.* and our private helpers. Each must be
# an initplan, i.e. rendered by pg_get_expr as "( SELECT auth.uid() AS uid)".
_STABLE_CALL = re.compile(r"\b(auth|private)\.[a-z_]+\(\)")


def test_auth_calls_in_policies_are_wrapped_in_select(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    checked = 0
    offending = []
    for _, table, name, _, qual, check, _, _ in policies(catalog):
        for expression in (qual, check):
            for match in _STABLE_CALL.finditer(expression):
                checked += 1
                if not expression[: match.start()].endswith("SELECT "):
                    offending.append((table, name, match.group(0)))
    assert checked >= 20  # auth.uid() and the helpers appear in most policies
    assert offending == []


def test_wrapped_form_matches_how_postgres_renders_it(
    catalog: psycopg.Connection[TupleRow],
) -> None:
    """The check above depends on pg_get_expr's rendering; pin it down on a real policy."""
    found = rows(
        catalog,
        "select qual from pg_policies where schemaname = 'public' and tablename = 'sessions'"
        " and cmd = 'SELECT'",
    )
    assert len(found) == 1
    assert "( SELECT auth.uid() AS uid)" in str(found[0][0])


# -- grants -------------------------------------------------------------------------------


def test_no_public_table_grants_anything_to_anon(catalog: psycopg.Connection[TupleRow]) -> None:
    relations = rows(
        catalog,
        "select c.relname,"
        " has_table_privilege('anon', c.oid,"
        "   'select,insert,update,delete,truncate,references,trigger')"
        " or has_any_column_privilege('anon', c.oid, 'select,insert,update,references')"
        " or (c.relacl is not null and exists (select 1 from aclexplode(c.relacl) a"
        "            where a.grantee in (0, 'anon'::regrole::oid)))"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')",
    )
    assert {str(name) for name, _ in relations} >= PUBLIC_TABLES
    assert [name for name, granted in relations if granted] == []


def test_no_public_function_is_executable_by_anon(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n"
        " on n.oid = p.pronamespace where n.nspname = 'public'"
        f" and {NOT_EXTENSION_MEMBER} and has_function_privilege('anon', p.oid, 'execute')",
    )
    assert found == []


# -- 0009 duplicate_index, 0004 no_primary_key, 0014 extension_in_public --------------------


def test_no_duplicate_indexes(catalog: psycopg.Connection[TupleRow]) -> None:
    indexes = rows(
        catalog,
        "select i.indrelid::regclass::text, i.indexrelid::regclass::text, i.indkey::text,"
        " i.indclass::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),"
        " coalesce(pg_get_expr(i.indpred, i.indrelid), '')"
        " from pg_index i join pg_class c on c.oid = i.indrelid"
        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%s)",
        (list(OUR_SCHEMAS),),
    )
    assert len(indexes) >= 20
    groups: dict[tuple[str, ...], list[str]] = {}
    for table, index, keys, opclasses, exprs, pred in indexes:
        groups.setdefault((table, keys, opclasses, exprs, pred), []).append(index)
    assert [names for names in groups.values() if len(names) > 1] == []


def test_every_table_has_a_primary_key(catalog: psycopg.Connection[TupleRow]) -> None:
    tables = rows(
        catalog,
        "select n.nspname || '.' || c.relname, exists (select 1 from pg_constraint k"
        " where k.conrelid = c.oid and k.contype = 'p')"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname = any(%s)",
        (list(OUR_SCHEMAS),),
    )
    assert {str(t) for t, _ in tables} >= {f"public.{t}" for t in PUBLIC_TABLES}
    assert [t for t, has_pk in tables if not has_pk] == []


def test_no_extension_in_public(catalog: psycopg.Connection[TupleRow]) -> None:
    found = rows(
        catalog,
        "select e.extname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        " where n.nspname = 'public'",
    )
    assert found == []
