-- pyaccess 0.2.0, part 01: what 0.1.0 had and 0.2.0 removes, by name (never implied).
--
-- 0.1.0's private helpers lived in public, where another role may create look-alikes;
-- their 0.2.0 successors live in schema pyaccess. 0.1.0's entry points are kept (50_contract.sql,
-- 30_guard.sql) until a later release removes them in a step of its own.
DROP FUNCTION IF EXISTS
    public._provision_secret_refuse(uuid, bytea, bytea[]),
    public._provision_secret_check_keys(bytea[]),
    public._provision_secret_plaintext(bytea, bytea),
    public._provision_secret_authentic(uuid, bytea, bytea),
    public._provision_secret_well_formed(bytea),
    public._provision_secret_tag(uuid, bytea, bytea),
    public._provision_secret_body(bytea, bytea, bytea, bytea),
    public._provision_secret_subkeys(bytea),
    public._provision_secret_key_id(bytea);
