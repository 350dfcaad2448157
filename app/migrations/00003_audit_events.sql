-- The audit log is append-only, enforced by triggers rather than by REVOKE:
-- the application may well connect as the table owner, and an owner can
-- always re-grant itself privileges, while a trigger also binds the owner.
-- Only a deliberate ALTER TABLE ... DISABLE TRIGGER (by the owner or a
-- superuser) gets past it, e.g. for a documented retention purge.

-- +goose Up
CREATE TABLE audit_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL for events without a logged-in actor (e.g. a failed login).
    -- No ON DELETE action: a user with history cannot be deleted.
    actor_user_id bigint REFERENCES users (id),
    action        text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 100),
    object_type   text NOT NULL DEFAULT '' CHECK (char_length(object_type) <= 100),
    object_id     text NOT NULL DEFAULT '' CHECK (char_length(object_id) <= 200),
    request_id    text NOT NULL DEFAULT '' CHECK (char_length(request_id) <= 200),
    details       jsonb NOT NULL DEFAULT '{}'
                  CHECK (jsonb_typeof(details) = 'object' AND octet_length(details::text) <= 8192)
);

-- +goose StatementBegin
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- +goose Down
-- Irreversible on purpose: dropping the audit log from a migration tool
-- would destroy evidence. An empty Down would instead make goose forget a
-- table that still exists. Drop it by hand if that is really meant.
-- +goose StatementBegin
DO $$
BEGIN
    RAISE EXCEPTION 'migration 00003_audit_events is irreversible: the audit log is append-only';
END;
$$;
-- +goose StatementEnd
