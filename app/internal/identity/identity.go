// Package identity carries the authenticated user through a request's
// context. The session layer puts it there; handlers read it. Keeping it
// apart from both lets either change without the other.
package identity

import (
	"context"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

// User is who is making the request: enough to authorise, nothing secret
// (no password hash).
type User struct {
	ID             int64
	OrganisationID int64
	Username       string
	Role           store.Role
}

type contextKey struct{}

// With returns ctx carrying u.
func With(ctx context.Context, u User) context.Context {
	return context.WithValue(ctx, contextKey{}, u)
}

// From returns the user of ctx, if the request is authenticated.
func From(ctx context.Context) (User, bool) {
	u, ok := ctx.Value(contextKey{}).(User)
	return u, ok
}

// FromStore projects a stored user onto an identity.
func FromStore(u store.User) User {
	return User{ID: u.ID, OrganisationID: u.OrganisationID, Username: u.Username, Role: u.Role}
}
