-- The CRM tables. Applied through the admin path by crm_infra.migrations.apply_migrations
-- (or by a superuser with psql -v ON_ERROR_STOP=1 -f), after sql/bootstrap/roles.sql.
-- Tables are created as crm_owner so that no login role owns them.
SET ROLE crm_owner;

-- The account directory: one row per CRM user. Not tenant data, so no row-level security;
-- the application role may only read it (see 003_grants.sql).
CREATE TABLE IF NOT EXISTS users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL UNIQUE,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- user_id defaults to the current RLS user, so domain code need not repeat it in INSERTs.
CREATE TABLE IF NOT EXISTS contacts (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL DEFAULT NULLIF(current_setting('app.current_user_id', true), '')::uuid
               REFERENCES users (id) ON DELETE CASCADE,
    name       text,
    email      text,
    phone      text,
    company    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Children reference (id, user_id), so a row can only point at a contact of its own user:
    -- a plain FK on id would let one user probe or attach to another user's contact ids.
    UNIQUE (id, user_id)
);
CREATE INDEX IF NOT EXISTS contacts_user_id_idx ON contacts (user_id);

CREATE TABLE IF NOT EXISTS addresses (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL DEFAULT NULLIF(current_setting('app.current_user_id', true), '')::uuid
                REFERENCES users (id) ON DELETE CASCADE,
    contact_id  uuid NOT NULL,
    line1       text,
    city        text,
    postal_code text,
    country     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (contact_id, user_id) REFERENCES contacts (id, user_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS addresses_user_id_idx ON addresses (user_id);
CREATE INDEX IF NOT EXISTS addresses_contact_id_idx ON addresses (contact_id);

CREATE TABLE IF NOT EXISTS tickets (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL DEFAULT NULLIF(current_setting('app.current_user_id', true), '')::uuid
                    REFERENCES users (id) ON DELETE CASCADE,
    contact_id      uuid,
    subject         text,
    body            text,
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'pending', 'closed')),
    priority        integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 3),
    urgent          boolean NOT NULL DEFAULT false,
    estimated_value numeric(12, 2),
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    FOREIGN KEY (contact_id, user_id) REFERENCES contacts (id, user_id)
);
CREATE INDEX IF NOT EXISTS tickets_user_id_idx ON tickets (user_id);
CREATE INDEX IF NOT EXISTS tickets_contact_id_idx ON tickets (contact_id);

RESET ROLE;
