package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/driver"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

// The organisation, user and records the test writes through the deployed
// stack and then expects to survive replacements, a destroy and a restore.
const (
	orgSlug       = "e2e-org"
	username      = "e2e-staff"
	password      = "correct horse battery staple e2e"
	indicatorCode = "E2E-FORESTS"
	indicatorName = "Forest cover written through the deployed edge"
	portalOrigin  = "https://portal.e2e.test"
)

// TestRealDeploy deploys the e2e stack from nothing with the real engine
// and plugins, checks it from the outside, and takes it through a no-op, a
// configuration change, a new version, rollbacks, a secret rotation,
// restarts of the database, the app, dockerd and every container, a
// deployment that never becomes ready, a migration blocked by a live
// transaction, a destroy and a redeploy onto the kept data, under traffic
// where it matters. The steps depend on each other: the first failure
// stops the run (and shows the containers' logs).
func TestRealDeploy(t *testing.T) {
	s := newStack(t)
	testsupport.LockDockerEngine(t) // every up may build images, and a step restarts the daemon
	removeStackObjects(t)           // what an interrupted run may have left
	t.Cleanup(func() {
		if t.Failed() {
			dumpContainers(t)
		}
		if _, err := s.run("cleanup.destroy", driver.Destroy, s.stackFile(nil)); err != nil {
			t.Logf("cleanup: destroy: %v", err)
		}
		removeStackObjects(t)
		s.writeFigures()
	})

	// overrides are the stack settings the steps have changed so far.
	overrides := map[string]string{}
	file := s.stackFile(overrides)
	var session *http.Cookie
	var evidenceSHA string
	var written time.Time
	// generated are the secrets the program generated, from the first up.
	var generated map[string]any
	// configRelease is the release the config change made live, and
	// configVersion what its binary says it is: a rollback brings them back.
	var configRelease, configVersion string
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"up from nothing: every container running and healthy, probe and policy pack passed", func(t *testing.T) {
			res, err := s.run("up.first", driver.Up, file)
			require.NoError(t, err)
			require.NotNil(t, res.Probe, "the driver probed the deployment")
			assert.True(t, res.Probe.Paths[len(res.Probe.Paths)-1].Ready)
			assert.Equal(t, s.url(""), res.Outputs["url"].Value)
			s.checkPolicyReport(t, res.Report)
			s.waitHealthy(t, 3*time.Minute)
			gen := res.Outputs["generatedSecrets"]
			require.True(t, gen.Secret, "generatedSecrets is a secret output")
			generated = gen.Value.(map[string]any)
		}},
		{"the edge over TLS: probes, landing page, public API, security headers", func(t *testing.T) {
			s.checkEdge(t)
		}},
		{"workflows: accounts in the app container, login, indicator, evidence upload, read back", func(t *testing.T) {
			session, evidenceSHA = s.workflows(t)
			written = time.Now()
		}},
		{"refused at the edge: foreign host, oversized bodies, disallowed origins", func(t *testing.T) {
			s.checkRefusals(t, session)
		}},
		{"the edge answers like the app: its header set, CORS preflights, probes on plain HTTP, client request IDs", func(t *testing.T) {
			s.checkEdgeLikeTheApp(t)
		}},
		{"hardening as docker inspect reports it", func(t *testing.T) {
			s.checkHardening(t)
		}},
		{"no secret in Docker's metadata or in the state", func(t *testing.T) {
			s.checkNoSecretLeaks(t, generated)
		}},
		{"predeploy-check passes in the live release, as make deploy-check runs it", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "ops", "predeploy_check.sh"), stackName).CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), "predeploy-check in "+container(conventions.RoleApp)+" (the live release)")
		}},
		{"backups: a scheduled full backup, WAL archived, a restore drill with the rows", func(t *testing.T) {
			s.checkBackups(t, written)
		}},
		{"concurrent maximum-size uploads pass the edge whole: more than its tmpfs holds, none buffered there", func(t *testing.T) {
			s.checkConcurrentUploads(t, session)
		}},
		{"the load benchmark runs against the deployed stack", func(t *testing.T) {
			s.checkLoadBenchmark(t)
		}},
		{"a second up changes nothing", func(t *testing.T) {
			since := time.Now()
			res, err := s.run("up.noop", driver.Up, file)
			require.NoError(t, err)
			assert.Equal(t, []string{"same"}, slices.Sorted(maps.Keys(res.Changes)), "only unchanged resources: %v; changed: %s", res.Changes, describeChanges(res))
			atApp, viaNginx := probeAnswers(t, since)
			assert.Equal(t, []int{2, 2}, []int{atApp, viaNginx}, "only the driver's own probe ran, through nginx: no resource changed, so no hook")
			s.measureAtRest(t)
		}},
		{"a config change goes live blue/green: a new release beside the live one, no failed request", func(t *testing.T) {
			// The database pool size: app environment, like the log level,
			// but one that keeps the access log this step reads.
			live := s.liveRelease(t)
			overrides["app"] = s.appSettings(t, map[string]any{"dbMaxConns": 12})
			file = s.stackFile(overrides)
			since := time.Now()
			res, traffic, err := s.runWithTraffic("config-change", "up.update", driver.Up, file, session)
			require.NoError(t, err)
			next := s.checkSwitched(t, "config-change", res, traffic, live, nil,
				"DB_MAX_CONNS is in the environment of the app and its one-shots, and nothing else")
			atApp, viaNginx := probeAnswers(t, since)
			assert.Equal(t, 2, viaNginx, "the driver's own probe, through nginx")
			assert.GreaterOrEqual(t, atApp-viaNginx, 2, "the readiness hook probed the new release itself")
			env := docker(t, "inspect", "--format", `{{range .Config.Env}}{{if eq (index (split . "=") 0) "DB_MAX_CONNS"}}{{.}}{{end}}{{end}}`, stackName+"-"+deploy.Instance(conventions.RoleApp, next))
			assert.Equal(t, "DB_MAX_CONNS=12", strings.TrimSpace(env))
			s.checkDataKept(t, session, evidenceSHA)
			configRelease = next
			configVersion = appVersion(t)
		}},
		{"a new app version goes live blue/green with no failed request", func(t *testing.T) {
			live := s.liveRelease(t)
			overrides["images"] = s.imagesSetting("2.0.0-e2e")
			file = s.stackFile(overrides)
			res, traffic, err := s.runWithTraffic("new-version", "up.new-version", driver.Up, file, session)
			require.NoError(t, err)
			next := s.checkSwitched(t, "new-version", res, traffic, live, newVersionImages, "a new build of the app")
			assert.Equal(t, "2.0.0-e2e", appVersion(t), "release %s runs the new version", next)
			s.checkDataKept(t, session, evidenceSHA)
		}},
		{"rollback after a new version: refused until the inputs declare the previous release, then it goes live blue/green with no failed request", func(t *testing.T) {
			live := s.liveRelease(t)
			// The new version's settings still given: refused before
			// anything changes, naming the update to check out.
			code, out := s.runBinary("rollback.refused", driver.Rollback, file)
			assert.Equal(t, driver.ExitUsage, code, tail(out, 40))
			assert.Contains(t, out, "release "+configRelease+" was live before "+live, tail(out, 40))
			assert.Contains(t, out, "deploy release "+live+", not "+configRelease+", which the update of ", tail(out, 40))
			assert.Regexp(t, `deployed from (commit [0-9a-f]{40}|a directory)`, out)
			assert.Equal(t, live, s.liveRelease(t), "the refused rollback changed nothing")

			// The previous settings, as `git checkout <commit>` would bring
			// back the stack file.
			delete(overrides, "images")
			file = s.stackFile(overrides)
			res, traffic, err := s.runWithTraffic("rollback", "rollback.new-version", driver.Rollback, file, session)
			require.NoError(t, err)
			back := s.checkSwitched(t, "rollback", res, traffic, live, newVersionImages, "the previous build of the app, a new switch")
			assert.Equal(t, configRelease, back, "the release live before the new version is live again")
			assert.Equal(t, configRelease, res.DeclaredRelease)
			assert.Equal(t, configVersion, appVersion(t), "the previous version serves")
			s.checkDataKept(t, session, evidenceSHA)
		}},
		{"a rotated SECRET_KEY goes live blue/green with no failed request", func(t *testing.T) {
			live := s.liveRelease(t)
			overrides["secretGenerations"] = `{"secretKey": 1}`
			file = s.stackFile(overrides)
			res, traffic, err := s.runWithTraffic("rotate-secret-key", "up.rotate-secret-key", driver.Up, file, session)
			require.NoError(t, err)
			s.checkSwitched(t, "rotate-secret-key", res, traffic, live, []string{"app-secret-key"}, "a new SECRET_KEY: its generator, and a new release that reads it")
			gen := res.Outputs["generatedSecrets"].Value.(map[string]any)
			assert.NotEqual(t, generated["secretKey"], gen["secretKey"], "the key is new")
			for _, name := range []string{"appDbPassword", "redisPassword", "dbSuperuserPassword"} {
				assert.Equal(t, generated[name], gen[name], "%s is as it was", name)
			}
			s.checkDataKept(t, session, evidenceSHA)
		}},
		{"rotated database and Redis passwords go live through the other logins with no failed request, and the previous ones stop working", func(t *testing.T) {
			live := s.liveRelease(t)
			// The passwords the live release logs in with work, as nbms_a.
			out, err := dbLogin(t, "nbms_a", generated["appDbPassword"].(string))
			require.NoError(t, err)
			assert.Equal(t, "nbms_a nbms", out, "a login acts as the owner")
			assert.Equal(t, "PONG", cacheLogin(t, "nbms_a", generated["redisPassword"].(string)))
			cacheID := inspect(t, container(conventions.RoleCache)).ID
			overrides["secretGenerations"] = `{"secretKey": 1, "appDbPassword": 1, "redisPassword": 1}`
			file = s.stackFile(overrides)
			res, traffic, err := s.runWithTraffic("rotate-passwords", "up.rotate-passwords", driver.Up, file, session)
			require.NoError(t, err)
			// Nothing but the passwords' generators and the release: neither
			// PostgreSQL nor Redis is restarted.
			s.checkSwitched(t, "rotate-passwords", res, traffic, live, []string{"app-db-password", "redis-password"},
				"new app passwords: their generators, and a new release that logs in with them")
			assert.Equal(t, cacheID, inspect(t, container(conventions.RoleCache)).ID, "Redis kept running")
			assert.Equal(t, map[string]any{"db": "nbms_b", "cache": "nbms_b"}, res.Outputs["app"].Value.(map[string]any)["logins"], "the live release's logins, the only ones left")
			gen := res.Outputs["generatedSecrets"].Value.(map[string]any)
			require.NotEqual(t, generated["appDbPassword"], gen["appDbPassword"], "the database password is new")
			require.NotEqual(t, generated["redisPassword"], gen["redisPassword"], "the Redis password is new")

			out, err = dbLogin(t, "nbms_b", gen["appDbPassword"].(string))
			require.NoError(t, err)
			assert.Equal(t, "nbms_b nbms", out, "the new password works, for the other login")
			_, err = dbLogin(t, "nbms_a", generated["appDbPassword"].(string))
			require.Error(t, err, "the previous password stops working")
			assert.Contains(t, err.Error(), `password authentication failed for user "nbms_a"`)
			_, err = dbLogin(t, "nbms", generated["appDbPassword"].(string))
			require.Error(t, err, "the owner never logs in")
			sessions, err := execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-Atc",
				"SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE datname = 'nbms' AND backend_type = 'client backend'")
			require.NoError(t, err)
			assert.Equal(t, "nbms_b", strings.TrimSpace(sessions), "the app's sessions are all the new login's")

			assert.Equal(t, "PONG", cacheLogin(t, "nbms_b", gen["redisPassword"].(string)), "the new Redis password works, for the other login")
			assert.Contains(t, cacheLogin(t, "nbms_a", generated["redisPassword"].(string)), "WRONGPASS", "the previous one stops working")

			// The runbook's commands that close a retired login's sessions
			// at once work as written (there is none left to close).
			out, err = execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-c",
				"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'nbms_a'")
			require.NoError(t, err)
			assert.Contains(t, out, "(0 rows)")
			out, err = execIn(t, conventions.RoleCache, "", "sh", "-c", `REDISCLI_AUTH="$(cat /var/lib/nbms-cache/admin)" \
    redis-cli --no-auth-warning --user nbms-admin -s /var/lib/nbms-cache/redis.sock client kill user nbms_a`)
			require.NoError(t, err)
			assert.Equal(t, "0", strings.TrimSpace(out), "CLIENT KILL USER: the number of connections closed")
			generated = gen
			s.checkDataKept(t, session, evidenceSHA)
		}},
		{"a database restart: /readyz 503 while it is down, /healthz 200, the app recovers on its own", func(t *testing.T) {
			s.checkDatabaseRestart(t, session)
		}},
		{"the app survives docker restart and a kill of its process: the stack serves again by itself", func(t *testing.T) {
			s.checkAppRestarts(t, session)
		}},
		{"the host restarts: a restart of dockerd, and every container stopped and started in the worst order; the stack serves again by itself", func(t *testing.T) {
			s.checkHostRestarts(t, session, evidenceSHA)
		}},
		{"a release that never becomes ready never takes traffic: up fails with exit 4, rollback clears it and leaves the live release alone", func(t *testing.T) {
			live := s.liveRelease(t)
			liveID := inspect(t, container(conventions.RoleApp)).ID
			overrides["images"] = s.imagesSetting("3.0.0-broken")
			overrides["probe"] = `{"timeout": "25s"}`
			broken := s.stackFile(overrides)
			// The fault, from the outside: as soon as the new release's
			// container exists it loses the internal network (PostgreSQL,
			// Redis). It is alive (/healthz) but never ready (/readyz).
			cutOff := cutOffNewRelease(live)
			stopTraffic := s.startTraffic("broken-release", session)
			code, out := s.runBinary("up.broken-release", driver.Up, broken)
			traffic := stopTraffic()
			brokenName, err := cutOff()
			require.NoError(t, err, "the new release's container appeared and was cut off")
			assert.Equal(t, driver.ExitProbe, code, tail(out, 40))
			assert.Contains(t, out, "readiness probe of the new app-", tail(out, 40))
			assert.Contains(t, out, "post-deploy check failed: /readyz not ready after 25s", tail(out, 40))
			assert.Contains(t, out, "last answer 503", "the prober says what it last saw")
			assert.Positive(t, traffic.Sent, "the traffic ran through the failed update")
			assert.Zero(t, traffic.Failed, "the live release kept serving: %v", traffic.Failures)
			assert.Equal(t, live, s.liveRelease(t), "nginx still sends to the live release")
			assert.Equal(t, liveID, inspect(t, container(conventions.RoleApp)).ID, "the live release's container was not touched")
			// The broken release answered nothing but its probes.
			var answered []string
			logs, err := exec.Command("docker", "logs", brokenName).CombinedOutput()
			require.NoError(t, err)
			for line := range strings.SplitSeq(string(logs), "\n") {
				var l map[string]any
				if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "request" && l["path"] != "/readyz" && l["path"] != "/healthz" {
					answered = append(answered, line)
				}
			}
			assert.Empty(t, answered, "the broken release never answered a request but its probes")

			// The operator's reflex: rollback. The last update failed, so it
			// re-deploys the live release's own inputs: the app image is
			// rebuilt from them, but the live release's containers do not
			// follow an image ID, and the broken release's are removed.
			delete(overrides, "images")
			delete(overrides, "probe")
			file = s.stackFile(overrides)
			res, traffic, err := s.runWithTraffic("rollback-broken", "rollback.after-broken", driver.Rollback, file, session)
			require.NoError(t, err)
			assert.Equal(t, live, res.DeclaredRelease)
			assert.Positive(t, traffic.Sent, "the traffic ran through the rollback")
			assert.Zero(t, traffic.Failed, "no request failed: %v", traffic.Failures)
			assert.Equal(t, live, s.liveRelease(t), "nginx still sends to the live release")
			assert.Equal(t, liveID, inspect(t, container(conventions.RoleApp)).ID, "the live release's container was not touched")
			// The broken release got its one-shots and its server, never a
			// switch; all three go now, with its secrets.
			brokenRelease := strings.TrimPrefix(brokenName, stackName+"-"+conventions.RoleApp+"-")
			removed := slices.Clone(newVersionImages)
			for _, role := range []string{conventions.RoleDBLogin, conventions.RoleCacheLogin, conventions.RoleMigrate, conventions.RoleCollectstatic, conventions.RoleApp, "secrets-app"} {
				removed = append(removed, deploy.Instance(role, brokenRelease))
			}
			assert.ElementsMatch(t, removed, changedResources(res), "the broken release removed, the images rebuilt from the live release's inputs:%s", describeChanges(res))
			_, err = dockerErr("inspect", brokenName)
			assert.Error(t, err, "the broken release is gone")
			s.checkDataKept(t, session, evidenceSHA)
		}},
		{"a migration queued behind a live transaction gives up after lock_timeout: exit 4, the live release untouched", func(t *testing.T) {
			s.checkBlockedMigration(t, file, session)
		}},
		{"the scheduled restore drill restored the off-host repository's latest backup into a scratch instance: rows counted, indexes checked with amcheck, recorded for backup-status", func(t *testing.T) {
			s.checkScheduledDrill(t)
		}},
		{"destroy removes the containers and keeps the protected volumes", func(t *testing.T) {
			_, err := s.run("destroy", driver.Destroy, file)
			require.NoError(t, err)
			assert.Empty(t, stackObjects(t, "container"))
			assert.Empty(t, stackObjects(t, "network"))
			assert.Equal(t, []string{stackName + "-media", stackName + "-pgbackrest-repo", stackName + "-pgdata"}, stackObjects(t, "volume"))
		}},
		{"a new up reattaches the data", func(t *testing.T) {
			res, err := s.run("up.reattach", driver.Up, file)
			require.NoError(t, err)
			require.NotNil(t, res.Probe)
			// The sessions table survived with the database: the cookie
			// from before the destroy is still a session.
			s.checkDataKept(t, session, evidenceSHA)
			s.login(t) // and the account's password still works
		}},
		{"the off-host store goes down: WAL and backups go on in the local repository, repo2's failure is logged with its cause, and repo2 catches up when the store is back", func(t *testing.T) {
			s.checkOffHostOutage(t)
		}},
		{"the host is lost after writes; recover to a point in time between them brings back exactly the rows before it, from the off-host repository alone", func(t *testing.T) {
			s.drillPointInTime(t, file, generated["backupCipherPass"].(string))
		}},
		{"the host is lost in the middle of writes; recover brings back every archived row: RPO within archive_timeout, RTO within 5 minutes, backups resume into both repositories", func(t *testing.T) {
			s.drillLatest(t, file)
		}},
	}
	for _, step := range steps {
		if !t.Run(step.name, step.run) {
			t.FailNow()
		}
	}
}

