package migrate

import "io/fs"

// WithMigrations makes Up apply the migrations in fsys instead of the
// embedded schema, so that a test can stage the migration it needs.
func WithMigrations(fsys fs.FS) Option {
	return func(c *upConfig) { c.fsys = fsys }
}
