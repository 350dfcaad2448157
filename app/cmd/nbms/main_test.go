package main

// Tests of the built binary as an operator or an orchestrator meets it:
// exit statuses, messages, signals.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

var (
	binary string
	// databaseURL is a migrated database of this package's own.
	databaseURL string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nbms-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "nbms")
	// Stamped as the image build stamps it.
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+stampedVersion, "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building nbms: " + err.Error())
	}
	code := storetest.Main(m, &databaseURL)
	os.RemoveAll(dir)
	os.Exit(code)
}

const strongKey = "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj"

func prodEnv(t *testing.T) map[string]string {
	return map[string]string{
		"NBMS_ENV":             "prod",
		"SECRET_KEY":           strongKey,
		"DATABASE_URL":         databaseURL,
		"REDIS_URL":            testsupport.RedisURL(),
		"ALLOWED_HOSTS":        "nbms.example.org",
		"CSRF_TRUSTED_ORIGINS": "https://nbms.example.org",
		"TRUSTED_PROXY_CIDRS":  "127.0.0.1/32",
		"STATIC_ROOT":          t.TempDir(),
		"MEDIA_ROOT":           t.TempDir(),
	}
}

// nbmsCommand runs the binary with exactly env (nothing inherited but PATH).
func nbmsCommand(ctx context.Context, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := nbmsCommand(ctx, env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running nbms: %v", err)
	}
	return out.String(), errb.String(), code
}

const stampedVersion = "1.4.0-rc.2+e2e"

func TestVersionIsTheStampedOne(t *testing.T) {
	out, _, code := run(t, nil, "version")
	assert.Equal(t, 0, code)
	assert.Equal(t, stampedVersion+"\n", out)
}

func TestHelpListsEverySubcommand(t *testing.T) {
	out, _, code := run(t, nil, "help")
	assert.Equal(t, 0, code)
	for name := range commands {
		assert.Contains(t, out, name)
	}
	_, errOut, code := run(t, nil, "frobnicate")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
}

func TestServeFailsFastListingEveryProblem(t *testing.T) {
	env := map[string]string{
		"NBMS_ENV":             "prod",
		"SECRET_KEY":           "short-but-secret-value",
		"DATABASE_URL":         "postgres://nbms:leaky-db-password@db/nbms",
		"CORS_ALLOWED_ORIGINS": "*",
	}
	start := time.Now()
	out, errOut, code := run(t, env, "serve")
	assert.Equal(t, config.ExitConfig, code)
	assert.Less(t, time.Since(start), 30*time.Second)
	assert.Empty(t, out, "nothing served, nothing logged")
	for _, name := range []string{"SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "CORS_ALLOWED_ORIGINS", "REDIS_URL", "TRUSTED_PROXY_CIDRS"} {
		assert.Contains(t, errOut, name)
	}
	assert.Equal(t, 1, strings.Count(errOut, "invalid configuration"), "one message")
	assert.NotContains(t, errOut, "short-but-secret-value")
	assert.NotContains(t, errOut, "leaky-db-password")

	_, errOut, code = run(t, nil, "serve")
	assert.Equal(t, config.ExitConfig, code)
	assert.Contains(t, errOut, "NBMS_ENV: required but not set")
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeHealthcheckAndSIGTERM(t *testing.T) {
	env := prodEnv(t)
	env["HTTP_ADDR"] = freeAddr(t)
	env["SHUTDOWN_DRAIN_DELAY"] = "100ms"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := nbmsCommand(ctx, env, "serve")
	var logs testsupport.SyncBuffer
	srv.Stdout, srv.Stderr = &logs, &logs
	require.NoError(t, srv.Start())
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()

	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + env["HTTP_ADDR"] + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, 20*time.Second, 50*time.Millisecond, logs.String())

	out, errOut, code := run(t, env, "healthcheck")
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "/healthz: ok")
	out, errOut, code = run(t, env, "healthcheck", "--path", "/readyz")
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "/readyz: ok")

	require.NoError(t, srv.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status 0 after SIGTERM: %s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	assert.Contains(t, logs.String(), "shutdown requested")
	assert.Contains(t, logs.String(), `"msg":"server stopped"`)

	// With the server gone, the container health check fails.
	_, _, code = run(t, env, "healthcheck")
	assert.Equal(t, exitFail, code)
}

func TestPredeployCheck(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		out, errOut, code := run(t, prodEnv(t), "predeploy-check", "--skip-migrate-check")
		assert.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "ready to deploy")
		assert.Regexp(t, `PASS\s+NBMS-DB\s`, out)
		assert.Regexp(t, `PASS\s+NBMS-REDIS\s`, out)
		assert.Regexp(t, `SKIP\s+NBMS-MIGRATE\s`, out)
		out, errOut, code = run(t, prodEnv(t), "predeploy-check")
		assert.Equal(t, 0, code, out+errOut)
		assert.Regexp(t, `PASS\s+NBMS-MIGRATE\s`, out, "the test database is migrated")
	})
	t.Run("database unreachable", func(t *testing.T) {
		env := prodEnv(t)
		env["DATABASE_URL"] = "postgres://root:unreachable-db-pass@127.0.0.1:1/test?sslmode=disable"
		out, _, code := run(t, env, "predeploy-check", "--skip-migrate-check", "--json")
		assert.Equal(t, exitFail, code)
		var rep struct {
			Results []struct{ ID, Status string }
		}
		require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
		statuses := map[string]string{}
		for _, r := range rep.Results {
			statuses[r.ID] = r.Status
		}
		assert.Equal(t, "fail", statuses["NBMS-DB"])
		assert.Equal(t, "pass", statuses["NBMS-REDIS"])
		assert.NotContains(t, out, "unreachable-db-pass")
	})
	t.Run("weak production settings", func(t *testing.T) {
		env := prodEnv(t)
		env["SECURE_HSTS_SECONDS"] = "300"
		env["SESSION_COOKIE_SECURE"] = "false"
		env["SECURE_SSL_REDIRECT"] = "false"
		out, _, code := run(t, env, "predeploy-check", "--skip-migrate-check")
		assert.Equal(t, config.ExitConfig, code)
		for _, id := range []string{"NBMS-W004", "NBMS-W012", "NBMS-W008", "NBMS-ENV"} {
			assert.Regexp(t, `FAIL\s+`+id+`\s`, out)
		}
		assert.Contains(t, out, "NOT ready to deploy")
	})
	t.Run("dev settings are not production settings", func(t *testing.T) {
		out, _, code := run(t, map[string]string{"NBMS_ENV": "dev", "NBMS_READ_DOTENV": "false"}, "predeploy-check", "--skip-migrate-check")
		assert.NotEqual(t, 0, code)
		assert.Regexp(t, `FAIL\s+NBMS-C000\s`, out)
		assert.Regexp(t, `FAIL\s+NBMS-W009\s`, out)
	})
}