// --- steps -----------------------------------------------------------------

// checkPolicyReport reads the report the driver wrote from the deployed
// state: the policy pack evaluated the real provider inputs and outputs.
func (s *stack) checkPolicyReport(t *testing.T, dir string) {
	require.NotEmpty(t, dir, "the driver wrote a policy report")
	data, err := os.ReadFile(filepath.Join(dir, "report.json"))
	require.NoError(t, err)
	var rep struct {
		Result  string `json:"result"`
		Summary struct {
			Policies, Passed, Failed, CannotEvaluate, Disabled int
			MandatoryFailed                                    []string
		} `json:"summary"`
	}
	require.NoError(t, json.Unmarshal(data, &rep))
	assert.Equal(t, "pass", rep.Result)
	assert.Empty(t, rep.Summary.MandatoryFailed)
	assert.Zero(t, rep.Summary.Failed)
	// Every policy evaluated every resource: nothing is hidden from the
	// pack (no secret in an environment it could not read).
	assert.Zero(t, rep.Summary.CannotEvaluate, "no policy said 'cannot evaluate'")
	assert.Equal(t, rep.Summary.Policies, rep.Summary.Passed+rep.Summary.Disabled, "every policy passed")
	s.figures.Policies = map[string]int{"ran": rep.Summary.Policies, "passed": rep.Summary.Passed, "failed": rep.Summary.Failed,
		"cannotEvaluate": rep.Summary.CannotEvaluate, "disabled": rep.Summary.Disabled}
	t.Logf("policy pack on the deployed state: %d policies, %d passed, %d failed, %d could not evaluate",
		rep.Summary.Policies, rep.Summary.Passed, rep.Summary.Failed, rep.Summary.CannotEvaluate)
}

