// Package migrations holds the database schema as goose SQL migrations,
// embedded so the binary carries the schema it was built for.
//
// Numbering: 00001-00099 belong to the data layer (app/internal/store);
// 00100 and above are reserved for the session/auth code. Each file runs in
// its own transaction. A migration whose Down is not safe says so and
// refuses, instead of having an empty Down that would let goose forget a
// table that still exists.
//
// Every migration is expand/contract safe: a blue/green deploy runs it while
// the previous release still serves, so it must not drop, rename or retype
// what that release reads or writes. CheckExpandContract refuses the
// statements that would, unless the file names the object with a
// "-- nbms:contract <object> -- <reason>" line; the test
// TestMigrationsAreExpandContractSafe runs it over every file here, and
// docs/migrations.md explains the rule.
//
// Apply them with package app/internal/migrate, never by hand.
package migrations

import "embed"

// FS holds every *.sql migration in this directory.
//
//go:embed *.sql
var FS embed.FS