func TestSettingsReferenceMatchesTheCommittedFile(t *testing.T) {
	out, _, code := run(t, nil, "settings-reference")
	require.Equal(t, 0, code)
	committed, err := os.ReadFile(filepath.Join("..", "..", "..", config.ReferencePath))
	require.NoError(t, err)
	assert.Equal(t, string(committed), out, fmt.Sprintf("regenerate with `make docs` (%s)", config.ReferencePath))
}

// runWithStdin is run with standard input.
func runWithStdin(t *testing.T, env map[string]string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := nbmsCommand(ctx, env, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("running nbms: %v", err)
	}
	return out.String(), errb.String(), code
}

func TestAccountsLoginAndThrottlingEndToEnd(t *testing.T) {
	env := prodEnv(t)
	env["HTTP_ADDR"] = freeAddr(t)
	env["RATE_LIMIT_LOGIN_USER"] = "3/1m"
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	org, user := "e2e-"+suffix, "alice-"+suffix
	const pw = "correct horse battery staple"

	out, errOut, code := run(t, env, "createorg", "--slug", org, "--name", "E2E Org")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "created organisation "+org)
	_, errOut, code = runWithStdin(t, env, "short\n", "createuser", "--org", org, "--username", "bob-"+suffix)
	assert.Equal(t, exitFail, code, "a short password is refused")
	assert.NotContains(t, errOut, "short\n")
	out, errOut, code = runWithStdin(t, env, pw+"\n", "createuser", "--org", org, "--username", user, "--role", "staff")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "created staff user "+user)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := nbmsCommand(ctx, env, "serve")
	var logs testsupport.SyncBuffer
	srv.Stdout, srv.Stderr = &logs, &logs
	require.NoError(t, srv.Start())
	t.Cleanup(func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() })
	base := "http://" + env["HTTP_ADDR"]
	require.Eventually(t, func() bool {
		res, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, 20*time.Second, 50*time.Millisecond)

	// The per-IP login bucket in Redis outlives this run: a client of its own.
	clientIP := testsupport.UniqueClientIP()
	send := func(method, path, body, cookie string) *http.Response {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Host = "nbms.example.org"
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("X-Forwarded-For", clientIP)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	login := func(password string) *http.Response {
		body, _ := json.Marshal(map[string]string{"username": strings.ToUpper(user), "password": password})
		return send("POST", "/auth/login", string(body), "")
	}

	res := login(pw)
	require.Equal(t, 200, res.StatusCode)
	cookie := strings.SplitN(res.Header.Get("Set-Cookie"), ";", 2)[0]
	require.True(t, strings.HasPrefix(cookie, "__Host-nbms_session="), cookie)

	res = send("GET", "/auth/me", "", cookie)
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	res = send("POST", "/api/indicators", `{"code":"E2E-`+suffix[len(suffix)-6:]+`","title":"End to end","description":"","unit":"%","framework_target":"GBF Target 3","published":true}`, cookie)
	assert.Equal(t, 201, res.StatusCode, "staff may create indicators")
	assert.Equal(t, 403, send("GET", "/api/audit", "", cookie).StatusCode, "only administrators read the audit trail")

	// The public API is anonymous: a session cookie changes nothing about
	// its answer (no session is loaded, so none varies it).
	anon, signed := send("GET", "/api/public/indicators", "", ""), send("GET", "/api/public/indicators", "", cookie)
	require.Equal(t, 200, signed.StatusCode)
	assert.Equal(t, anon.Header.Get("ETag"), signed.Header.Get("ETag"))
	assert.Equal(t, anon.Header.Values("Vary"), signed.Header.Values("Vary"))
	for _, v := range signed.Header.Values("Vary") {
		assert.NotContains(t, strings.ToLower(v), "cookie", "a public answer does not vary by cookie")
	}
	assert.Empty(t, signed.Header.Values("Set-Cookie"))

	// Per-username throttling: the 4th attempt on the account within the
	// window is refused, whatever the password, before it is checked.
	assert.Equal(t, 401, login("wrong password, attempt one").StatusCode)
	assert.Equal(t, 401, login("wrong password, attempt two").StatusCode)
	res = login(pw)
	assert.Equal(t, 429, res.StatusCode)
	assert.NotEmpty(t, res.Header.Get("Retry-After"))

	res = send("POST", "/auth/logout", "", cookie)
	assert.Equal(t, 204, res.StatusCode)
	assert.Equal(t, 401, send("GET", "/auth/me", "", cookie).StatusCode, "the session ended server-side")
	assert.NotContains(t, logs.String(), pw)
}