// checkNoSecretLeaks seeds nothing new: it takes every secret of the
// deployment (the generated ones, the TLS key, the seeded Sentry DSN) and
// searches for each in what Docker shows of every object of the stack and in
// `pulumi stack export` without --show-secrets. Then it checks that the
// app did get them, as files.
func (s *stack) checkNoSecretLeaks(t *testing.T, generated map[string]any) {
	require.Len(t, generated, 5, "four passwords and the off-host repository's passphrase")
	secrets := map[string]string{"Sentry DSN key": sentryKey, "S3 secret key": s.s3.SecretKey}
	for name, v := range generated {
		secrets[name] = v.(string)
	}
	key, err := os.ReadFile(s.keyFile)
	require.NoError(t, err)
	secrets["TLS private key"] = strings.Split(strings.TrimSpace(string(key)), "\n")[1]

	var dumps []string
	filter := "label=" + conventions.LabelStack + "=" + stackName
	for _, kind := range []string{"container", "volume", "network"} {
		ids := strings.Fields(docker(t, kind, "ls", "-q", "--filter", filter))
		if kind == "container" {
			ids = strings.Fields(docker(t, "ps", "-a", "-q", "--filter", filter))
		}
		require.NotEmpty(t, ids, kind)
		dumps = append(dumps, docker(t, append([]string{kind, "inspect"}, ids...)...))
	}
	state := s.stackExport(t)
	dumps = append(dumps, state)
	for name, secret := range secrets {
		require.GreaterOrEqual(t, len(secret), 16, name)
		for _, d := range dumps {
			assert.NotContains(t, d, secret, "%s is in Docker's metadata or the state", name)
		}
	}
	assert.Contains(t, state, `"ciphertext"`, "the state holds the secrets encrypted")

	// The app got them as files, which its environment names (that it
	// read them, its readiness on PostgreSQL and Redis has shown).
	app := container(conventions.RoleApp)
	var in []struct {
		Config struct{ Env []string } `json:"Config"`
	}
	require.NoError(t, json.Unmarshal([]byte(docker(t, "inspect", app)), &in))
	assert.Contains(t, in[0].Config.Env, "SECRET_KEY_FILE=/run/secrets/SECRET_KEY")
	assert.Contains(t, in[0].Config.Env, "SENTRY_DSN_FILE=/run/secrets/SENTRY_DSN")
}

// stackExport is `pulumi stack export` of the run's stack, as an operator
// would back it up: secrets encrypted, never shown.
func (s *stack) stackExport(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(root, ".tools", "pulumi", "bin", "pulumi"), "stack", "export", "--stack", stackName, "--non-interactive")
	c.Dir = root
	c.Env = append(os.Environ(), "PULUMI_SKIP_UPDATE_CHECK=true", "PULUMI_HOME="+driver.ProjectPulumiHome(root))
	out, err := c.Output()
	require.NoError(t, err, "pulumi stack export")
	return string(out)
}

// waitHealthy waits until the long-running containers are running and
// healthy and the one-shots exited 0. (The backup scheduler is not waited
// for by the deployment; its first health check comes a little later.)
func (s *stack) waitHealthy(t *testing.T, within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		var pending []string
		for _, role := range stacks.Roles {
			if role == conventions.RoleSecrets || role == conventions.RoleRestore {
				continue // one per tier, checked with the hardening; a recovery's, checked with it
			}
			in := inspect(t, container(role))
			if conventions.OneShot(role) {
				require.Equal(t, "exited", in.State.Status, role)
				require.Equal(t, 0, in.State.ExitCode, role)
				continue
			}
			require.Equal(t, "running", in.State.Status, role)
			require.NotNil(t, in.State.Health, "%s has a health check", role)
			if in.State.Health.Status != "healthy" {
				pending = append(pending, role+"="+in.State.Health.Status)
			}
		}
		if len(pending) == 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "not healthy within %s: %v", within, pending)
		time.Sleep(2 * time.Second)
	}
}

// securityHeaders are the headers every answer of the app carries.
var securityHeaders = []string{"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
	"Content-Security-Policy", "Referrer-Policy", "Cross-Origin-Opener-Policy"}

func (s *stack) checkEdge(t *testing.T) {
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := s.do("GET", path, nil, nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
	resp, body := s.do("GET", "/", nil, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	assert.Contains(t, string(body), "NBMS")

	resp, body = s.do("GET", "/api/public/indicators", nil, http.Header{"Accept": {"application/json"}})
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, resp.Header.Get("Content-Type"), "json")
	for _, h := range securityHeaders {
		assert.NotEmpty(t, resp.Header.Get(h), "%s on the public API through nginx", h)
	}
	assert.Equal(t, "max-age=63072000; includeSubDomains", resp.Header.Get("Strict-Transport-Security"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	assert.NotEmpty(t, resp.Header.Get("X-Request-Id"), "nginx's request ID reaches the client")

	// Plain HTTP redirects to HTTPS on the published port.
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/public/indicators", s.httpPort), nil)
	require.NoError(t, err)
	req.Host = s.domain
	r, err := plain.Do(req)
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, http.StatusMovedPermanently, r.StatusCode)
	assert.Equal(t, s.url("/api/public/indicators"), r.Header.Get("Location"))
}

func (s *stack) checkRefusals(t *testing.T, session *http.Cookie) {
	// A foreign host name: no certificate is offered for it (nginx rejects
	// the handshake), and a foreign Host header over the site's own TLS
	// connection gets nothing from the app.
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpsPort)), &tls.Config{ServerName: "evil.example.org", InsecureSkipVerify: true}) // #nosec G402 -- the refusal under test happens before any certificate
	if err == nil {
		conn.Close()
	}
	assert.Error(t, err, "a handshake for a foreign name is refused")
	req, err := http.NewRequest("GET", s.url("/api/public/indicators"), nil)
	require.NoError(t, err)
	req.Host = "evil.example.org"
	resp, err := s.client.Do(req)
	if err == nil {
		body := new(bytes.Buffer)
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		assert.GreaterOrEqual(t, resp.StatusCode, 400, "a foreign Host header is refused")
		assert.NotContains(t, body.String(), `"items"`, "and gets no content")
	}

	// Oversized, from a logged-in user: a JSON body over the app's limit
	// (413 from the app) and an upload over the edge's limit (413 from
	// nginx, before the app); neither leaves a file behind.
	files := mediaHashes(t)
	cookie := session.Name + "=" + session.Value
	big := `{"code":"X","title":"` + strings.Repeat("a", 70_000) + `"}`
	resp, body := s.do("POST", "/api/indicators", strings.NewReader(big),
		http.Header{"Content-Type": {"application/json"}, "Origin": {s.origin()}, "Cookie": {cookie}})
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(body))
	resp, body = s.do("POST", "/api/uploads/datasets/1/evidence", bytes.NewReader(make([]byte, 3<<20)),
		http.Header{"Content-Type": {"multipart/form-data; boundary=x"}, "Origin": {s.origin()}, "Cookie": {cookie}})
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(body))
	assert.Contains(t, resp.Header.Get("Content-Type"), "problem+json")
	assert.Equal(t, files, mediaHashes(t), "no partial file on the media volume")

	// Origins: the allowed portal may read the public API; any other origin
	// gets no Access-Control-Allow-Origin, never a wildcard, and its
	// preflight is refused.
	resp, _ = s.do("GET", "/api/public/indicators", nil, http.Header{"Origin": {portalOrigin}})
	assert.Equal(t, portalOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
	for _, origin := range []string{"https://evil.example.org", "null", "*"} {
		resp, _ = s.do("GET", "/api/public/indicators", nil, http.Header{"Origin": {origin}})
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), "origin %s", origin)
		resp, _ = s.do("OPTIONS", "/api/public/indicators", nil, http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"GET"}})
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), "preflight from %s", origin)
		assert.GreaterOrEqual(t, resp.StatusCode, 400, "preflight from %s is refused", origin)
	}
}

