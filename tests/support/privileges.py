"""Databases shaped by a project's default privileges, and what their catalogs grant.

- :func:`scratch_dsn`, :func:`scratch_database`: a new, empty database (from ``template0``)
  on the test server, dropped afterwards;
- :func:`prepare`: the Supabase-compatibility bootstrap, then a project's default
  privileges: PostgreSQL's own (``"postgresql"``) or Supabase's (``"supabase"``: new tables,
  sequences and functions of ``public`` granted to anon, authenticated and service_role);
- :func:`object_acls`: every object's privileges (relations, columns, functions, types,
  schemas), a missing ACL read as the built-in default it stands for;
- :func:`default_acls`: pg_default_acl, one row per grantee and privilege.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from tests.conftest import SUPABASE_DEFAULT_PRIVILEGES, Database
from tests.support.db import SYSTEM_SCHEMAS
from voicesessions.local import migrations

Conn = psycopg.Connection[TupleRow]
Shape = Literal["postgresql", "supabase"]
SHAPES: tuple[Shape, ...] = ("postgresql", "supabase")

#: (kind, object) -> {"grantee:PRIVILEGE", ...}; PUBLIC is the grantee "PUBLIC".
Acls = dict[tuple[str, str], frozenset[str]]


@contextmanager
def scratch_dsn(server: Database) -> Iterator[str]:
    """The superuser's DSN of a new empty database (from ``template0``) of ``server``'s
    cluster (cluster-wide roles included), dropped afterwards."""
    name = f"vs_scratch_{uuid.uuid4().hex[:12]}"
    maintenance = make_conninfo(server.dsn, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server.dsn, dbname=name)
    finally:
        with psycopg.connect(maintenance, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@contextmanager
def scratch_database(server: Database) -> Iterator[Conn]:
    """An autocommit connection to a :func:`scratch_dsn` database."""
    with scratch_dsn(server) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def prepare(conn: Conn, shape: Shape) -> None:
    """The bootstrap (the API roles), then the default privileges of a ``shape`` project."""
    migrations.bootstrap(conn)
    if shape == "supabase":
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES)


def _grant(grantee: str, privilege: str, grantable: bool) -> str:
    return f"{grantee}:{privilege}" + (" WITH GRANT OPTION" if grantable else "")


def object_acls(conn: Conn) -> Acls:
    """The privileges of every relation, column, function, type and schema outside the
    system schemas (a null ACL read as acldefault(), so "never granted" and "granted back to
    the default" compare equal)."""
    found: dict[tuple[str, str], set[str]] = {}
    rows = conn.execute(
        "select 'relation', c.oid::regclass::text, a.grantee, a.privilege_type, a.is_grantable"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " left join lateral aclexplode(coalesce(c.relacl, acldefault("
        "   case when c.relkind = 'S' then 's' else 'r' end::\"char\", c.relowner))) a on true"
        f" where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and {SYSTEM_SCHEMAS}"
        " union all"
        " select 'column', c.oid::regclass::text || '.' || quote_ident(att.attname),"
        "   a.grantee, a.privilege_type, a.is_grantable"
        " from pg_attribute att join pg_class c on c.oid = att.attrelid"
        " join pg_namespace n on n.oid = c.relnamespace, aclexplode(att.attacl) a"
        f" where att.attacl is not null and {SYSTEM_SCHEMAS}"
        " union all"
        " select 'function', p.oid::regprocedure::text, a.grantee, a.privilege_type,"
        "   a.is_grantable"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " left join lateral aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a on true"
        f" where {SYSTEM_SCHEMAS}"
        " union all"
        " select 'type', t.oid::regtype::text, a.grantee, a.privilege_type, a.is_grantable"
        " from pg_type t join pg_namespace n on n.oid = t.typnamespace"
        " left join lateral aclexplode(coalesce(t.typacl, acldefault('T', t.typowner))) a on true"
        f" where {SYSTEM_SCHEMAS} and t.typtype in ('e', 'd', 'c', 'r', 'm')"
        " and not exists (select 1 from pg_class c where c.oid = t.typrelid and c.relkind <> 'c')"
        " union all"
        " select 'schema', n.nspname::text, a.grantee, a.privilege_type, a.is_grantable"
        " from pg_namespace n"
        " left join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a on true"
        f" where {SYSTEM_SCHEMAS}"
    ).fetchall()
    names = _role_names(conn)
    for kind, name, grantee, privilege, grantable in rows:
        grants = found.setdefault((str(kind), str(name)), set())
        if privilege is not None:
            grants.add(_grant(names[int(grantee)], str(privilege), bool(grantable)))
    return {key: frozenset(grants) for key, grants in found.items()}


def default_acls(conn: Conn) -> set[tuple[str, str, str, str]]:
    """pg_default_acl as (role, schema or "<global>", object type, grant) rows."""
    names = _role_names(conn)
    rows = conn.execute(
        "select d.defaclrole, coalesce(nullif(d.defaclnamespace, 0)::regnamespace::text,"
        " '<global>'), d.defaclobjtype::text, a.grantee, a.privilege_type, a.is_grantable"
        " from pg_default_acl d, aclexplode(d.defaclacl) a"
    ).fetchall()
    return {
        (names[int(role)], str(schema), str(kind), _grant(names[int(g)], str(p), bool(grantable)))
        for role, schema, kind, g, p, grantable in rows
    }


def _role_names(conn: Conn) -> dict[int, str]:
    names = {int(oid): str(name) for oid, name in conn.execute("select oid, rolname from pg_roles")}
    names[0] = "PUBLIC"
    return names
