-- One-time bootstrap, run by a superuser in the target database (re-running is harmless):
--   psql -v ON_ERROR_STOP=1 -d crm -f sql/bootstrap/roles.sql
--
-- Creates the three group roles the schema is written against. None of them can log in:
--   crm_owner  owns every table; NOBYPASSRLS, and FORCE ROW LEVEL SECURITY binds it too.
--   crm_admin  member of crm_owner, so migrations run through the admin path.
--   crm_app    what user-facing code runs as: owns nothing, never bypasses RLS.
-- Login roles are created per deployment (passwords never live in these files), e.g.
--   CREATE ROLE crm_app_login LOGIN PASSWORD '...' NOBYPASSRLS IN ROLE crm_app;
--   CREATE ROLE crm_admin_login LOGIN PASSWORD '...' BYPASSRLS IN ROLE crm_admin;
-- BYPASSRLS is not inherited through membership, so the admin LOGIN role carries it itself.
--
-- The roles are shared by every database of the server; everything after them (schema,
-- language, function and database privileges) belongs to this database only, which is why the
-- file runs once per database. docs/database.md, "What the database itself refuses", gives
-- the reason for each revocation below.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_owner') THEN
        CREATE ROLE crm_owner NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_admin') THEN
        CREATE ROLE crm_admin NOLOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_app') THEN
        CREATE ROLE crm_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

GRANT crm_owner TO crm_admin;
GRANT USAGE, CREATE ON SCHEMA public TO crm_owner;
GRANT USAGE ON SCHEMA public TO crm_app;

-- What no check of the SQL text can see: dynamic SQL. The application role gets no procedural
-- language (no DO, no new functions), no built-in function that runs SQL given as a string,
-- no temporary tables (no row-level security; they outlive a call on a pooled connection),
-- no UPDATE of pg_settings (its rule calls set_config at session level) and no CREATE in
-- schema public (see the end of the file). Migrations may still use plpgsql: the owner and
-- admin roles get back what PUBLIC loses.
--
-- The database's name is only known at run time, hence the dynamic SQL. Untrusted languages
-- (plpython3u...) take no GRANT or REVOKE: only superusers may use them anyway.
DO $$
DECLARE
    lang name;
BEGIN
    FOR lang IN SELECT lanname FROM pg_language WHERE lanispl AND lanpltrusted ORDER BY 1 LOOP
        EXECUTE format('REVOKE USAGE ON LANGUAGE %I FROM PUBLIC', lang);
        EXECUTE format('GRANT USAGE ON LANGUAGE %I TO crm_owner, crm_admin', lang);
    END LOOP;
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO crm_admin', current_database());
END
$$;

-- Built-in functions that run SQL text given as a string (or fetch from a cursor named by a
-- string), and the large-object functions that create, change or delete objects (large
-- objects have no row-level security and outlive the call). The list is pinned by
-- tests/unit/test_bootstrap_roles.py against the start-up role check.
REVOKE EXECUTE ON FUNCTION
    pg_catalog.query_to_xml(text, boolean, boolean, text),
    pg_catalog.query_to_xmlschema(text, boolean, boolean, text),
    pg_catalog.query_to_xml_and_xmlschema(text, boolean, boolean, text),
    pg_catalog.cursor_to_xml(refcursor, integer, boolean, boolean, text),
    pg_catalog.cursor_to_xmlschema(refcursor, boolean, boolean, text),
    pg_catalog.ts_stat(text),
    pg_catalog.ts_stat(text, text),
    pg_catalog.ts_rewrite(tsquery, text),
    pg_catalog.lo_creat(integer),
    pg_catalog.lo_create(oid),
    pg_catalog.lo_from_bytea(oid, bytea),
    pg_catalog.lo_put(oid, bigint, bytea),
    pg_catalog.lowrite(integer, bytea),
    pg_catalog.lo_truncate(integer, integer),
    pg_catalog.lo_truncate64(integer, bigint),
    pg_catalog.lo_unlink(oid)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    pg_catalog.query_to_xml(text, boolean, boolean, text),
    pg_catalog.query_to_xmlschema(text, boolean, boolean, text),
    pg_catalog.query_to_xml_and_xmlschema(text, boolean, boolean, text),
    pg_catalog.cursor_to_xml(refcursor, integer, boolean, boolean, text),
    pg_catalog.cursor_to_xmlschema(refcursor, boolean, boolean, text),
    pg_catalog.ts_stat(text),
    pg_catalog.ts_stat(text, text),
    pg_catalog.ts_rewrite(tsquery, text),
    pg_catalog.lo_creat(integer),
    pg_catalog.lo_create(oid),
    pg_catalog.lo_from_bytea(oid, bytea),
    pg_catalog.lo_put(oid, bigint, bytea),
    pg_catalog.lowrite(integer, bytea),
    pg_catalog.lo_truncate(integer, integer),
    pg_catalog.lo_truncate64(integer, bigint),
    pg_catalog.lo_unlink(oid)
TO crm_owner, crm_admin;

-- Reading and writing files on the server: PostgreSQL already keeps these to superusers (and
-- roles granted them); revoking again keeps it so in a database where someone granted them,
-- and nobody gets them back.
REVOKE EXECUTE ON FUNCTION
    pg_catalog.lo_import(text),
    pg_catalog.lo_import(text, oid),
    pg_catalog.lo_export(oid, text)
FROM PUBLIC;

REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC;

-- Objects created in a schema of the search path are what every later call finds by name.
-- PostgreSQL 15 no longer lets PUBLIC create in schema public; a database made by an older
-- version (or upgraded from one) still does.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