// checkEdgeLikeTheApp checks, on the deployed stack, what browsers, load
// balancers and API clients expect of the edge.
func (s *stack) checkEdgeLikeTheApp(t *testing.T) {
	// The app's own answer, from the app container itself on its edge
	// address (as the readiness hook reaches it), is the reference.
	addr := strings.TrimSpace(docker(t, "inspect", "--format",
		`{{(index .NetworkSettings.Networks "`+conventions.EdgeNetwork(stackName)+`").IPAddress}}`, container(conventions.RoleApp)))
	req, err := http.NewRequest("GET", "http://"+net.JoinHostPort(addr, "8000")+"/api/public/indicators", nil)
	require.NoError(t, err)
	req.Host = s.domain
	req.Header.Set("X-Forwarded-Proto", "https")
	appResp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	appResp.Body.Close()
	require.Equal(t, http.StatusOK, appResp.StatusCode)

	edge := map[string]*http.Response{}
	edge["405 TRACE"], _ = s.do("TRACE", "/", nil, nil)
	edge["413 upload over the edge's limit"], _ = s.do("POST", "/api/uploads/datasets/1/evidence", bytes.NewReader(make([]byte, 3<<20)),
		http.Header{"Content-Type": {"multipart/form-data; boundary=x"}})
	edge["404 static file"], _ = s.do("GET", "/static/missing.css", nil, nil)
	edge["200 through nginx"], _ = s.do("GET", "/api/public/indicators", nil, nil)
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) *http.Response {
		r, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", s.httpPort, path), nil)
		require.NoError(t, err)
		r.Host = s.domain
		resp, err := plain.Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	edge["301 plain HTTP"] = get("/a/page")
	// The app's security headers as the stack configures them.
	// The stack as the run deploys it: its file and the operator's files.
	raw := maps.Clone(s.settings)
	raw["backup"] = s.offHostSetting(t)
	files := s.configFiles()
	maps.Copy(files, s.secretFiles())
	for key, path := range files {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		raw[key] = strings.TrimSpace(string(data))
	}
	app, err := stacks.Parse(stackName, stacks.Values{Raw: raw, Secret: stacks.IsSecretKey})
	require.NoError(t, err)
	settings, err := app.AppConfig()
	require.NoError(t, err)
	for _, h := range settings.SecurityHeaders() {
		if h.Name == "Cache-Control" {
			continue // each location's own decision
		}
		require.Len(t, appResp.Header.Values(h.Name), 1, "the app sends %s", h.Name)
		for what, resp := range edge {
			assert.Equal(t, appResp.Header.Values(h.Name), resp.Header.Values(h.Name), "%s: %s as the app sends it", what, h.Name)
		}
	}

	// Probes on plain HTTP: the app's answer, no redirect.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp := get(path)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Empty(t, resp.Header.Get("Location"), path)
	}

	// A portal's fetch with JSON headers passes its preflight; a stranger's
	// does not.
	ask := http.Header{"Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"content-type,x-request-id"}, "Origin": {portalOrigin}}
	resp, _ := s.do("OPTIONS", "/api/public/indicators", nil, ask)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Equal(t, portalOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type")
	assert.NotEmpty(t, resp.Header.Get("Access-Control-Max-Age"))
	ask.Set("Origin", "https://evil.example.org")
	resp, _ = s.do("OPTIONS", "/api/public/indicators", nil, ask)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))

	// A client's well-formed request ID traces its request through nginx
	// and the app.
	since := time.Now()
	const id = "e2e-trace.1"
	// A URI of its own: a repeat within the second is the edge cache's.
	resp, _ = s.do("GET", "/api/public/indicators?limit=7", nil, http.Header{"X-Request-ID": {id}})
	assert.Equal(t, id, resp.Header.Get("X-Request-Id"))
	var inApp, inNginx bool
	for range 50 {
		inApp = slices.ContainsFunc(jsonLog(t, conventions.RoleApp, since), func(l map[string]any) bool { return l["request_id"] == id })
		inNginx = slices.ContainsFunc(jsonLog(t, conventions.RoleProxy, since), func(l map[string]any) bool { return l["request_id"] == id })
		if inApp && inNginx {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	assert.True(t, inApp && inNginx, "the client's ID in both logs (app %v, nginx %v)", inApp, inNginx)
}

// workflows creates an account in the app container, logs in through the
// edge and writes an indicator and an evidence file. It returns the
// session cookie and the evidence file's SHA-256.
func (s *stack) workflows(t *testing.T) (*http.Cookie, string) {
	_, err := execIn(t, conventions.RoleApp, "", "/usr/local/bin/nbms", "createorg", "--slug", orgSlug, "--name", "E2E organisation")
	require.NoError(t, err)
	_, err = execIn(t, conventions.RoleApp, password+"\n", "/usr/local/bin/nbms", "createuser", "--org", orgSlug, "--username", username, "--role", "staff")
	require.NoError(t, err)

	session := s.login(t)
	assert.True(t, strings.HasPrefix(session.Name, "__Host-"), "session cookie %q has the __Host- prefix", session.Name)
	auth := s.writeHeader(session)

	resp, body := s.do("POST", "/api/indicators", strings.NewReader(fmt.Sprintf(`{"code":%q,"title":%q,"unit":"%%","published":true}`, indicatorCode, indicatorName)), auth)
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	resp, body = s.do("GET", "/api/public/indicators/"+indicatorCode, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), indicatorName)

	resp, body = s.do("POST", "/api/datasets", strings.NewReader(`{"title":"E2E plots","licence":"CC-BY-4.0","sensitivity":"public"}`), auth)
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	var dataset struct{ ID int64 }
	require.NoError(t, json.Unmarshal(body, &dataset))

	csv := []byte("plot,species,count\n1,Protea cynaroides,12\n2,Erica cerinthoides,7\n")
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	part, err := mw.CreateFormFile("file", "plots.csv")
	require.NoError(t, err)
	_, _ = part.Write(csv)
	require.NoError(t, mw.Close())
	upload := maps.Clone(auth)
	upload.Set("Content-Type", mw.FormDataContentType())
	path := fmt.Sprintf("/api/uploads/datasets/%d/evidence", dataset.ID)
	resp, body = s.do("POST", path, &form, upload)
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	var uploaded struct{ ID int64 }
	require.NoError(t, json.Unmarshal(body, &uploaded))
	sum := sha256.Sum256(csv)
	want := hex.EncodeToString(sum[:])

	resp, body = s.do("GET", fmt.Sprintf("/api/datasets/%d", dataset.ID), nil, auth)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var detail struct {
		Evidence []struct {
			SHA256    string `json:"sha256"`
			SizeBytes int    `json:"size_bytes"`
		} `json:"evidence"`
	}
	require.NoError(t, json.Unmarshal(body, &detail))
	require.Len(t, detail.Evidence, 1)
	assert.Equal(t, want, detail.Evidence[0].SHA256)
	assert.Equal(t, len(csv), detail.Evidence[0].SizeBytes)
	// The file itself is on the media volume. The app authorises its
	// download and nginx (another user, given the app's group) sends it as
	// an attachment; nothing serves the volume to a client that knows the
	// stored name.
	var stored string
	for _, line := range strings.Split(mediaHashes(t), "\n") {
		if sum, path, ok := strings.Cut(line, "  "); ok && sum == want {
			stored = filepath.Base(path)
		}
	}
	require.NotEmpty(t, stored, "a file with the upload's SHA-256 on the media volume")
	download := fmt.Sprintf("/api/evidence/%d/content", uploaded.ID)
	resp, body = s.do("GET", download, nil, auth)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, csv, body)
	assert.Equal(t, `attachment; filename="plots.csv"`, resp.Header.Get("Content-Disposition"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	assert.Empty(t, resp.Header.Get("X-Accel-Redirect"))
	for _, path := range []string{download, "/media/" + stored, "/_protected_media/" + stored} {
		resp, body = s.do("GET", path, nil, nil)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s without a session: %s", path, body)
		assert.NotEqual(t, csv, body, path)
	}
	return session, want
}

// blockedMigration is the migration of checkBlockedMigration's release: it
// needs an ACCESS EXCLUSIVE lock on the table the live release reads and
// writes all the time.
const blockedMigration = `-- +goose Up
ALTER TABLE indicators ADD COLUMN e2e_blocked text;
-- +goose Down
ALTER TABLE indicators DROP COLUMN e2e_blocked;
`

// checkBlockedMigration deploys, under traffic, a release whose migration
// waits on a lock held by a transaction of the live database that does
// not end: a copy of the repository with one more migration (a real
// source change, built like any release). The migration must give up after
// MIGRATE_LOCK_TIMEOUT (5 s by default), the update must fail with exit 4,
// and the live release must carry on untouched, its transaction included.
func (s *stack) checkBlockedMigration(t *testing.T, stackFile string, session *http.Cookie) {
	live := s.liveRelease(t)
	liveID := inspect(t, container(conventions.RoleApp)).ID
	source := copyRepository(t)
	require.NoError(t, os.WriteFile(filepath.Join(source, "app", "migrations", "09999_e2e_blocked.sql"), []byte(blockedMigration), 0o644))

	// The live transaction: it read indicators, so it holds ACCESS SHARE
	// on the table until it ends, as a long report query would.
	tx := exec.Command("docker", "exec", "-i", container(conventions.RoleDB),
		"psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "nbms", "-v", "ON_ERROR_STOP=1", "-q")
	stdin, err := tx.StdinPipe()
	require.NoError(t, err)
	var txOut bytes.Buffer
	tx.Stdout, tx.Stderr = &txOut, &txOut
	require.NoError(t, tx.Start())
	_, err = io.WriteString(stdin, "BEGIN;\nSELECT count(*) FROM indicators;\nSELECT 'live transaction open';\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(txOut.String(), "live transaction open") }, 30*time.Second, 100*time.Millisecond, "psql: %s", txOut.String())
	txEnded := false
	endTx := func() {
		if !txEnded {
			txEnded = true
			_, _ = io.WriteString(stdin, "COMMIT;\n")
			_ = stdin.Close()
			_ = tx.Wait()
		}
	}
	t.Cleanup(endTx)

	stopTraffic := s.startTraffic("blocked-migration", session)
	code, out := s.runBinaryFrom("up.blocked-migration", driver.Up, source, stackFile)
	traffic := stopTraffic()
	assert.Equal(t, driver.ExitProbe, code, tail(out, 40))
	assert.Contains(t, out, "migrate exited with status", tail(out, 40))
	logs, err := exec.Command("docker", "logs", stackName+"-"+deploy.Instance(conventions.RoleMigrate, s.newestRelease(t, conventions.RoleMigrate, live))).CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(logs), "09999_e2e_blocked.sql waited longer than lock_timeout=5s", "the migration says why it gave up")

	// The live transaction outlived the failed migration, and ends as it
	// wanted to: a commit.
	active, err := execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-Atc",
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE 'SELECT %live transaction open%'")
	require.NoError(t, err)
	assert.Equal(t, "1", strings.TrimSpace(active), "the live transaction is still open")
	endTx()
	assert.NotContains(t, txOut.String(), "ERROR", "the live transaction was never cancelled")

	assert.Positive(t, traffic.Sent, "the traffic ran through the failed update")
	assert.Zero(t, traffic.Failed, "the live release kept serving: %v", traffic.Failures)
	assert.Equal(t, live, s.liveRelease(t), "nginx still sends to the live release")
	assert.Equal(t, liveID, inspect(t, container(conventions.RoleApp)).ID, "the live release's container was not touched")
	column, err := execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "nbms", "-Atc",
		"SELECT count(*) FROM information_schema.columns WHERE table_name = 'indicators' AND column_name = 'e2e_blocked'")
	require.NoError(t, err)
	assert.Equal(t, "0", strings.TrimSpace(column), "nothing of the blocked migration was applied")
}

// newestRelease is the release of the newest container of role other than
// live's.
func (s *stack) newestRelease(t *testing.T, role, live string) string {
	out := docker(t, "ps", "-a", "--filter", labelFilter, "--filter", "label="+conventions.LabelRole+"="+role,
		"--format", `{{.Label "`+conventions.LabelRelease+`"}}`)
	for release := range strings.FieldsSeq(out) { // newest first
		if release != live {
			return release
		}
	}
	t.Fatalf("no %s container of a release other than %s", role, live)
	return ""
}

// copyRepository copies the repository's sources to a new directory (the
// driver's --root) that shares the built tools (.tools, a link).
func copyRepository(t *testing.T) string {
	dst := t.TempDir()
	skip := map[string]bool{".git": true, ".tools": true, ".pulumi-state": true, "bin": true}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if skip[strings.Split(rel, string(filepath.Separator))[0]] {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case e.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, os.Symlink(filepath.Join(root, ".tools"), filepath.Join(dst, ".tools")))
	return dst
}

// concurrentUploads is how many maximum-size uploads checkConcurrentUploads
// sends at once: 40 of the e2e stack's 2 MiB are 80 MiB, more than the
// proxy's 64 MiB tmpfs, where buffered bodies would be written.
const concurrentUploads = 40

// checkConcurrentUploads sends concurrentUploads evidence files at once
// through nginx, each request body exactly the stack's MAX_UPLOAD_BYTES,
// and checks that every one is stored whole, that nginx wrote none of them
// to its temp files (it warns when it does), and that the proxy was neither
// restarted nor killed for memory.
func (s *stack) checkConcurrentUploads(t *testing.T, session *http.Cookie) {
	var app struct {
		MaxUploadBytes int `json:"maxUploadBytes"`
	}
	require.NoError(t, json.Unmarshal([]byte(s.settings["app"]), &app))
	require.Positive(t, app.MaxUploadBytes)
	auth := s.writeHeader(session)
	resp, body := s.do("POST", "/api/datasets", strings.NewReader(`{"title":"E2E concurrent uploads","licence":"CC-BY-4.0","sensitivity":"public"}`), auth)
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	var dataset struct{ ID int64 }
	require.NoError(t, json.Unmarshal(body, &dataset))
	proxyBefore := inspect(t, container(conventions.RoleProxy))
	since := time.Now()

	// A multipart body of exactly MaxUploadBytes: the envelope's size
	// first, then a file that fills the rest.
	form := func(i int, content []byte) (*bytes.Buffer, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		require.NoError(t, mw.SetBoundary("nbms-e2e-concurrent-upload-boundary"))
		part, err := mw.CreateFormFile("file", fmt.Sprintf("upload-%02d.bin", i))
		require.NoError(t, err)
		_, _ = part.Write(content)
		require.NoError(t, mw.Close())
		return &b, mw.FormDataContentType()
	}
	envelope, _ := form(0, nil)
	fileSize := app.MaxUploadBytes - envelope.Len()
	path := fmt.Sprintf("/api/uploads/datasets/%d/evidence", dataset.ID)
	var wg sync.WaitGroup
	results := make([]string, concurrentUploads)
	start := time.Now()
	for i := range concurrentUploads {
		content := bytes.Repeat([]byte{byte('a' + i%26)}, fileSize)
		b, contentType := form(i, content)
		require.Equal(t, app.MaxUploadBytes, b.Len(), "the request body is exactly the upload limit")
		header := maps.Clone(auth)
		header.Set("Content-Type", contentType)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			resp, answer, err := s.send(ctx, "POST", path, b, header)
			switch {
			case err != nil:
				results[i] = err.Error()
			case resp.StatusCode != http.StatusCreated:
				results[i] = fmt.Sprintf("%d %s", resp.StatusCode, answer)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i, r := range results {
		assert.Empty(t, r, "upload %d", i)
	}
	resp, body = s.do("GET", fmt.Sprintf("/api/datasets/%d", dataset.ID), nil, auth)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var detail struct {
		Evidence []struct {
			SizeBytes int `json:"size_bytes"`
		} `json:"evidence"`
	}
	require.NoError(t, json.Unmarshal(body, &detail))
	require.Len(t, detail.Evidence, concurrentUploads, "every upload was stored")
	for _, e := range detail.Evidence {
		assert.Equal(t, fileSize, e.SizeBytes)
	}
	logs, err := exec.Command("docker", "logs", "--since", since.Format(time.RFC3339Nano), container(conventions.RoleProxy)).CombinedOutput()
	require.NoError(t, err)
	assert.Zero(t, strings.Count(string(logs), "a client request body is buffered to a temporary file"), "nginx buffered request bodies in its tmpfs")
	proxyAfter := inspect(t, container(conventions.RoleProxy))
	assert.Equal(t, proxyBefore.RestartCount, proxyAfter.RestartCount, "the proxy was not restarted")
	assert.False(t, proxyAfter.State.OOMKilled, "the proxy was not killed for memory")
	assert.Equal(t, proxyBefore.State.StartedAt, proxyAfter.State.StartedAt)
	s.figures.Uploads = fmt.Sprintf("%d concurrent uploads of %d bytes (%d MiB in all) through nginx in %s, all stored",
		concurrentUploads, app.MaxUploadBytes, concurrentUploads*app.MaxUploadBytes>>20, took.Round(time.Millisecond))
	t.Log(s.figures.Uploads)
}

// login logs the e2e user in through nginx and returns the session cookie,
// checking the attributes the browser needs.
func (s *stack) login(t *testing.T) *http.Cookie {
	resp, body := s.do("POST", "/auth/login", strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, username, password)),
		http.Header{"Content-Type": {"application/json"}, "Origin": {s.origin()}})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	cookies := resp.Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.True(t, c.Secure && c.HttpOnly, "Secure and HttpOnly")
	assert.Equal(t, "/", c.Path)
	assert.Empty(t, c.Domain, "__Host- cookies have no Domain")
	assert.NotEqual(t, http.SameSiteNoneMode, c.SameSite)
	return c
}

// mediaHashes returns the SHA-256 of every file on the media volume, read
// through the proxy container (which mounts it read-only).
func mediaHashes(t *testing.T) string {
	out, err := execIn(t, conventions.RoleProxy, "", "sh", "-c", "find /srv/nbms/media -type f -exec sha256sum {} +")
	require.NoError(t, err)
	return out
}

// checkDataKept: the session, the indicator and the evidence file written
// earlier are all still there.
func (s *stack) checkDataKept(t *testing.T, session *http.Cookie, evidenceSHA string) {
	resp, body := s.do("GET", "/auth/me", nil, http.Header{"Cookie": {session.Name + "=" + session.Value}})
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the session lives in PostgreSQL: %s", body)
	resp, body = s.do("GET", "/api/public/indicators/"+indicatorCode, nil, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), indicatorName)
	assert.Contains(t, mediaHashes(t), evidenceSHA)
}

