// Package store is the typed data layer over PostgreSQL/PostGIS (pgxpool).
//
// Reads are methods on Store. Writes are methods on Tx, obtained only from
// Store.InTx, so a write and the audit event that records it (Tx.InsertAuditEvent)
// always commit or roll back together.
//
// Object-level access is decided in SQL, not by filtering in Go: a dataset
// query joins the viewing user and returns only what that user may see, so
// a forgotten check cannot leak a row.
//
// Every query binds its inputs as parameters; where a query has two shapes
// (with or without a bounding box) the SQL is chosen between constants.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors returned (wrapped) by Store and Tx methods; test with errors.Is.
var (
	// ErrNotFound: no such row, or one the caller may not see (the two are
	// indistinguishable on purpose, so IDs cannot be probed).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique value is already taken (see ConflictError).
	ErrConflict = errors.New("conflict")
	// ErrStale: an optimistic update named a version that is no longer
	// current. It wraps ErrConflict.
	ErrStale = fmt.Errorf("%w: stale version", ErrConflict)
	// ErrForbidden: the row exists and is visible, but the actor may not
	// write to it (e.g. another organisation's public dataset), or the actor
	// is unknown or deactivated.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid: an input breaks a rule of the schema (see FieldError).
	ErrInvalid = errors.New("invalid input")
)

// FieldError names the input field that broke a rule. It wraps ErrInvalid.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// ConflictError names the field whose unique value is taken. It wraps
// ErrConflict.
type ConflictError struct {
	Field string
}

func (e *ConflictError) Error() string { return e.Field + " already exists" }

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Page sizes. A limit of zero or less means the default; a larger one than
// the maximum is clamped to it, so no request can ask for an unbounded list.
const (
	DefaultLimit     = 20
	MaxLimit         = 100
	DefaultSiteLimit = 500
	MaxSiteLimit     = 2000
)

// rollbackTimeout bounds the ROLLBACK sent after a failure; it runs without
// the caller's context, which may be the reason for the failure.
const rollbackTimeout = 5 * time.Second

// Store runs queries on a pgx pool.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool. The pool may point at PgBouncer in
// transaction mode (configured as package database does it): the store uses
// no session state.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Tx is a transaction begun by Store.InTx. An error from a Tx method leaves
// the transaction aborted in PostgreSQL: return it from the InTx callback
// rather than carrying on.
type Tx struct {
	tx pgx.Tx
}

// InTx runs fn in a transaction (read committed) and commits if fn returns
// nil. It rolls back if fn returns an error (returned unchanged) or panics
// (re-panicked after the rollback).
func (s *Store) InTx(ctx context.Context, fn func(tx Tx) error) error {
	pgTx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	rollback := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		// A failed rollback closes the connection, which aborts the
		// transaction server-side anyway; nothing more to do with the error.
		_ = pgTx.Rollback(rctx)
	}
	panicked := true
	defer func() {
		if panicked {
			rollback()
		}
	}()
	err = fn(Tx{tx: pgTx})
	panicked = false
	if err != nil {
		rollback()
		return err
	}
	if err := pgTx.Commit(ctx); err != nil {
		return mapErr("commit", err)
	}
	return nil
}

// querier is what pgxpool.Pool and pgx.Tx have in common, so a read can run
// in or out of a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// uniqueFields maps unique constraints to the input field they protect.
var uniqueFields = map[string]string{
	"organisations_slug_key":         "slug",
	"users_username_lower_key":       "username",
	"indicators_code_key":            "code",
	"evidence_files_stored_name_key": "stored_name",
}

// mapErr turns PostgreSQL errors into the package's sentinel errors, so
// callers can answer 404/409/400 without knowing SQLSTATEs, and wraps the
// rest with the operation's name.
func mapErr(op string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	switch pgErr.Code {
	case "23505": // unique_violation
		field, ok := uniqueFields[pgErr.ConstraintName]
		if !ok {
			field = pgErr.ConstraintName
		}
		return fmt.Errorf("store: %s: %w", op, &ConflictError{Field: field})
	case "23503": // foreign_key_violation
		return fmt.Errorf("store: %s: %w: %s refers to a missing row", op, ErrNotFound, pgErr.ConstraintName)
	case "23514": // check_violation: PostgreSQL names column checks <table>_<column>_check
		field := strings.TrimSuffix(strings.TrimPrefix(pgErr.ConstraintName, pgErr.TableName+"_"), "_check")
		return fmt.Errorf("store: %s: %w", op, &FieldError{Field: field, Reason: "out of range or malformed"})
	case "23502": // not_null_violation
		return fmt.Errorf("store: %s: %w", op, &FieldError{Field: pgErr.ColumnName, Reason: "required"})
	case "22001", "22003", "22P02", "22023": // too long, out of range, bad text, bad parameter
		return fmt.Errorf("store: %s: %w: %s", op, ErrInvalid, pgErr.Message)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// clamp applies the page size rule documented at DefaultLimit.
func clamp(limit, def, max int) int {
	switch {
	case limit <= 0:
		return def
	case limit > max:
		return max
	}
	return limit
}

// nullID turns the "no actor" zero into SQL NULL.
func nullID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

func idValue(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
