// Package storetest gives tests a throwaway PostgreSQL database of their
// own on the machine's test server (package testsupport says where), so
// parallel test packages never see each other's rows. It is imported by
// tests only.
//
// The server must accept the admin user without a password (trust auth)
// and let it CREATE DATABASE; creating the PostGIS extension needs a
// superuser. Each database costs about a second to create and migrate:
// share one per test package (e.g. from TestMain or a sync.Once) unless a
// test needs an empty slate.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// setupTimeout bounds creating, migrating and dropping one database.
const setupTimeout = 2 * time.Minute

// NewDatabase creates a database with every migration applied and returns
// its URL. The database is dropped (with any connections still open to it)
// when the test and its subtests finish.
func NewDatabase(t testing.TB) (url string) {
	t.Helper()
	url = NewEmptyDatabase(t)
	if err := migrateUp(url); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return url
}

// NewEmptyDatabase creates an empty database (no migrations) and returns
// its URL; it is dropped like NewDatabase's.
func NewEmptyDatabase(t testing.TB) (url string) {
	t.Helper()
	url, dropDB, err := createEmpty()
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDB(); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})
	return url
}

// Main is TestMain for a package whose tests share one migrated database:
// it creates it, stores its URL in *url, runs setup (if any: e.g. opening
// a pool on it, released after the tests), runs the tests and drops it.
func Main(m *testing.M, url *string, setup ...func() (release func(), err error)) int {
	u, dropDB, err := createEmpty()
	if err == nil {
		err = migrateUp(u)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
		if dropDB != nil {
			_ = dropDB()
		}
		return 1
	}
	*url = u
	var releases []func()
	releaseAll := func() {
		for i := len(releases) - 1; i >= 0; i-- {
			releases[i]()
		}
	}
	for _, s := range setup {
		release, err := s()
		if err != nil {
			fmt.Fprintln(os.Stderr, "storetest: setup:", err)
			releaseAll()
			_ = dropDB()
			return 1
		}
		releases = append(releases, release)
	}
	code := m.Run()
	releaseAll()
	if err := dropDB(); err != nil {
		fmt.Fprintln(os.Stderr, "storetest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func migrateUp(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	db, err := migrate.Open(url)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := migrate.Up(ctx, db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// createEmpty creates a database with a random name and returns its URL
// and the function that drops it.
func createEmpty() (url string, dropDB func() error, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	admin := testsupport.DatabaseURL()
	name := "nbms_test_" + randomHex(8)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(ctx)
	// The name is generated here, and sanitised as an identifier anyway:
	// CREATE DATABASE takes no parameters.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	dropDB = func() error { return drop(admin, name) }
	u, err := urlWithDatabase(admin, name)
	if err != nil {
		return "", dropDB, err
	}
	return u, dropDB, nil
}

func drop(admin, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	defer conn.Close(ctx)
	// FORCE ends sessions a test forgot to close, which would otherwise
	// keep the database alive.
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	return nil
}

func urlWithDatabase(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
