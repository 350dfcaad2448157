// Package docs holds the project's runbooks (docs/production_hardening) and
// the test that keeps them honest: every command, script, make target and
// link they mention must exist in this repository (see docs_test.go). It
// has no code; the Go package exists so that `go test ./...` runs that test.
package docs
