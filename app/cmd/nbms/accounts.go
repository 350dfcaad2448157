package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/term"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/auth"
	"github.com/nbms-deploy/nbms/app/internal/database"
	"github.com/nbms-deploy/nbms/app/internal/service"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// openStore connects to the database of the settings.
func openStore(ctx context.Context, s *config.Settings, stderr io.Writer) (*store.Store, *pgxpool.Pool, bool) {
	pool, err := database.Open(ctx, service.DatabaseOptions(s))
	if err != nil {
		if !timedOut(ctx) {
			fmt.Fprintln(stderr, "nbms:", err)
		}
		return nil, nil, false
	}
	return store.New(pool), pool, true
}

// runCreateOrg creates an organisation, recorded in the audit trail.
func runCreateOrg(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("createorg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	slug := fs.String("slug", "", "short identifier, e.g. sanbi (required)")
	name := fs.String("name", "", "display name (required)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *slug == "" || *name == "" {
		fmt.Fprintln(stderr, "Usage: nbms createorg --slug SLUG --name NAME")
		return exitUsage
	}
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	return runOneShot(ctx, "createorg", s, stderr, func(ctx context.Context) int {
		st, pool, ok := openStore(ctx, s, stderr)
		if !ok {
			return exitFail
		}
		defer pool.Close()
		var org store.Organisation
		err := st.InTx(ctx, func(tx store.Tx) error {
			var err error
			if org, err = tx.CreateOrganisation(ctx, *slug, *name); err != nil {
				return err
			}
			_, err = tx.InsertAuditEvent(ctx, store.Event{
				Action: "organisation.create", ObjectType: "organisation", ObjectID: strconv.FormatInt(org.ID, 10),
				Details: map[string]any{"slug": org.Slug, "via": "cli"},
			})
			return err
		})
		if err != nil {
			if !timedOut(ctx) {
				fmt.Fprintln(stderr, "nbms createorg:", err)
			}
			return exitFail
		}
		fmt.Fprintf(stdout, "created organisation %s (id %d)\n", org.Slug, org.ID)
		return exitOK
	})
}

// runCreateUser creates a user. The password is read from standard input
// (typed twice, without echo, on a terminal), never from the command line,
// which every local user can read in the process list.
func runCreateUser(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("createuser", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var in auth.NewUserInput
	fs.StringVar(&in.OrganisationSlug, "org", "", "organisation slug (required; see createorg)")
	fs.StringVar(&in.Username, "username", "", "login name (required)")
	fs.StringVar(&in.DisplayName, "name", "", "display name")
	role := fs.String("role", string(store.RoleContributor), "admin, staff or contributor")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if in.OrganisationSlug == "" || in.Username == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "Usage: nbms createuser --org SLUG --username NAME [--name DISPLAY] [--role ROLE] < password")
		return exitUsage
	}
	in.Role = store.Role(*role)
	if in.DisplayName == "" {
		in.DisplayName = in.Username
	}
	pw, err := auth.ReadPassword(os.Stdin, stderr, term.IsTerminal(int(os.Stdin.Fd())))
	if err != nil {
		fmt.Fprintln(stderr, "nbms createuser:", err)
		return exitFail
	}
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	// The limit starts once the password is in: it bounds the work, not
	// the typing.
	return runOneShot(ctx, "createuser", s, stderr, func(ctx context.Context) int {
		st, pool, ok := openStore(ctx, s, stderr)
		if !ok {
			return exitFail
		}
		defer pool.Close()
		u, err := auth.CreateUser(ctx, st, in, pw)
		if err != nil {
			if !timedOut(ctx) {
				fmt.Fprintln(stderr, "nbms createuser:", err)
			}
			return exitFail
		}
		fmt.Fprintf(stdout, "created %s user %s (id %d)\n", u.Role, u.Username, u.ID)
		return exitOK
	})
}
