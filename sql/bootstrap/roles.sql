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
