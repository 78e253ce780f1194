-- cas PostgreSQL schema, version 1: runs, artifacts (run manifests) and API tokens,
-- each scoped by tenant with row-level security. Applied by `cas db migrate` in one
-- transaction; see docs/design.md, "PostgreSQL execution store".

-- The application role. The store refuses to run as a superuser or a BYPASSRLS role
-- (they skip every policy below); deployments log in as a role granted cas_app.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cas_app') THEN
        CREATE ROLE cas_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;

GRANT SELECT ON schema_migrations TO cas_app;

-- One row per run. Typed columns hold what queries filter and sort on; `result`
-- holds the execution result verbatim: `json`, not `jsonb`, because jsonb reorders
-- keys and the order of a result's artifacts (and of an envelope) is the plan's.
CREATE TABLE runs (
    tenant text NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    status text NOT NULL,
    runbook text,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    duration_seconds double precision,
    completed integer NOT NULL,
    failed integer NOT NULL,
    skipped integer NOT NULL,
    result json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, run_id)
);
-- "newest runs of a tenant"
CREATE INDEX runs_newest ON runs (tenant, started_at DESC, run_id DESC);
-- "newest runs of a tenant with a status (failed ...) in a date range"
CREATE INDEX runs_status_newest ON runs (tenant, status, started_at DESC, run_id DESC);

-- Run manifests: one row per (run, artifact id), the newest save; `seq` orders saves
-- (a re-save takes a new one), so entries read back in the order of the newest saves.
CREATE SEQUENCE artifacts_seq;
CREATE TABLE artifacts (
    tenant text NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    artifact_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('artifacts_seq'),
    digest bytea NOT NULL CHECK (octet_length(digest) = 32),
    size bigint NOT NULL,
    schema_name text,
    schema_version text,
    validated boolean NOT NULL,
    envelope json NOT NULL,
    saved_at text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, run_id, artifact_id)
);
ALTER SEQUENCE artifacts_seq OWNED BY artifacts.seq;
-- "runs containing digest X" (and digest prefixes, as byte ranges)
CREATE INDEX artifacts_digest ON artifacts (tenant, digest);
-- a run's entries in save order; gc's "saved since the mark" re-check
CREATE INDEX artifacts_seq_idx ON artifacts (tenant, seq);

-- API tokens: only a hash of the secret is stored.
CREATE TABLE tokens (
    token_id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX tokens_tenant ON tokens (tenant, created_at);

-- Row-level security: every row is visible and writable only while the transaction's
-- `cas.tenant` setting names its tenant (the store sets it with set_config(..., true)
-- at the start of every transaction). An unset setting is NULL and matches nothing.
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
CREATE POLICY runs_tenant ON runs
    USING (tenant = current_setting('cas.tenant', true))
    WITH CHECK (tenant = current_setting('cas.tenant', true));

ALTER TABLE artifacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE artifacts FORCE ROW LEVEL SECURITY;
CREATE POLICY artifacts_tenant ON artifacts
    USING (tenant = current_setting('cas.tenant', true))
    WITH CHECK (tenant = current_setting('cas.tenant', true));

-- Tokens are enabled but not forced: the table owner is exempt, which is what lets
-- the SECURITY DEFINER lookup below find a token before its tenant is known. The
-- application role is not the owner, so the policy applies to it.
ALTER TABLE tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tokens_tenant ON tokens
    USING (tenant = current_setting('cas.tenant', true))
    WITH CHECK (tenant = current_setting('cas.tenant', true));

-- The one cross-tenant read: a token by the hash of its secret (answers at most one
-- row, only for an unrevoked token, and only to someone who holds the secret).
CREATE FUNCTION cas_token_lookup(secret_hash bytea)
RETURNS TABLE (token_id text, tenant text, name text, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT t.token_id, t.tenant, t.name, t.created_at
    FROM public.tokens AS t
    WHERE t.hash = secret_hash AND t.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION cas_token_lookup(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cas_token_lookup(bytea) TO cas_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON runs, artifacts, tokens TO cas_app;
GRANT USAGE, SELECT ON SEQUENCE artifacts_seq TO cas_app;