func (s *stack) checkHardening(t *testing.T) {
	internal := conventions.InternalNetwork(stackName)
	edge := conventions.EdgeNetwork(stackName)
	backup, egress := conventions.BackupNetwork(stackName), conventions.EgressNetwork(stackName)
	wantNetworks := map[string][]string{
		conventions.RoleProxy: {edge}, conventions.RoleApp: {edge, internal},
		// The database and the scheduler reach the off-host repository
		// through the relay, the only container with a way out.
		conventions.RoleDB: {internal, backup}, conventions.RoleBackup: {internal, backup},
		conventions.RoleBackupRelay: {backup, egress},
		conventions.RoleCache:       {internal},
		conventions.RoleMigrate:     {internal}, conventions.RoleCollectstatic: {internal}, conventions.RoleSwitch: {edge},
		// psql over the database's socket volume, on no network.
		conventions.RoleDBLogin: {"none"}, conventions.RoleDBRetire: {"none"},
		conventions.RoleCacheLogin: {"none"}, conventions.RoleCacheRetire: {"none"},
	}
	for _, role := range stacks.Roles {
		if role == conventions.RoleSecrets || role == conventions.RoleRestore {
			continue // one per tier, checked below; a recovery's, checked with it
		}
		in := inspect(t, container(role))
		hc := in.HostConfig
		user := in.Config.User
		assert.NotContains(t, []string{"", "0", "root", "0:0", "root:root"}, user, "%s runs as a non-root user", role)
		assert.True(t, hc.ReadonlyRootfs, "%s: read-only root filesystem", role)
		assert.Contains(t, hc.CapDrop, "ALL", "%s drops every capability", role)
		assert.Empty(t, hc.CapAdd, "%s adds no capability", role)
		assert.False(t, hc.Privileged, role)
		assert.Contains(t, hc.SecurityOpt, "no-new-privileges:true", role)
		assert.Positive(t, hc.Memory, "%s has a memory limit", role)
		assert.Equal(t, hc.Memory, hc.MemorySwap, "%s: no swap beyond the limit", role)
		assert.Positive(t, hc.NanoCPUs, "%s has a CPU limit", role)
		// pulumi-docker 4.10 cannot set a pids cgroup limit; RLIMIT_NPROC
		// is the process bound the program sets instead.
		nproc := slices.IndexFunc(hc.Ulimits, func(u struct {
			Name       string
			Soft, Hard int64
		}) bool {
			return u.Name == "nproc"
		})
		if assert.GreaterOrEqual(t, nproc, 0, "%s has an nproc ulimit", role) {
			assert.Positive(t, hc.Ulimits[nproc].Hard, role)
		}
		for path, opts := range hc.Tmpfs {
			assert.Contains(t, opts, "noexec", "%s: tmpfs %s", role, path)
		}
		if role == conventions.RoleProxy {
			assert.Len(t, hc.PortBindings, 2, "nginx publishes HTTP and HTTPS")
			for port, bindings := range hc.PortBindings {
				for _, b := range bindings {
					assert.Equal(t, "127.0.0.1", b.HostIP, "nginx %s is bound to the configured address", port)
				}
			}
		} else {
			assert.Empty(t, hc.PortBindings, "%s publishes no port", role)
		}
		assert.ElementsMatch(t, wantNetworks[role], slices.Collect(maps.Keys(in.NetworkSettings.Networks)), "%s networks", role)
	}
	// The secrets holders: exited once, on no network, hardened but for
	// the root their uploads needed (the policy label says why).
	holders := strings.Fields(docker(t, "ps", "-a", "--filter", "label="+conventions.LabelStack+"="+stackName,
		"--filter", "label="+conventions.LabelRole+"="+conventions.RoleSecrets, "--format", "{{.Names}}"))
	assert.Len(t, holders, 4, "app (the live release's), db, backup, proxy: %v", holders)
	for _, h := range holders {
		in := inspect(t, h)
		assert.Equal(t, "exited", in.State.Status, h)
		assert.Zero(t, in.State.ExitCode, h)
		assert.Equal(t, "none", in.HostConfig.NetworkMode, h)
		assert.Contains(t, in.HostConfig.CapDrop, "ALL", h)
		assert.Contains(t, in.HostConfig.SecurityOpt, "no-new-privileges:true", h)
		assert.NotContains(t, []string{"", "0", "root", "0:0", "root:root"}, in.Config.User, h)
		assert.NotEmpty(t, in.Config.Labels[conventions.LabelReadOnlyExempt], h)
	}
	var nets []struct {
		Internal bool `json:"Internal"`
	}
	for _, name := range []string{internal, backup} {
		require.NoError(t, json.Unmarshal([]byte(docker(t, "network", "inspect", name)), &nets))
		require.Len(t, nets, 1)
		assert.True(t, nets[0].Internal, "%s has no route out", name)
	}
	// The live release and nginx got their addresses from Docker's half of
	// the subnet, and nginx's upstream names the live release's container,
	// which Docker's DNS resolves to that address.
	cfg := &stacks.Config{EdgeSubnet: s.settings["edgeSubnet"]}
	edgeIP := func(role string) string {
		return strings.TrimSpace(docker(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+edge+`").IPAddress}}`, container(role)))
	}
	for _, role := range []string{conventions.RoleApp, conventions.RoleProxy} {
		assert.True(t, netip.MustParsePrefix(cfg.EdgeDynamicRange()).Contains(netip.MustParseAddr(edgeIP(role))), "%s's address is Docker's pick", role)
	}
	upstream, err := execIn(t, conventions.RoleProxy, "", "cat", "/var/lib/nbms-proxy/upstream.conf")
	require.NoError(t, err)
	assert.Contains(t, upstream, "server "+container(conventions.RoleApp)+":8000 max_fails=0;", "nginx sends to the live release, by name")
	resolved, err := execIn(t, conventions.RoleProxy, "", "getent", "hosts", container(conventions.RoleApp))
	require.NoError(t, err)
	require.NotEmpty(t, strings.Fields(resolved))
	assert.Equal(t, edgeIP(conventions.RoleApp), strings.Fields(resolved)[0], "the name is the release's edge address")
	// nginx, on the edge network only, cannot even resolve the database.
	out, err := execIn(t, conventions.RoleProxy, "", "sh", "-c", "getent hosts db cache || echo unresolved")
	require.NoError(t, err)
	assert.Equal(t, "unresolved", strings.TrimSpace(out))
}

