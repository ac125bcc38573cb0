-- What the application role may do. It owns nothing; row-level security decides which rows.
SET ROLE crm_owner;

REVOKE ALL ON users, contacts, addresses, tickets FROM PUBLIC;
GRANT SELECT ON users TO crm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON contacts, addresses, tickets TO crm_app;

RESET ROLE;
