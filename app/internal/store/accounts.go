package store

import (
	"context"
	"fmt"
	"time"
)

// Organisation owns users, datasets and monitoring sites.
type Organisation struct {
	ID        int64
	Slug      string
	Name      string
	CreatedAt time.Time
}

// Role is what a user may do; the API enforces it.
type Role string

// The roles, as the schema's CHECK constraint lists them.
const (
	RoleAdmin       Role = "admin"
	RoleStaff       Role = "staff"
	RoleContributor Role = "contributor"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	return r == RoleAdmin || r == RoleStaff || r == RoleContributor
}

// User is an account. PasswordHash is the stored PHC string; never log it.
type User struct {
	ID             int64
	OrganisationID int64
	Username       string
	DisplayName    string
	Role           Role
	PasswordHash   string
	Active         bool
	CreatedAt      time.Time
	// SessionsValidAfter voids every session created before it ("log out
	// everywhere").
	SessionsValidAfter time.Time
}

// NewUser is the input of Tx.CreateUser.
type NewUser struct {
	OrganisationID int64
	Username       string
	DisplayName    string
	Role           Role
	PasswordHash   string
}

const userColumns = `id, organisation_id, username, display_name, role, password_hash,
	active, created_at, sessions_valid_after`

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.OrganisationID, &u.Username, &u.DisplayName, &u.Role,
		&u.PasswordHash, &u.Active, &u.CreatedAt, &u.SessionsValidAfter)
	return u, err
}

// CreateOrganisation inserts an organisation. A taken slug is a
// *ConflictError for "slug".
func (tx Tx) CreateOrganisation(ctx context.Context, slug, name string) (Organisation, error) {
	var o Organisation
	err := tx.tx.QueryRow(ctx,
		`INSERT INTO organisations (slug, name) VALUES ($1, $2)
		 RETURNING id, slug, name, created_at`, slug, name).
		Scan(&o.ID, &o.Slug, &o.Name, &o.CreatedAt)
	if err != nil {
		return Organisation{}, mapErr("create organisation", err)
	}
	return o, nil
}

// GetOrganisationBySlug returns the organisation with that slug.
func (s *Store) GetOrganisationBySlug(ctx context.Context, slug string) (Organisation, error) {
	var o Organisation
	err := s.pool.QueryRow(ctx,
		`SELECT id, slug, name, created_at FROM organisations WHERE slug = $1`, slug).
		Scan(&o.ID, &o.Slug, &o.Name, &o.CreatedAt)
	if err != nil {
		return Organisation{}, mapErr("get organisation", err)
	}
	return o, nil
}

// CreateUser inserts an active user with an already computed password hash.
// A username taken in any letter case is a *ConflictError for "username".
func (tx Tx) CreateUser(ctx context.Context, in NewUser) (User, error) {
	if !in.Role.Valid() {
		return User{}, &FieldError{Field: "role", Reason: "must be admin, staff or contributor"}
	}
	u, err := scanUser(tx.tx.QueryRow(ctx,
		`INSERT INTO users (organisation_id, username, display_name, role, password_hash)
		 VALUES ($1, $2, $3, $4, $5)
		 RETURNING `+userColumns,
		in.OrganisationID, in.Username, in.DisplayName, in.Role, in.PasswordHash))
	if err != nil {
		return User{}, mapErr("create user", err)
	}
	return u, nil
}

// GetUserByUsername returns the user whose username equals username in any
// letter case, active or not (the caller decides what inactive means).
func (s *Store) GetUserByUsername(ctx context.Context, username string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		`SELECT `+userColumns+` FROM users WHERE lower(username) = lower($1)`, username))
	if err != nil {
		return User{}, mapErr("get user", err)
	}
	return u, nil
}

// GetUserByID returns the user with that id, active or not.
func (s *Store) GetUserByID(ctx context.Context, id int64) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		`SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if err != nil {
		return User{}, mapErr("get user", err)
	}
	return u, nil
}

// ListUsers returns the organisation's users ordered by username.
// Organisations are small; the list is not paginated.
func (s *Store) ListUsers(ctx context.Context, organisationID int64) ([]User, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+userColumns+` FROM users WHERE organisation_id = $1 ORDER BY username, id`,
		organisationID)
	if err != nil {
		return nil, mapErr("list users", err)
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, mapErr("list users", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("list users", err)
	}
	return users, nil
}

// SetSessionsValidAfter voids the user's sessions created before t ("log out
// everywhere"). Pass a time from the same clock that stamps sessions.
func (tx Tx) SetSessionsValidAfter(ctx context.Context, userID int64, t time.Time) error {
	return tx.updateUser(ctx, "set sessions_valid_after",
		`UPDATE users SET sessions_valid_after = $2 WHERE id = $1`, userID, t)
}

// SetPasswordHash replaces the user's password hash, e.g. after a password
// change or a re-hash with new parameters.
func (tx Tx) SetPasswordHash(ctx context.Context, userID int64, hash string) error {
	return tx.updateUser(ctx, "set password hash",
		`UPDATE users SET password_hash = $2 WHERE id = $1`, userID, hash)
}

func (tx Tx) updateUser(ctx context.Context, op, sql string, args ...any) error {
	tag, err := tx.tx.Exec(ctx, sql, args...)
	if err != nil {
		return mapErr(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return nil
}
