package predeploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
)

func prodEnv(t *testing.T) map[string]string {
	static, media := t.TempDir(), t.TempDir()
	return map[string]string{
		"NBMS_ENV":             "prod",
		"SECRET_KEY":           "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj",
		"DATABASE_URL":         "postgres://root@127.0.0.1:5432/test?sslmode=disable",
		"REDIS_URL":            "redis://127.0.0.1:6379/0",
		"ALLOWED_HOSTS":        "nbms.example.org",
		"CSRF_TRUSTED_ORIGINS": "https://nbms.example.org",
		"TRUSTED_PROXY_CIDRS":  "172.30.0.0/24",
		"STATIC_ROOT":          static,
		"MEDIA_ROOT":           media,
	}
}

// pgProbe pings the machine's real PostgreSQL.
func pgProbe(url string) Probe {
	return func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return errors.New("cannot connect")
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	}
}

func result(t *testing.T, rep Report, id string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no result %s in %+v", id, rep.Results)
	return Result{}
}

func TestHealthyProductionPasses(t *testing.T) {
	env := prodEnv(t)
	s, err := config.Parse(env)
	require.NoError(t, err)
	rep := Run(context.Background(), Inputs{
		Settings: s, Database: pgProbe(env["DATABASE_URL"]), Redis: func(context.Context) error { return nil },
		PendingMigrations: func(context.Context) ([]string, error) { return nil, nil },
	})
	require.False(t, rep.Failed(), "%+v", rep.Results)
	pass, fail, skip := rep.Counts()
	assert.Equal(t, 0, fail)
	assert.Equal(t, 0, skip)
	assert.Equal(t, len(config.DeployChecks())+7, pass, "contract, profile, every deploy check, db, redis, migrations, static, media")

	var out bytes.Buffer
	require.NoError(t, rep.WriteText(&out))
	assert.Contains(t, out.String(), "ready to deploy")
	assert.Contains(t, out.String(), "NBMS-W004")
}

func TestEveryFailureIsReported(t *testing.T) {
	env := prodEnv(t)
	env["SECURE_HSTS_SECONDS"] = "60"
	env["MEDIA_ROOT"] = filepath.Join(t.TempDir(), "missing")
	readOnly := t.TempDir()
	require.NoError(t, os.Chmod(readOnly, 0o500))
	env["STATIC_ROOT"] = readOnly
	s, loadErr := config.Parse(env)
	require.Error(t, loadErr)

	rep := Run(context.Background(), Inputs{
		Settings: s, LoadErr: loadErr,
		Database:          pgProbe("postgres://root@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"),
		Redis:             func(context.Context) error { return errors.New("dial tcp 127.0.0.1:1: connection refused") },
		PendingMigrations: func(context.Context) ([]string, error) { return []string{"00002_sites"}, nil },
	})
	require.True(t, rep.Failed())
	assert.Equal(t, Fail, result(t, rep, "NBMS-ENV").Status)
	assert.Contains(t, result(t, rep, "NBMS-ENV").Detail, "SECURE_HSTS_SECONDS")
	assert.Equal(t, Fail, result(t, rep, "NBMS-W004").Status)
	assert.Equal(t, Fail, result(t, rep, "NBMS-DB").Status)
	assert.Equal(t, Fail, result(t, rep, "NBMS-REDIS").Status)
	assert.Contains(t, result(t, rep, "NBMS-MIGRATE").Detail, "00002_sites")
	assert.Equal(t, Fail, result(t, rep, "NBMS-MEDIA").Status)
	if os.Geteuid() != 0 { // root writes through mode bits
		assert.Equal(t, Fail, result(t, rep, "NBMS-STATIC").Status)
	}

	var out bytes.Buffer
	require.NoError(t, rep.WriteJSON(&out))
	var decoded Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &decoded))
	assert.Equal(t, rep, decoded)
}

func TestNonProductionProfileFails(t *testing.T) {
	s, err := config.Parse(map[string]string{"NBMS_ENV": "dev"})
	require.NoError(t, err)
	rep := Run(context.Background(), Inputs{Settings: s, SkipMigrateReason: "--skip-migrate-check given"})
	assert.Equal(t, Fail, result(t, rep, "NBMS-C000").Status)
	// dev defaults would not pass production's deploy checks.
	assert.Equal(t, Fail, result(t, rep, "NBMS-W004").Status)
	assert.Equal(t, Fail, result(t, rep, "NBMS-W009").Status)
	m := result(t, rep, "NBMS-MIGRATE")
	assert.Equal(t, Skip, m.Status)
	assert.Equal(t, "--skip-migrate-check given", m.Detail)
	assert.Equal(t, Skip, result(t, rep, "NBMS-DB").Status, "no probe given: skipped, visibly")
}

func TestSecretsNeverAppearInTheReport(t *testing.T) {
	env := prodEnv(t)
	env["SECRET_KEY"] = "weak-but-secret-value"
	env["DATABASE_URL"] = "postgres://nbms:very-secret-db-password@127.0.0.1:1/nbms"
	s, loadErr := config.Parse(env)
	rep := Run(context.Background(), Inputs{Settings: s, LoadErr: loadErr, Database: pgProbe(env["DATABASE_URL"])})
	var text, js bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	require.NoError(t, rep.WriteJSON(&js))
	for _, secret := range []string{"weak-but-secret-value", "very-secret-db-password"} {
		assert.NotContains(t, text.String(), secret)
		assert.NotContains(t, js.String(), secret)
	}
	assert.True(t, strings.Contains(text.String(), "NOT ready to deploy"))
}