// checkBackups waits for the backup container's schedule to leave a full
// backup taken after the rows were written, checks the WAL archive, and
// restores that repository into a scratch instance with the restore drill.
// backupInfo is `pgbackrest --output=json info` of the one stanza.
type backupInfo []struct {
	Archive []struct{ Min, Max string } `json:"archive"`
	Backup  []backupSet                 `json:"backup"`
	Status  struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
}

// backupSet is one backup in backupInfo.
type backupSet struct {
	Label     string `json:"label"`
	Type      string `json:"type"`
	Timestamp struct{ Start, Stop int64 }
	Info      struct {
		// Size is the database's size; Repository.Delta what this backup
		// stored (compressed, and in repo2 encrypted).
		Size       int64 `json:"size"`
		Repository struct {
			Delta int64 `json:"delta"`
		} `json:"repository"`
	} `json:"info"`
}

// awaitFullBackup waits, at most within, for a full backup that started
// after a time in repository repo (1: the local volume, 2: the off-host
// S3 server), and returns the repository's info and that backup.
func awaitFullBackup(t *testing.T, repo string, after time.Time, within time.Duration) (backupInfo, backupSet) {
	t.Helper()
	var info backupInfo
	deadline := time.Now().Add(within)
	for {
		out, err := execIn(t, conventions.RoleBackup, "", "pgbackrest", "--repo="+repo, "--output=json", "info")
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &info), out)
		require.Len(t, info, 1, out)
		if i := slices.IndexFunc(info[0].Backup, func(b backupSet) bool {
			return b.Type == "full" && b.Timestamp.Start >= after.Unix()
		}); i >= 0 {
			return info, info[0].Backup[i]
		}
		require.True(t, time.Now().Before(deadline), "no full backup after %s in repo%s within %s: %s", after.Format(time.TimeOnly), repo, within, out)
		time.Sleep(5 * time.Second)
	}
}

