package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"golang.org/x/term"

	"github.com/nbms-deploy/nbms/app/internal/password"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// NewUserInput is what `nbms createuser` collects besides the password.
type NewUserInput struct {
	OrganisationSlug string
	Username         string
	DisplayName      string
	Role             store.Role
}

// CreateUser checks password against the policy, hashes it and inserts an
// active user of the organisation with that slug, with a "user.create"
// audit event (no actor: the command runs outside any session) in the
// same transaction. The error wraps password.ErrTooShort/ErrTooLong,
// store.ErrNotFound (no such organisation), a *store.ConflictError
// (username taken) or a *store.FieldError.
func CreateUser(ctx context.Context, st *store.Store, in NewUserInput, pw string) (store.User, error) {
	if err := password.CheckPolicy(pw); err != nil {
		return store.User{}, err
	}
	org, err := st.GetOrganisationBySlug(ctx, in.OrganisationSlug)
	if err != nil {
		return store.User{}, fmt.Errorf("organisation %q: %w", in.OrganisationSlug, err)
	}
	hash, err := password.Hash(ctx, pw)
	if err != nil {
		return store.User{}, err
	}
	var u store.User
	err = st.InTx(ctx, func(tx store.Tx) error {
		var err error
		u, err = tx.CreateUser(ctx, store.NewUser{
			OrganisationID: org.ID, Username: in.Username, DisplayName: in.DisplayName,
			Role: in.Role, PasswordHash: hash,
		})
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(ctx, store.Event{
			Action: ActionUserCreate, ObjectType: "user", ObjectID: strconv.FormatInt(u.ID, 10),
			Details: map[string]any{"username": u.Username, "role": string(u.Role), "organisation": org.Slug, "via": "cli"},
		})
		return err
	})
	if err != nil {
		return store.User{}, err
	}
	return u, nil
}

// ErrPasswordMismatch: the two passwords typed at the prompt differ.
var ErrPasswordMismatch = errors.New("the passwords do not match")

// ReadPassword reads a new password for `nbms createuser`, never from the
// command line (argv is visible to every local user in ps and lands in
// shell history).
//
// When isTerminal is true, in must be the terminal (an *os.File such as
// os.Stdin): the password is typed twice after prompts written to out,
// with echo off. Otherwise the first line of in is the password, exactly
// as given apart from its line ending (for `printf '%s\n' "$PW" | nbms
// createuser ...` or a secret file); nothing is written to out.
//
// It refuses an empty password and one longer than password.MaxBytes; the
// remaining policy is CreateUser's.
func ReadPassword(in io.Reader, out io.Writer, isTerminal bool) (string, error) {
	if !isTerminal {
		return readLine(in)
	}
	f, ok := in.(interface{ Fd() uintptr })
	if !ok {
		return "", errors.New("reading a password from a terminal needs a file descriptor")
	}
	fd := int(f.Fd())
	first, err := prompt(fd, out, "Password: ")
	if err != nil {
		return "", err
	}
	second, err := prompt(fd, out, "Password (again): ")
	if err != nil {
		return "", err
	}
	if first != second {
		return "", ErrPasswordMismatch
	}
	if err := checkRead(first); err != nil {
		return "", err
	}
	return first, nil
}

func prompt(fd int, out io.Writer, text string) (string, error) {
	if _, err := io.WriteString(out, text); err != nil {
		return "", err
	}
	b, err := term.ReadPassword(fd)
	// The user's Enter was not echoed either; end the prompt line.
	_, _ = io.WriteString(out, "\n")
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

func readLine(in io.Reader) (string, error) {
	// Room for the longest password and a CRLF; one byte more proves the
	// line is too long without reading an unbounded amount.
	r := bufio.NewReaderSize(in, password.MaxBytes+3)
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", password.ErrTooLong
	case err != nil && !errors.Is(err, io.EOF):
		return "", fmt.Errorf("reading the password: %w", err)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	pw := string(line)
	if err := checkRead(pw); err != nil {
		return "", err
	}
	return pw, nil
}

func checkRead(pw string) error {
	switch {
	case pw == "":
		return password.ErrEmpty
	case len(pw) > password.MaxBytes:
		return password.ErrTooLong
	}
	return nil
}
