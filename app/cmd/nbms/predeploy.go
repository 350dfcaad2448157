package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/database"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/predeploy"
	"github.com/nbms-deploy/nbms/app/internal/service"
)

func runPredeploy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("predeploy-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	skipMigrate := fs.Bool("skip-migrate-check", false, "do not check for pending migrations (e.g. before the first `nbms migrate up`)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "time limit of each connection check")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}

	s, loadErr := config.Load()
	in := predeploy.Inputs{Settings: s, LoadErr: loadErr, Timeout: *timeout}
	var cerr *config.Error
	contractBroken := errors.As(loadErr, &cerr)
	if loadErr != nil && !contractBroken {
		fmt.Fprintln(stderr, "nbms predeploy-check:", loadErr)
		return config.ExitConfig
	}
	if !contractBroken || !mentions(cerr, "DATABASE_URL", "DB_MAX_CONNS", "DB_MIN_CONNS", "DB_CONNECT_TIMEOUT") {
		pool, err := database.Open(ctx, service.DatabaseOptions(s))
		if err == nil {
			defer pool.Close()
			in.Database = func(ctx context.Context) error { return database.Ping(ctx, pool) }
		} else {
			in.Database = func(context.Context) error { return err }
		}
	}
	if !contractBroken || !mentions(cerr, "REDIS_URL") {
		rdb, err := cache.Open(ctx, s.RedisURL, cache.Options{})
		if err == nil {
			defer rdb.Close()
			in.Redis = cache.Check(rdb).Check
		} else {
			in.Redis = func(context.Context) error { return err }
		}
	}
	switch {
	case *skipMigrate:
		in.SkipMigrateReason = "--skip-migrate-check given"
	case contractBroken && mentions(cerr, "DATABASE_URL"):
		in.SkipMigrateReason = "DATABASE_URL invalid: see NBMS-ENV"
	default:
		db, err := migrate.Open(s.DatabaseURL)
		if err != nil {
			in.PendingMigrations = func(context.Context) ([]string, error) { return nil, err }
			break
		}
		defer db.Close()
		in.PendingMigrations = func(ctx context.Context) ([]string, error) { return migrate.Pending(ctx, db) }
	}

	rep := predeploy.Run(ctx, in)
	var err error
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "nbms predeploy-check:", err)
		return exitFail
	}
	switch {
	case contractBroken:
		return config.ExitConfig
	case rep.Failed():
		return exitFail
	}
	return exitOK
}

func mentions(cerr *config.Error, names ...string) bool {
	for _, v := range cerr.Vars() {
		for _, n := range names {
			if v == n {
				return true
			}
		}
	}
	return false
}
