-- pgcrypto provides the primitives (hmac, encrypt_iv, gen_random_bytes).
-- It is a trusted extension: a database owner may create it without being
-- a superuser. Where it already exists, in whatever schema, it is used there.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
