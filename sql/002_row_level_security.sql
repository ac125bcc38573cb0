-- Row-level security on every table with a user_id column.
-- FORCE makes the policies bind the owner too. The policies fail closed: with no user set,
-- current_setting(..., true) is NULL or '' and NULLIF(...)::uuid is NULL, so no row matches
-- and every write is refused; nothing errors and nothing leaks.
SET ROLE crm_owner;

ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS contacts_user_isolation ON contacts;
CREATE POLICY contacts_user_isolation ON contacts
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);

ALTER TABLE addresses ENABLE ROW LEVEL SECURITY;
ALTER TABLE addresses FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS addresses_user_isolation ON addresses;
CREATE POLICY addresses_user_isolation ON addresses
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);

ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tickets_user_isolation ON tickets;
CREATE POLICY tickets_user_isolation ON tickets
    USING (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('app.current_user_id', true), '')::uuid);

RESET ROLE;