func (s *stack) checkBackups(t *testing.T, written time.Time) {
	awaitFull := func(repo string) backupInfo {
		info, full := awaitFullBackup(t, repo, written, 3*time.Minute)
		// Throughput: the database's size over the backup's wall time;
		// stored: what the repository holds for it (zstd, and in repo2
		// aes-256-cbc).
		seconds := max(full.Timestamp.Stop-full.Timestamp.Start, 1)
		s.figures.BackupInfo["repo"+repo+"Full"] = map[string]any{
			"label": full.Label, "seconds": full.Timestamp.Stop - full.Timestamp.Start, "databaseMB": round1(float64(full.Info.Size) / 1e6),
			"storedMB": round1(float64(full.Info.Repository.Delta) / 1e6), "throughputMBps": round1(float64(full.Info.Size) / 1e6 / float64(seconds)),
		}
		return info
	}
	info := awaitFull("1")
	assert.Equal(t, 0, info[0].Status.Code, info[0].Status.Message)
	require.NotEmpty(t, info[0].Archive)
	assert.NotEmpty(t, info[0].Archive[0].Max, "WAL segments are in the repository")
	last := info[0].Backup[len(info[0].Backup)-1]
	maps.Copy(s.figures.BackupInfo, map[string]any{"backups": len(info[0].Backup), "latest": last.Label,
		"latestSeconds": last.Timestamp.Stop - last.Timestamp.Start, "walMax": info[0].Archive[0].Max})

	out, err := execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-Atc",
		"SELECT archived_count, failed_count FROM pg_stat_archiver")
	require.NoError(t, err)
	counts := strings.Split(strings.TrimSpace(out), "|")
	require.Len(t, counts, 2, out)
	archived, _ := strconv.Atoi(counts[0])
	assert.Positive(t, archived, "PostgreSQL archived WAL")
	assert.Equal(t, "0", counts[1], "no archive_command failed")

	// The off-host repository: the scheduled full backup and the WAL
	// reached the S3 server through the relay, encrypted.
	offHost := awaitFull("2")
	assert.Equal(t, 0, offHost[0].Status.Code, offHost[0].Status.Message)
	require.NotEmpty(t, offHost[0].Archive)
	assert.NotEmpty(t, offHost[0].Archive[0].Max, "WAL segments are in the off-host repository")
	objects := s.s3.Objects(t, s.s3Bucket)
	assert.Greater(t, len(objects), 10, "the backup and the WAL are in the bucket")
	var stored int64
	for _, object := range objects {
		content, err := os.ReadFile(filepath.Join(s.s3.Root, s.s3Bucket, object))
		require.NoError(t, err)
		stored += int64(len(content))
		assert.True(t, bytes.HasPrefix(content, []byte("Salted__")), "%s is ciphertext (aes-256-cbc)", object)
		assert.False(t, bytes.Contains(content, []byte(indicatorName)), "%s holds none of the rows in the clear", object)
	}
	s.figures.BackupInfo["offHostObjects"], s.figures.BackupInfo["offHostMB"] = len(objects), round1(float64(stored)/1e6)
	// The relay is the only way there: the database container itself
	// cannot open a connection to the S3 server's host (Docker drops what
	// would leave its internal networks: the attempt times out).
	_, port, err := net.SplitHostPort(s.s3.Addr)
	require.NoError(t, err)
	out, err = execIn(t, conventions.RoleDB, "", "timeout", "10", "bash", "-c", "exec 3<>/dev/tcp/"+s.s3Address+"/"+port)
	require.Error(t, err, "the database reached the S3 server without the relay: %s", out)
	relayLog := docker(t, "logs", container(conventions.RoleBackupRelay))
	assert.Contains(t, relayLog, "upstream="+s.s3.Addr+" status=200", "the relay logs each connection it passed on")

	// The drill runs in a throwaway container of the database image, with
	// the repository volume read-only and no network: it restores the
	// latest backup into a scratch directory, starts it, and verifies it.
	drill := filepath.Join(s.dir, "drill")
	require.NoError(t, os.MkdirAll(drill, 0o755))
	conf, err := execIn(t, conventions.RoleDB, "", "cat", "/tmp/nbms/pgbackrest.conf")
	require.NoError(t, err)
	// The drill restores from the local repository alone: the off-host
	// one's settings go (its keys are not in the drill's container).
	var local []string
	for _, line := range strings.Split(conf, "\n") {
		if !strings.HasPrefix(line, "repo2-") && !strings.HasPrefix(line, "archive-async=") && !strings.HasPrefix(line, "spool-path=") {
			local = append(local, line)
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(drill, "pgbackrest.conf"), []byte(strings.Join(local, "\n")), 0o644))
	script, err := os.ReadFile(filepath.Join(root, "scripts", "ops", "pgbackrest_restore_drill.sh"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(drill, "restore_drill.sh"), script, 0o755))
	start := time.Now()
	summaryJSON, err := dockerErr("run", "--rm", "--network", "none", "--user", "999:999",
		"--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=1g", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
		"-v", stackName+"-pgbackrest-repo:/var/lib/pgbackrest:ro", "-v", drill+":/drill:ro",
		"--entrypoint", "bash", "nbms-db:"+stackName, "/drill/restore_drill.sh",
		"--config", "/drill/pgbackrest.conf", "--stanza", "nbms", "--database", "nbms", "--tables", "indicators,evidence_files,audit_events",
		"--query", "indicator=SELECT title FROM indicators WHERE code = '"+indicatorCode+"'")
	require.NoError(t, err, summaryJSON)
	s.figures.Durations["restore.drill"] = time.Since(start).Round(100 * time.Millisecond).String()
	var summary struct {
		Result         string            `json:"result"`
		BackupSet      string            `json:"backup_set"`
		RowCounts      map[string]int    `json:"row_counts"`
		Queries        map[string]string `json:"queries"`
		RestoreSeconds float64           `json:"restore_seconds"`
	}
	require.NoError(t, json.Unmarshal([]byte(summaryJSON), &summary), summaryJSON)
	t.Logf("restore drill: %s", strings.TrimSpace(summaryJSON))
	assert.Equal(t, "ok", summary.Result)
	// The schedule runs every minute: a newer full backup may have landed
	// since; labels sort by time.
	assert.GreaterOrEqual(t, summary.BackupSet, last.Label, "restored from the latest scheduled backup")
	assert.Equal(t, indicatorName, summary.Queries["indicator"], "the restored copy holds the indicator written through the edge")
	assert.Equal(t, 1, summary.RowCounts["evidence_files"], "and the evidence row")
	s.figures.BackupInfo["drillRestoreSeconds"] = summary.RestoreSeconds
}

// measureAtRest records image sizes and each running container's memory
// once the stack has settled.
func (s *stack) measureAtRest(t *testing.T) {
	for _, img := range []string{"nbms-app", "nbms-db", "nbms-backup", "nbms-nginx", "nbms-redis"} {
		size, err := strconv.ParseFloat(strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Size}}", img+":"+stackName)), 64)
		require.NoError(t, err)
		s.figures.ImageMB[img] = round1(size / 1e6)
	}
	size, err := strconv.ParseFloat(strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Size}}", baseImage)), 64)
	require.NoError(t, err)
	s.figures.ImageMB["base"] = round1(size / 1e6)
	time.Sleep(10 * time.Second)
	for _, role := range stacks.Roles {
		if conventions.OneShot(role) {
			continue
		}
		id := strings.TrimSpace(docker(t, "inspect", "--format", "{{.Id}}", container(role)))
		// cgroup v1 (this engine's cgroupfs driver): the container's own
		// memory accounting; rss is anonymous memory, what the processes
		// really hold.
		stat, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/docker", id, "memory.stat"))
		if err == nil {
			for _, line := range strings.Split(string(stat), "\n") {
				if v, ok := strings.CutPrefix(line, "total_rss "); ok {
					n, _ := strconv.ParseFloat(v, 64)
					s.figures.RestRSSMB[role] = round1(n / (1 << 20))
				}
			}
		}
		usage := strings.TrimSpace(docker(t, "stats", "--no-stream", "--format", "{{.MemUsage}}", container(role)))
		if v, _, ok := strings.Cut(usage, " / "); ok {
			s.figures.RestUseMB[role] = round1(parseMiB(v))
		}
	}
	t.Logf("image sizes (MB): %v; RSS at rest (MiB): %v; memory usage at rest (MiB): %v", s.figures.ImageMB, s.figures.RestRSSMB, s.figures.RestUseMB)
}

// parseMiB reads docker stats' "12.3MiB" / "1.2GiB" / "900KiB" / "0B".
func parseMiB(v string) float64 {
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"GiB", 1024}, {"MiB", 1}, {"KiB", 1.0 / 1024}, {"B", 1.0 / (1 << 20)}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return -1
			}
			return f * u.scale
		}
	}
	return -1
}

func round1(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

// appSettings is the committed nbms:app object with changes, as JSON.
func (s *stack) appSettings(t *testing.T, changes map[string]any) string {
	var app map[string]any
	require.NoError(t, json.Unmarshal([]byte(s.settings["app"]), &app))
	maps.Copy(app, changes)
	out, err := json.Marshal(app)
	require.NoError(t, err)
	return string(out)
}

// changedResources names the resources an update touched (any operation
// but "same"), leaving out the stack itself.
func changedResources(res *driver.Result) []string {
	return slices.Sorted(maps.Keys(changes(res)))
}

// describeChanges says which resources an update touched and why.
func describeChanges(res *driver.Result) string {
	var b strings.Builder
	for name, step := range changes(res) {
		fmt.Fprintf(&b, "\n  %s %s: changed %v, replaced because of %v", step.Op, name, step.Diffs, step.Replaces)
	}
	return b.String()
}

func changes(res *driver.Result) map[string]driver.Step {
	out := map[string]driver.Step{}
	for _, step := range res.Steps {
		if step.Op == "same" || step.Type == "pulumi:pulumi:Stack" {
			continue
		}
		out[step.URN[strings.LastIndex(step.URN, "::")+2:]] = step
	}
	return out
}

// writeFigures leaves the run's measurements in bin/reports/e2e for the
// closing note of a deploy change, and in the test log.
// checkDatabaseRestart stops and starts the database container under
// traffic and watches the app from the outside: not ready while the
// database is away, alive all along, ready again without being touched.
func (s *stack) checkDatabaseRestart(t *testing.T, session *http.Cookie) {
	appBefore := inspect(t, container(conventions.RoleApp))
	stopTraffic := s.startTraffic("db-restart", session)
	start := time.Now()
	docker(t, "stop", container(conventions.RoleDB))
	stopped := time.Since(start)
	ctx := t.Context()
	require.Eventually(t, func() bool {
		return s.expect(ctx, "GET", "/readyz", "", nil, http.StatusServiceUnavailable) == nil
	}, 30*time.Second, 100*time.Millisecond, "/readyz turns 503 while the database is stopped")
	assert.NoError(t, s.expect(ctx, "GET", "/healthz", "", nil, http.StatusOK), "/healthz stays 200: the app is alive")

	docker(t, "start", container(conventions.RoleDB))
	started := time.Now()
	require.Eventually(t, func() bool {
		return s.expect(ctx, "GET", "/readyz", "", nil, http.StatusOK) == nil
	}, 90*time.Second, 100*time.Millisecond, "/readyz is 200 again, without touching the app")
	recovered := time.Since(started)
	// A second of traffic on the recovered stack, then the tally.
	time.Sleep(time.Second)
	traffic := stopTraffic()
	s.figures.Durations["db-restart.stop"] = stopped.Round(100 * time.Millisecond).String()
	s.figures.Durations["db-restart.ready-after-start"] = recovered.Round(100 * time.Millisecond).String()
	t.Logf("database stopped in %s; the app was ready %s after the database started", stopped.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond))

	assert.Positive(t, traffic.Sent)
	appAfter := inspect(t, container(conventions.RoleApp))
	assert.Equal(t, appBefore.ID, appAfter.ID, "the same app container")
	assert.Equal(t, appBefore.State.StartedAt, appAfter.State.StartedAt, "the app was not restarted: it reconnected by itself")
	assert.NoError(t, s.expect(ctx, "POST", "/api/indicators", `{"code":"AFTER-DB-RESTART","title":"Written after the restart","unit":"%","published":false}`,
		s.writeHeader(session), http.StatusCreated),
		"the old session still writes")
	s.waitHealthy(t, 3*time.Minute) // the backup scheduler too, before the next step
}

