-- Server-side sessions (alexedwards/scs with pgxstore).
--
-- token, data, expiry and the expiry index are exactly what pgxstore
-- reads and writes. With HashTokenInStore the token column holds the
-- SHA-256 of the cookie value (base64url), so a leaked table holds no
-- usable cookies.
--
-- user_id is NBMS's addition for per-user revocation: "log out
-- everywhere" and deactivation delete a user's rows by it. Only a login
-- inserts a row (and sets user_id); every later save of a session is an
-- UPDATE of an existing row, so a request still in flight cannot
-- re-create a session that a logout deleted.

-- +goose Up
CREATE TABLE sessions (
    token   text PRIMARY KEY,
    data    bytea NOT NULL,
    expiry  timestamptz NOT NULL,
    user_id bigint REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX sessions_expiry_idx ON sessions (expiry);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- +goose Down
DROP TABLE sessions;
