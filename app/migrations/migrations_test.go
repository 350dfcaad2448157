package migrations_test

import (
	"context"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
	"github.com/nbms-deploy/nbms/app/migrations"
)

// The Down sections are exercised with goose directly: the application
// only ever migrates up (package migrate), so rolling back is an operator's
// deliberate act with the goose tool.
func TestDownMigrations(t *testing.T) {
	ctx := context.Background()
	db, err := migrate.Open(storetest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithLogger(goose.NopLogger()))
	require.NoError(t, err)

	tableExists := func(name string) bool {
		var ok bool
		require.NoError(t, db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok))
		return ok
	}

	// Reversible migrations, newest first: Down drops their tables and a
	// later Up brings them back.
	tests := []struct {
		version int64
		tables  []string
	}{
		{100, []string{"sessions"}},
		{6, []string{"monitoring_sites"}},
		{5, []string{"evidence_files", "datasets"}},
		{4, []string{"indicator_data_points", "indicators"}},
	}
	for _, tt := range tests {
		res, err := p.Down(ctx)
		require.NoError(t, err, "down %d", tt.version)
		assert.Equal(t, tt.version, res.Source.Version)
		for _, table := range tt.tables {
			assert.False(t, tableExists(table), "%s dropped by down %d", table, tt.version)
		}
	}
	current, err := p.GetDBVersion(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), current)

	// 00003 refuses: the audit log is never dropped by a migration, and
	// goose keeps it recorded as applied.
	_, err = p.Down(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "irreversible")
	assert.True(t, tableExists("audit_events"))
	current, err = p.GetDBVersion(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), current)

	// Up again restores the schema the downs removed.
	_, err = migrate.Up(ctx, db)
	require.NoError(t, err)
	for _, tt := range tests {
		for _, table := range tt.tables {
			assert.True(t, tableExists(table), "%s restored", table)
		}
	}
	pending, err := migrate.Pending(ctx, db)
	require.NoError(t, err)
	assert.Empty(t, pending)
}

// The extension's Down is empty on purpose; rolling past it and up again
// must work while PostGIS stays installed.
func TestExtensionDownIsANoOp(t *testing.T) {
	ctx := context.Background()
	db, err := migrate.Open(storetest.NewEmptyDatabase(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithLogger(goose.NopLogger()))
	require.NoError(t, err)

	_, err = p.UpTo(ctx, 1)
	require.NoError(t, err)
	_, err = p.Down(ctx)
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 1)
	require.NoError(t, err, "IF NOT EXISTS makes the re-run harmless")

	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM pg_extension WHERE extname = 'postgis'`).Scan(&n))
	assert.Equal(t, 1, n)
}