// checkAppRestarts restarts the live release's server two ways under
// traffic and measures how long the edge took to serve again and how many
// requests failed meanwhile (one server: a restart is a gap, which the
// figures state): `docker restart` (SIGTERM, drain, start), and a SIGKILL of
// the container's main process from the host, as the kernel's OOM killer
// would, which Docker's restart policy (unless-stopped) answers. Nothing
// but Docker brings it back: no up runs.
func (s *stack) checkAppRestarts(t *testing.T, session *http.Cookie) {
	ctx := t.Context()
	app := container(conventions.RoleApp)
	for _, kind := range []string{"restart", "kill"} {
		before := inspect(t, app)
		stopTraffic := s.startTraffic("app-"+kind, session)
		time.Sleep(time.Second)
		start := time.Now()
		switch kind {
		case "restart":
			docker(t, "restart", app)
		case "kill":
			pid := strings.TrimSpace(docker(t, "inspect", "--format", "{{.State.Pid}}", app))
			out, err := exec.Command("kill", "-KILL", pid).CombinedOutput()
			require.NoError(t, err, "kill -KILL %s: %s", pid, out)
		}
		require.Eventually(t, func() bool {
			in := inspect(t, app)
			return in.State.StartedAt != before.State.StartedAt && in.State.Status == "running"
		}, 2*time.Minute, 100*time.Millisecond, "%s: Docker started the app again", kind)
		require.Eventually(t, func() bool {
			return s.expect(ctx, "GET", "/readyz", "", nil, http.StatusOK) == nil
		}, 2*time.Minute, 100*time.Millisecond, "%s: the edge serves again", kind)
		recovered := time.Since(start)
		time.Sleep(time.Second)
		traffic := stopTraffic()
		s.figures.Durations["app-"+kind+".serving-again"] = recovered.Round(100 * time.Millisecond).String()
		t.Logf("app %s: the edge served again %s later; %d of %d requests failed", kind, recovered.Round(100*time.Millisecond), traffic.Failed, traffic.Sent)
		assert.Positive(t, traffic.Sent)
		after := inspect(t, app)
		assert.Equal(t, before.ID, after.ID, "%s: the same container, brought back by Docker", kind)
		assert.NoError(t, s.expect(ctx, "POST", "/api/indicators", `{"code":"AFTER-APP-`+strings.ToUpper(kind)+`","title":"Written after the app's `+kind+`","unit":"%","published":false}`,
			s.writeHeader(session), http.StatusCreated), "%s: the session survives (it is in PostgreSQL)", kind)
	}
	s.waitHealthy(t, 3*time.Minute)
}

// longRunning are the roles whose containers run for good (the others are
// one-shots), in the order of checkHostRestarts' start: the reverse of the
// deployment order (conventions.Roles), so each starts before what it
// needs (proxy, app, backup, cache, db).
var longRunning = func() []string {
	var roles []string
	for _, role := range slices.Backward(conventions.Roles) {
		if !conventions.OneShot(role) {
			roles = append(roles, role)
		}
	}
	return roles
}()

// checkHostRestarts takes the whole stack down twice under traffic, as a
// host's restarts do, and measures how long the edge took to serve again;
// nothing but Docker brings it back (no up runs), and every request in
// between is counted (the service is down: they fail, and the figures say
// how many):
//   - dockerd stops (every container stopped with it, as on a reboot or a
//     daemon upgrade) and starts again, and its restart policies start the
//     long-running containers in whatever order it likes;
//   - every long-running container is stopped at once and started again
//     in the worst order: nginx first, then the app, the database last.
//
// Afterwards the same containers run (none recreated), all healthy, the
// data and the old session are there, and the one-shots did not run again.
func (s *stack) checkHostRestarts(t *testing.T, session *http.Cookie, evidenceSHA string) {
	ctx := t.Context()
	pidFile := filepath.Join(cmp.Or(os.Getenv("NBMS_DOCKER_EXEC_ROOT"), "/run/nbms-docker"), "dockerd.pid")
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err, "the daemon restart needs the engine that scripts/docker-daemon.sh starts (make setup), whose pid file this is")
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err, "%s", pidFile)
	// The containers' IDs, and for the one-shots when they last started.
	ids := func() map[string]string {
		out := map[string]string{}
		for _, role := range longRunning {
			out[role] = inspect(t, container(role)).ID
		}
		for _, role := range conventions.ReleaseRoles {
			if !conventions.OneShot(role) {
				continue
			}
			in := inspect(t, container(role))
			out[role] = in.ID + " started " + in.State.StartedAt
		}
		return out
	}
	before := ids()
	serving := func(kind string, start time.Time, stopTraffic func() trafficFigure) {
		require.Eventually(t, func() bool {
			return s.expect(ctx, "GET", "/readyz", "", nil, http.StatusOK) == nil
		}, 3*time.Minute, 100*time.Millisecond, "%s: the edge serves again", kind)
		recovered := time.Since(start)
		time.Sleep(time.Second)
		traffic := stopTraffic()
		s.figures.Durations[kind+".serving-again"] = recovered.Round(100 * time.Millisecond).String()
		t.Logf("%s: the edge served again %s after it began; %d of %d requests failed meanwhile", kind, recovered.Round(100*time.Millisecond), traffic.Failed, traffic.Sent)
		s.waitHealthy(t, 3*time.Minute)
		assert.Equal(t, before, ids(), "%s: the same containers, none recreated, no one-shot run again", kind)
		s.checkDataKept(t, session, evidenceSHA)
	}

	stopTraffic := s.startTraffic("daemon-restart", session)
	time.Sleep(time.Second)
	start := time.Now()
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM), "stopping dockerd (pid %d)", pid)
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 2*time.Minute, 100*time.Millisecond, "dockerd stopped")
	t.Logf("dockerd stopped its containers and exited in %s", time.Since(start).Round(100*time.Millisecond))
	out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "docker-daemon.sh")).CombinedOutput()
	require.NoError(t, err, "starting dockerd again: %s", out)
	serving("daemon-restart", start, stopTraffic)

	names := make([]string, len(longRunning))
	for i, role := range longRunning {
		names[i] = container(role)
	}
	stopTraffic = s.startTraffic("stop-start-all", session)
	time.Sleep(time.Second)
	start = time.Now()
	docker(t, append([]string{"stop"}, names...)...)
	for _, name := range names { // nginx first, the database last
		docker(t, "start", name)
	}
	serving("stop-start-all", start, stopTraffic)
}

// checkLoadBenchmark runs nbms-loadtest, as an operator would, against the
// deployed edge: wrk over TLS to the public indicator list, and the bare
// net/http baseline serving the same bytes in the same run. The URL's host
// is localhost, an allowed host of the e2e stack: wrk resolves the URL's
// host itself and sends it as SNI, and no other name of the stack
// resolves on this machine.
func (s *stack) checkLoadBenchmark(t *testing.T) {
	caFile := filepath.Join(s.dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(s.ca.PEM), 0o600))
	edge := "https://localhost:" + strconv.Itoa(s.httpsPort)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, loadBin, "--edge", edge, "--ca", caFile,
		"--connections", "16", "--duration", "5s", "--warmup", "2s", "--runs", "1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("nbms-loadtest --edge %s:\n%s", edge, out)
	s.figures.LoadBenchmark = string(out)
	rows := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			rows[f[0]] = f
		}
	}
	require.Contains(t, rows, "edge", "a row for the edge:\n%s", out)
	require.Contains(t, rows, "bare", "a row for the baseline:\n%s", out)
	edgeRate, err := strconv.ParseFloat(rows["edge"][1], 64)
	require.NoError(t, err)
	assert.Positive(t, edgeRate)
	assert.Equal(t, []string{"0", "0"}, rows["edge"][4:6], "no non-2xx answer and no socket error through the edge: the public list is the edge cache's, inside the per-address limit")
}

func (s *stack) writeFigures() {
	data, err := json.MarshalIndent(s.figures, "", "  ")
	if err != nil {
		return
	}
	s.t.Logf("figures:\n%s", data)
	dir := filepath.Join(root, "bin", "reports", stackName)
	if os.MkdirAll(dir, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(dir, "figures.json"), data, 0o644)
	}
}

// dbLogin logs in to the app's database as user with password over TCP
// and SCRAM, as the app does, from inside the database container (the
// password on psql's standard input, on no command line), and says who it
// is: "<session user> <current user>".
func dbLogin(t *testing.T, user, password string) (string, error) {
	t.Helper()
	out, err := execIn(t, conventions.RoleDB, password+"\n", "sh", "-c",
		`read -r PGPASSWORD && export PGPASSWORD && exec psql -h 127.0.0.1 -U "$1" -d nbms -Atc "SELECT session_user || ' ' || current_user"`, "sh", user)
	return strings.TrimSpace(out), err
}

// cacheLogin pings Redis as user with password over TCP, as the app
// connects, from inside the cache container (the password on standard
// input, on no command line), and returns the answer: PONG, or the
// refusals (redis-cli reports a failed AUTH on its standard error).
func cacheLogin(t *testing.T, user, password string) string {
	t.Helper()
	out, err := execIn(t, conventions.RoleCache, password+"\n", "sh", "-c",
		`read -r REDISCLI_AUTH && export REDISCLI_AUTH && exec redis-cli --no-auth-warning -h 127.0.0.1 --user "$1" ping 2>&1`, "sh", user)
	require.NoError(t, err)
	return strings.TrimSpace(out)
}
