// Package migrations holds the database schema as goose SQL migrations,
// embedded so the binary carries the schema it was built for.
//
// Numbering: 00001-00099 belong to the data layer (app/internal/store);
// 00100 and above are reserved for the session/auth code. Each file runs in
// its own transaction. A migration whose Down is not safe says so and
// refuses, instead of having an empty Down that would let goose forget a
// table that still exists.
//
// Apply them with package app/internal/migrate, never by hand.
package migrations

import "embed"

// FS holds every *.sql migration in this directory.
//
//go:embed *.sql
var FS embed.FS
