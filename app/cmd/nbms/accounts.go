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

// openStore connects to the database of the loaded settings.
func openStore(ctx context.Context, stderr io.Writer) (*store.Store, *pgxpool.Pool, int) {
	s, ok := loadSettings(stderr)
	if !ok {
		return nil, nil, config.ExitConfig
	}
	pool, err := database.Open(ctx, service.DatabaseOptions(s))
	if err != nil {
		fmt.Fprintln(stderr, "nbms:", err)
		return nil, nil, exitFail
	}
	return store.New(pool), pool, exitOK
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
	st, pool, code := openStore(ctx, stderr)
	if code != exitOK {
		return code
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
		fmt.Fprintln(stderr, "nbms createorg:", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "created organisation %s (id %d)\n", org.Slug, org.ID)
	return exitOK
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
	st, pool, code := openStore(ctx, stderr)
	if code != exitOK {
		return code
	}
	defer pool.Close()
	u, err := auth.CreateUser(ctx, st, in, pw)
	if err != nil {
		fmt.Fprintln(stderr, "nbms createuser:", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "created %s user %s (id %d)\n", u.Role, u.Username, u.ID)
	return exitOK
}
