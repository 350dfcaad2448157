package auth_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/auth"
	"github.com/nbms-deploy/nbms/app/internal/password"
	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

func TestCreateUser(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, storetest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	st := store.New(pool)
	require.NoError(t, st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateOrganisation(ctx, "sanbi", "SANBI")
		return err
	}))

	good := auth.NewUserInput{OrganisationSlug: "sanbi", Username: "alice", DisplayName: "Alice", Role: store.RoleAdmin}
	u, err := auth.CreateUser(ctx, st, good, alicePassword)
	require.NoError(t, err)
	assert.True(t, u.Active)
	assert.Equal(t, store.RoleAdmin, u.Role)
	ok, rehash, err := password.Verify(ctx, u.PasswordHash, alicePassword)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.False(t, rehash)

	with := func(f func(*auth.NewUserInput)) auth.NewUserInput {
		in := good
		f(&in)
		return in
	}
	cases := []struct {
		name  string
		in    auth.NewUserInput
		pw    string
		check func(t *testing.T, err error)
	}{
		{"password too short", with(func(in *auth.NewUserInput) { in.Username = "bob" }), "short", func(t *testing.T, err error) {
			assert.ErrorIs(t, err, password.ErrTooShort)
		}},
		{"password too long", with(func(in *auth.NewUserInput) { in.Username = "bob" }), strings.Repeat("x", password.MaxBytes+1), func(t *testing.T, err error) {
			assert.ErrorIs(t, err, password.ErrTooLong)
		}},
		{"unknown organisation", with(func(in *auth.NewUserInput) { in.OrganisationSlug = "nope" }), alicePassword, func(t *testing.T, err error) {
			assert.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"username taken in another case", with(func(in *auth.NewUserInput) { in.Username = "ALICE" }), alicePassword, func(t *testing.T, err error) {
			var conflict *store.ConflictError
			require.ErrorAs(t, err, &conflict)
			assert.Equal(t, "username", conflict.Field)
		}},
		{"bad role", with(func(in *auth.NewUserInput) { in.Username = "bob"; in.Role = "root" }), alicePassword, func(t *testing.T, err error) {
			assert.ErrorIs(t, err, store.ErrInvalid)
		}},
		{"username with a space", with(func(in *auth.NewUserInput) { in.Username = "bob smith" }), alicePassword, func(t *testing.T, err error) {
			assert.ErrorIs(t, err, store.ErrInvalid)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth.CreateUser(ctx, st, tc.in, tc.pw)
			require.Error(t, err)
			tc.check(t, err)
			assert.NotContains(t, err.Error(), tc.pw, "the password never appears in an error")
		})
	}

	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n))
	assert.Equal(t, 1, n, "failed attempts left no user behind")
	events, err := st.ListAuditEvents(ctx, store.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, events, 1, "one audit event, for the one user created")
	assert.Equal(t, "user.create", events[0].Action)
	assert.Equal(t, map[string]any{"username": "alice", "role": "admin", "organisation": "sanbi", "via": "cli"}, events[0].Details)
}

func TestReadPasswordFromPipe(t *testing.T) {
	max := strings.Repeat("m", password.MaxBytes)
	cases := []struct {
		name, input, want string
		err               error
	}{
		{"line", "a passphrase with spaces\n", "a passphrase with spaces", nil},
		{"crlf", "windows line\r\n", "windows line", nil},
		{"no final newline", "last line", "last line", nil},
		{"only the first line", "first\nsecond\n", "first", nil},
		{"surrounding spaces kept", "  padded  \n", "  padded  ", nil},
		{"non-ASCII", "pässwörd-𝄞\n", "pässwörd-𝄞", nil},
		{"longest", max + "\r\n", max, nil},
		{"empty input", "", "", password.ErrEmpty},
		{"empty line", "\n", "", password.ErrEmpty},
		{"one byte too long", max + "x\n", "", password.ErrTooLong},
		{"huge without newline", strings.Repeat("h", 1<<20), "", password.ErrTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			got, err := auth.ReadPassword(strings.NewReader(tc.input), &out, false)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, got)
			assert.Empty(t, out.String(), "no prompt when not a terminal")
		})
	}
}

func TestReadPasswordTerminalNeedsAFile(t *testing.T) {
	_, err := auth.ReadPassword(strings.NewReader("x\n"), &bytes.Buffer{}, true)
	require.Error(t, err)
	assert.False(t, errors.Is(err, password.ErrEmpty))
}
