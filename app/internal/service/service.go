// Package service wires the running app: it turns loaded settings into a
// logger, an error tracker, database and Redis clients, health checks and
// the HTTP server, and runs them until the context ends. It is the one
// place where the process's collaborators are built and closed.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/api"
	"github.com/nbms-deploy/nbms/app/internal/auth"
	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/database"
	"github.com/nbms-deploy/nbms/app/internal/errtrack"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/password"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/app/internal/server"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// Service is a built, not yet running, app.
type Service struct {
	Settings *config.Settings
	Logger   *slog.Logger
	DB       *pgxpool.Pool
	Redis    *redis.Client
	Health   *health.Health
	Reporter *errtrack.Reporter
	Limiter  *ratelimit.Limiter
	Sessions *auth.Manager
	Handler  http.Handler
	Server   *http.Server
}

// NewLogger builds the JSON logger every part of the process uses, with
// the settings' secrets registered for verbatim redaction.
func NewLogger(s *config.Settings, w io.Writer) (*slog.Logger, *logging.Redactor) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(s.LogLevel))
	redactor := logging.NewRedactor(s.SecretValues()...)
	return slog.New(logging.NewHandler(w, level, redactor)), redactor
}

// Options are the process-level choices that are not configuration.
type Options struct {
	// LogOutput receives the JSON log; os.Stdout in production.
	LogOutput io.Writer
	// Mount registers extra routes behind the whole middleware chain,
	// beside the app's own (tests use it).
	Mount func(mux *http.ServeMux)
}

// Build constructs every collaborator. Nothing connects yet: the database
// and Redis clients connect lazily, so a dependency that is down at start
// makes /readyz fail instead of crash-looping the process.
func Build(ctx context.Context, s *config.Settings, o Options) (*Service, error) {
	logger, redactor := NewLogger(s, o.LogOutput)
	env := s.SentryEnvironment
	if env == "" {
		env = string(s.Profile)
	}
	reporter, err := errtrack.New(errtrack.Options{
		DSN: s.SentryDSN, Environment: env, Release: s.SentryRelease, SampleRate: 1, Redactor: redactor,
	})
	if err != nil {
		return nil, fmt.Errorf("SENTRY_DSN: %w", err)
	}
	pool, err := database.Open(ctx, DatabaseOptions(s))
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	cache.UseLogger(logger)
	rdb, err := cache.Open(ctx, s.RedisURL, cache.Options{})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	// The migration check reads goose's table through the same pool; the
	// *sql.DB view borrows the pool's connections and owns none.
	sqlDB := stdlib.OpenDBFromPool(pool)
	h := health.New(health.Options{
		Checks:  []health.Checker{database.Check(pool), cache.Check(rdb), migrate.NewCheck(sqlDB)},
		Timeout: s.ReadinessTimeout,
		Logger:  logger,
	})
	var limiter *ratelimit.Limiter
	if s.RateLimitEnabled {
		limiter, err = ratelimit.New(rdb, logger, server.RatePolicies(s)...)
		if err != nil {
			rdb.Close()
			pool.Close()
			return nil, fmt.Errorf("rate limits: %w", err)
		}
	}
	sessions, err := auth.New(auth.Options{
		Settings: s, Pool: pool, Logger: logger, Hasher: password.Default(),
		ThrottleUsername: func(w http.ResponseWriter, r *http.Request, username string) bool {
			// Usernames are case-insensitive: one bucket per account.
			return limiter.Check(w, r, server.PolicyLoginUser, strings.ToLower(username))
		},
	})
	if err != nil {
		rdb.Close()
		pool.Close()
		return nil, fmt.Errorf("sessions: %w", err)
	}
	st := store.New(pool)
	mount := func(mux *http.ServeMux) {
		sessions.Mount(mux)
		api.Mount(mux, api.Deps{Store: st, MediaRoot: s.MediaRoot, MaxUploadBytes: s.MaxUploadBytes,
			XAccelRedirect: s.MediaXAccelRedirect, Logger: logger})
		if o.Mount != nil {
			o.Mount(mux)
		}
	}
	handler, err := server.New(server.Deps{
		Settings: s, Logger: logger, Health: h, OnPanic: reporter.CapturePanic, Mount: mount,
		Session: sessions.Middleware, Limiter: limiter,
	})
	if err != nil {
		sessions.Close()
		rdb.Close()
		pool.Close()
		return nil, err
	}
	srv := &http.Server{
		Addr:              s.HTTPAddr,
		Handler:           handler,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// net/http's own complaints (TLS handshakes, bad requests) go to
		// the structured log, redacted like everything else.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return &Service{
		Settings: s, Logger: logger, DB: pool, Redis: rdb, Health: h, Sessions: sessions,
		Reporter: reporter, Limiter: limiter, Handler: handler, Server: srv,
	}, nil
}

// maxHeaderBytes is well above any legitimate request (cookies included)
// and far below net/http's 1 MiB default.
const maxHeaderBytes = 64 << 10

// DatabaseOptions maps the contract onto the pool options.
func DatabaseOptions(s *config.Settings) database.Options {
	return database.Options{
		URL:                      s.DatabaseURL,
		MaxConns:                 int32(s.DBMaxConns),
		MinConns:                 int32(s.DBMinConns),
		MaxConnLifetime:          s.DBConnMaxAge,
		MaxConnIdleTime:          s.DBConnMaxIdle,
		ConnectTimeout:           s.DBConnectTimeout,
		PgBouncerTransactionMode: s.DBPgBouncerMode,
		ApplicationName:          "nbms",
	}
}

// Run serves on ln until ctx ends, then shuts down gracefully:
//  1. /readyz turns 503 so the proxy stops sending new requests,
//  2. after SHUTDOWN_DRAIN_DELAY the listener closes and in-flight requests
//     get up to SHUTDOWN_TIMEOUT to finish,
//  3. the database and Redis clients close and Sentry is flushed.
func (svc *Service) Run(ctx context.Context, ln net.Listener) error {
	s := svc.Settings
	svc.Logger.Info("server starting", "addr", ln.Addr().String(), "profile", string(s.Profile))
	serveErr := make(chan error, 1)
	go func() { serveErr <- svc.Server.Serve(ln) }()

	var runErr error
	select {
	case err := <-serveErr:
		runErr = fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
		svc.Logger.Info("shutdown requested: draining", "drain_delay", s.DrainDelay.String())
		svc.Health.SetDraining(true)
		if s.DrainDelay > 0 {
			time.Sleep(s.DrainDelay)
		}
		shutdownCtx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
		err := svc.Server.Shutdown(shutdownCtx)
		cancel()
		if err != nil {
			runErr = fmt.Errorf("graceful shutdown: %w", err)
			_ = svc.Server.Close()
		}
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
			runErr = err
		}
	}
	svc.Close()
	if runErr != nil {
		svc.Logger.Error("server stopped with an error", "error", runErr)
		return runErr
	}
	svc.Logger.Info("server stopped")
	return nil
}

// Close releases the clients and flushes the error tracker.
func (svc *Service) Close() {
	svc.Sessions.Close()
	svc.Redis.Close()
	svc.DB.Close()
	svc.Reporter.Flush(2 * time.Second)
}
