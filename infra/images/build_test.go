package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

// This file builds every image with the local Docker engine, from the local
// base image (NBMS_BASE_IMAGE, default nbms-base:bookworm, which
// `make setup` makes with scripts/base-image.sh), and runs them the way the
// infra program does: its users, read-only root filesystems, tmpfs mounts,
// no capabilities, no-new-privileges, its command lines, its rendered
// config files and its app environment, on an internal and an edge
// network. Then it checks that each does its job, together: the app
// migrates the database and serves through nginx, pgBackRest archives WAL
// and takes a backup over the shared socket, the backup scheduler starts,
// and PostgreSQL stops fast and restarts on its initialised volume.
//
// Everything it creates is named nbms-imgtest-<random>-... and removed at
// the end; the BuildKit cache is kept, so a second run builds in seconds.

const (
	defaultBaseImage = "nbms-base:bookworm"
	namePrefix       = "nbms-imgtest-"
	// The health checks' interval in this test: the images' own commands,
	// probed every second instead of every 10 s.
	healthInterval = "1s"
)

// Paths and names inside the images, as infra/deploy uses them.
const (
	pgDataPath   = "/var/lib/postgresql/data"
	pgSocketPath = "/var/run/postgresql"
	pgRepoPath   = "/var/lib/pgbackrest"
	pgConfigPath = "/tmp/nbms/pgbackrest.conf"
	pgStanza     = "nbms"
	proxyConf    = "/tmp/nbms/nginx.conf"
	proxyCert    = "/tmp/nbms/tls/cert.pem"
)

// engine runs the docker CLI.
type engine struct {
	cli string
}

// newEngine finds the docker CLI, the engine and the base image, or fails
// the test with what to do.
func newEngine(t *testing.T) (e *engine, base, baseID string) {
	t.Helper()
	cli := "/usr/bin/docker" // Debian's docker.io CLI: BuildKit built in
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			t.Fatal("no docker CLI: run `make setup` (it installs Docker and starts its engine)")
		}
	}
	e = &engine{cli: cli}
	testsupport.LockDockerEngine(t)
	if _, stderr, err := e.try(nil, "version", "--format", "{{.Server.Version}}"); err != nil {
		t.Fatalf("the Docker engine does not answer (%v): run `make setup` (it starts one)\n%s", err, stderr)
	}
	base = os.Getenv("NBMS_BASE_IMAGE")
	if base == "" {
		base = defaultBaseImage
	}
	baseID, _, err := e.try(nil, "image", "inspect", "--format", "{{.Id}}", base)
	if err != nil {
		t.Fatalf("the base image %s is missing: run `make setup` (scripts/base-image.sh makes it), or set NBMS_BASE_IMAGE to a local Debian bookworm image", base)
	}
	return e, base, baseID
}

// Bounds on one docker command: a cold build of the app or database image
// takes a few minutes here, anything else seconds. A command past its
// bound is stuck; failing it names it instead of eating the test timeout.
const (
	buildTimeout   = 20 * time.Minute
	commandTimeout = 5 * time.Minute
)

// try runs docker with args and the extra environment env (values that
// must not appear on a command line travel this way: `-e NAME` takes the
// value from the CLI's environment). It returns stdout and stderr.
func (e *engine) try(env map[string]string, args ...string) (string, string, error) {
	timeout := commandTimeout
	if len(args) > 0 && args[0] == "build" {
		timeout = buildTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.cli, args...)
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=1")
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("docker %s: stuck, stopped after %s: %w", strings.Join(redact(args), " "), timeout, err)
	}
	return strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()), err
}

// run is try that fails the test on an error.
func (e *engine) run(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, stderr, err := e.try(env, args...)
	require.NoError(t, err, "docker %s\n%s\n%s", strings.Join(redact(args), " "), out, stderr)
	return out
}

// redact shortens long arguments (rendered files) in failure messages.
func redact(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 120 {
			a = a[:60] + "…"
		}
		out[i] = a
	}
	return out
}

// cleanup removes what a test made, whatever happened (errors are logged:
// they must not hide the test's own failure).
func (e *engine) cleanup(t *testing.T, args ...string) {
	t.Cleanup(func() {
		if out, stderr, err := e.try(nil, args...); err != nil {
			t.Logf("cleanup: docker %s: %v %s %s", strings.Join(args, " "), err, out, stderr)
		}
	})
}

func (e *engine) logs(name string) string {
	out, stderr, _ := e.try(nil, "logs", name)
	return out + "\n" + stderr
}

// build builds one image (the Dockerfile's target stage, or its last if
// target is "") and returns its ID; the caller removes the tag.
func (e *engine) build(tag, contextDir, dockerfile, target string, args []string, env map[string]string) (string, time.Duration, error) {
	start := time.Now()
	cmdArgs := []string{"build", "--progress=plain", "-f", dockerfile, "-t", tag}
	if target != "" {
		cmdArgs = append(cmdArgs, "--target", target)
	}
	for _, a := range args {
		cmdArgs = append(cmdArgs, "--build-arg", a)
	}
	out, stderr, err := e.try(env, append(cmdArgs, contextDir)...)
	took := time.Since(start)
	if err != nil {
		lines := strings.Split(out+"\n"+stderr, "\n")
		return "", took, fmt.Errorf("docker build %s: %w\n%s", tag, err, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
	id, stderr, err := e.try(nil, "image", "inspect", "--format", "{{.Id}}", tag)
	if err != nil {
		return "", took, fmt.Errorf("inspect %s: %w: %s", tag, err, stderr)
	}
	return id, took, nil
}

// waitHealthy waits until the container's health check passes; it fails
// at once when the container exits or turns unhealthy.
func (e *engine) waitHealthy(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		state := e.run(t, nil, "inspect", "--format", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", name)
		switch state {
		case "running healthy":
			return
		case "running unhealthy":
			probe, _, _ := e.try(nil, "inspect", "--format", "{{json .State.Health.Log}}", name)
			t.Fatalf("%s is unhealthy: %s\n%s", name, probe, e.logs(name))
		}
		if !strings.HasPrefix(state, "running") && !strings.HasPrefix(state, "created") {
			t.Fatalf("%s is %s:\n%s", name, state, e.logs(name))
		}
		if time.Now().After(deadline) {
			probe, _, _ := e.try(nil, "inspect", "--format", "{{json .State.Health.Log}}", name)
			t.Fatalf("%s not healthy after %s (%s): %s\n%s", name, timeout, state, probe, e.logs(name))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitLog waits until the container's log holds want.
func (e *engine) waitLog(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(e.logs(name), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %s:\n%s", name, want, timeout, e.logs(name))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hardened are the flags the program gives every container.
func hardened(user string) []string {
	return []string{"--user", user, "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"}
}

func tmpfs(path string, sizeMB int) []string {
	return []string{"--tmpfs", path + ":rw,noexec,nosuid,nodev,size=" + strconv.Itoa(sizeMB) + "m"}
}

// envFlags passes each variable by name: the values stay off the command line.
func envFlags(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, "-e", k)
	}
	return out
}

// secretsVolume makes a tier's secrets volume the way the program's holder
// does (secretfiles.go): a container with a writable root, never started,
// receives each file with `docker cp` onto the volume mounted at
// /run/secrets, and is removed. It returns the -v flag that mounts the
// volume read-only, and the NAME_FILE variables.
func secretsVolume(t *testing.T, e *engine, image, vol string, files map[string]string) ([]string, map[string]string) {
	t.Helper()
	e.run(t, nil, "volume", "create", vol)
	e.cleanup(t, "volume", "rm", "-f", vol)
	holder := vol + "-holder"
	e.run(t, nil, "create", "--name", holder, "--network", "none", "-v", vol+":"+conventions.SecretsDir, "--entrypoint", "/bin/true", image)
	defer e.run(t, nil, "rm", holder)
	dir := t.TempDir()
	env := map[string]string{}
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content+"\n"), 0o444))
		e.run(t, nil, "cp", path, holder+":"+conventions.SecretsDir+"/"+name)
		env[name+"_FILE"] = conventions.SecretsDir + "/" + name
	}
	return []string{"-v", vol + ":" + conventions.SecretsDir + ":ro"}, env
}

// prologue returns the entrypoint flag, the image and the arguments that
// write files into /tmp and exec cmd (infra/deploy's withFiles).
func prologue(image string, files [][2]string, cmd ...string) []string {
	args := []string{"--entrypoint", "/bin/sh", image, "-c", deploy.FilesPrologue, "nbms-files"}
	for _, f := range files {
		args = append(args, f[0], f[1])
	}
	args = append(args, "--")
	return append(args, cmd...)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// hostCAs are the certificate authorities this machine added to its trust
// store (Debian's /usr/local/share/ca-certificates), passed to the app
// build as BUILD_CA_CERTS: where egress goes through a TLS-inspecting
// proxy, the builder's downloads from the Go module proxy need them.
func hostCAs(t *testing.T) string {
	t.Helper()
	paths, err := filepath.Glob("/usr/local/share/ca-certificates/*.crt")
	require.NoError(t, err)
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		b.Write(bytes.TrimSpace(data))
		b.WriteString("\n")
	}
	return b.String()
}

type images struct {
	app, db, backup, nginx, redis string // tags
	ids                           map[string]string
}

// buildImages builds the five images: app, nginx, Redis and the database
// (the db target, which needs nothing of the app) at once, then the
// backup image (the backup target), which copies the app's binary.
func buildImages(t *testing.T, e *engine, base, baseID, suffix string) images {
	t.Helper()
	im := images{
		app: namePrefix + "app:" + suffix, db: namePrefix + "db:" + suffix, backup: namePrefix + "backup:" + suffix,
		nginx: namePrefix + "nginx:" + suffix, redis: namePrefix + "redis:" + suffix,
		ids: map[string]string{},
	}
	baseArgs := []string{"BASE_IMAGE=" + base, "BASE_IMAGE_ID=" + baseID}
	type job struct {
		tag, context, dockerfile string
		args                     []string
		env                      map[string]string
		target                   string // the Dockerfile's last stage if ""
	}
	var mu sync.Mutex
	var errs []error
	buildAll := func(jobs ...job) {
		var wg sync.WaitGroup
		for _, j := range jobs {
			e.cleanup(t, "image", "rm", j.tag)
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, took, err := e.build(j.tag, j.context, j.dockerfile, j.target, j.args, j.env)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				im.ids[j.tag] = id
				t.Logf("built %s in %s", j.tag, took.Round(100*time.Millisecond))
			}()
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
	}
	buildAll(
		// BUILD_CA_CERTS without a value: the CLI takes it from its
		// environment.
		job{im.app, "../..", appDockerfile, append(slices.Clone(baseArgs), "BUILD_CA_CERTS"), map[string]string{"BUILD_CA_CERTS": hostCAs(t)}, ""},
		job{im.nginx, "nginx", nginxDockerfile, baseArgs, nil, ""},
		job{im.redis, "redis", redisDockerfile, baseArgs, nil, ""},
		// As the program builds it: the base args only.
		job{im.db, "db", dbDockerfile, baseArgs, nil, "db"},
	)
	buildAll(job{im.backup, "db", dbDockerfile, append(slices.Clone(baseArgs), "APP_IMAGE="+im.app, "APP_IMAGE_ID="+im.ids[im.app]), nil, "backup"})
	return im
}

func TestImagesBuildAndRun(t *testing.T) {
	e, base, baseID := newEngine(t)
	suffix := randomHex(t, 4)
	name := func(role string) string { return namePrefix + suffix + "-" + role }

	t.Run("a build without its image args fails", func(t *testing.T) {
		_, stderr, err := e.try(nil, "build", "-f", nginxDockerfile, "nginx")
		require.Error(t, err, "a build without BASE_IMAGE must fail")
		assert.Contains(t, stderr, "${BASE_IMAGE}")
		_, stderr, err = e.try(nil, "build", "--target", "backup", "--build-arg", "BASE_IMAGE="+base, "-f", dbDockerfile, "db")
		require.Error(t, err, "a backup image build without APP_IMAGE must fail")
		assert.Contains(t, stderr, "APP_IMAGE is not set")
	})

	im := buildImages(t, e, base, baseID, suffix)

	t.Run("image metadata", func(t *testing.T) {
		for _, c := range []struct{ tag, dockerfile string }{
			{im.app, appDockerfile}, {im.db, dbDockerfile}, {im.backup, dbDockerfile}, {im.nginx, nginxDockerfile}, {im.redis, redisDockerfile},
		} {
			var cfg struct {
				User        string
				Labels      map[string]string
				Healthcheck *struct{ Test []string }
			}
			require.NoError(t, json.Unmarshal([]byte(e.run(t, nil, "image", "inspect", "--format", "{{json .Config}}", c.tag)), &cfg))
			assert.Equal(t, imageUsers[c.dockerfile], cfg.User, c.tag)
			assert.Equal(t, baseID, cfg.Labels["org.nbms.base-image-id"], "%s: the base it was built from", c.tag)
			assert.NotNil(t, cfg.Healthcheck, c.tag)
		}
		labels := e.run(t, nil, "image", "inspect", "--format", `{{index .Config.Labels "org.nbms.app-image-id"}}`, im.backup)
		assert.Equal(t, im.ids[im.app], labels, "the backup image names the app image its binary came from")
		labels = e.run(t, nil, "image", "inspect", "--format", `{{json .Config.Labels}}`, im.db)
		assert.NotContains(t, labels, "org.nbms.app-image-id", "the database image has nothing of the app image")
	})

	t.Run("the app image has its files and no shell", func(t *testing.T) {
		_, stderr, err := e.try(nil, "run", "--rm", "--entrypoint", "/bin/sh", im.app, "-c", "true")
		require.Error(t, err)
		assert.Contains(t, stderr, "no such file or directory")
		c := name("app-files")
		e.run(t, nil, "create", "--name", c, im.app)
		e.cleanup(t, "rm", "-f", c)
		cmd := exec.Command(e.cli, "export", c)
		tarball, err := cmd.Output()
		require.NoError(t, err)
		files, dirs := map[string]string{}, map[string]string{}
		tr := tar.NewReader(bytes.NewReader(tarball))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			owner := fmt.Sprintf("%d:%d %o", h.Uid, h.Gid, h.Mode&0o7777)
			switch h.Typeflag {
			case tar.TypeReg:
				files[strings.TrimSuffix(h.Name, "/")] = owner
			case tar.TypeDir:
				dirs[strings.TrimSuffix(h.Name, "/")] = owner
			}
		}
		// What Docker itself adds to every container's file system.
		for _, f := range []string{".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "dev/console"} {
			delete(files, f)
		}
		assert.Equal(t, map[string]string{
			"usr/local/bin/nbms":                "0:0 755",
			"etc/ssl/certs/ca-certificates.crt": "0:0 644",
			"etc/passwd":                        "0:0 644",
			"etc/group":                         "0:0 644",
		}, files, "the binary, the CA bundle, passwd and group: nothing else")
		assert.Equal(t, "65532:65532 755", dirs["srv/nbms/static"], "fresh named volumes inherit the mount point's owner")
		assert.Equal(t, "65532:65532 755", dirs["srv/nbms/media"])
		assert.Equal(t, "0:0 1777", dirs["tmp"])
	})

	t.Run("the database and backup images' tools, as uid 999", func(t *testing.T) {
		tools := func(image string) string {
			return e.run(t, nil, append(append(append([]string{"run", "--rm"}, hardened("999:999")...), tmpfs("/tmp", 16)...),
				"--entrypoint", "/bin/sh", image, "-c",
				`id -u; id -g; for c in postgres initdb pg_ctl pg_isready psql pgbackrest nbms-db-entrypoint; do command -v $c; done
pgbackrest version; postgres --version
if command -v nbms; then nbms backup-schedule --help 2>&1 || true; else echo no-nbms-binary; fi`)...)
		}
		for _, image := range []string{im.db, im.backup} {
			out := tools(image)
			for _, want := range []string{
				"999\n999\n",
				"/usr/lib/postgresql/15/bin/postgres", "/usr/lib/postgresql/15/bin/initdb", "/usr/lib/postgresql/15/bin/pg_ctl",
				"/usr/lib/postgresql/15/bin/pg_isready", "/usr/lib/postgresql/15/bin/psql", "/usr/bin/pgbackrest",
				"/usr/local/bin/nbms-db-entrypoint",
				"pgBackRest 2.45", "postgres (PostgreSQL) 15.",
			} {
				assert.Contains(t, out, want, image)
			}
			if image == im.db {
				// An app release rebuilds only the image with the binary.
				assert.Contains(t, out, "no-nbms-binary", "the database image has no nbms binary")
				assert.NotContains(t, out, "/usr/local/bin/nbms\n")
			} else {
				for _, want := range []string{"/usr/local/bin/nbms\n", "-config", "-stanza", "-exit-on-failure"} {
					assert.Contains(t, out, want, "the backup image has the scheduler")
				}
			}
		}
	})

	t.Run("the database: a first start that failed after initdb completes at the next", func(t *testing.T) {
		data, run := name("retry-pgdata"), name("retry-pgrun")
		for _, v := range []string{data, run} {
			e.run(t, nil, "volume", "create", v)
			e.cleanup(t, "volume", "rm", "-f", v)
		}
		args := func(user string) []string {
			env := map[string]string{"POSTGRES_PASSWORD": "x", "NBMS_DB_NAME": "nbms", "NBMS_DB_USER": user, "NBMS_DB_PASSWORD": "y"}
			a := append(append([]string{"run", "--rm"}, hardened("999:999")...), tmpfs("/tmp", 16)...)
			for _, k := range slices.Sorted(maps.Keys(env)) {
				a = append(a, "-e", k+"="+env[k])
			}
			return append(a, "-v", data+":"+pgDataPath, "-v", run+":"+pgSocketPath, im.db)
		}
		// A reserved role name: CREATE ROLE fails after initdb.
		out, stderr, err := e.try(nil, args("pg_nbms")...)
		require.Error(t, err, "%s\n%s", out, stderr)
		assert.Contains(t, stderr, `role name "pg_nbms" is reserved`)
		assert.Contains(t, out+stderr, "database system is shut down", "the temporary server is stopped on the way out")
		// The next start finds PG_VERSION but no marker: it creates the role
		// and the database, then checks they are there.
		out = e.run(t, nil, append(args("nbms"), "sh", "-c", `nbms-db-entrypoint postgres -c listen_addresses='' &
until pg_isready -q -h /var/run/postgresql; do sleep 0.2; done
psql -Atc "SELECT datname || ' ' || datdba::regrole FROM pg_database WHERE datname = 'nbms'"
ls "$PGDATA/nbms-initialized"`)...)
		assert.Contains(t, out, "nbms nbms\n/var/lib/postgresql/data/nbms-initialized")
	})

	t.Run("the database: the passwords follow the environment at every start", func(t *testing.T) {
		// A redeploy onto a kept volume brings the stack's secrets, which
		// may be new (regenerated after a destroy, or rotated).
		data, run := name("pw-pgdata"), name("pw-pgrun")
		for _, v := range []string{data, run} {
			e.run(t, nil, "volume", "create", v)
			e.cleanup(t, "volume", "rm", "-f", v)
		}
		start := func(super, app string, check string) (string, string, error) {
			env := map[string]string{"POSTGRES_PASSWORD": super, "NBMS_DB_NAME": "nbms", "NBMS_DB_USER": "nbms", "NBMS_DB_PASSWORD": app}
			a := append(append([]string{"run", "--rm"}, hardened("999:999")...), tmpfs("/tmp", 16)...)
			for _, k := range slices.Sorted(maps.Keys(env)) {
				a = append(a, "-e", k+"="+env[k])
			}
			a = append(a, "-v", data+":"+pgDataPath, "-v", run+":"+pgSocketPath, im.db, "sh", "-c",
				`nbms-db-entrypoint postgres -c archive_mode=on -c archive_command=/bin/true &
until pg_isready -q -h 127.0.0.1; do sleep 0.2; done
`+check)
			return e.try(nil, a...)
		}
		login := func(user, password string) string {
			return `PGPASSWORD=` + password + ` psql -h 127.0.0.1 -U ` + user + ` -d nbms -Atc "SELECT current_user"`
		}
		// (initdb reports on standard output; the query's answer is last.)
		out, stderr, err := start("super-one", "app-one", login("nbms", "app-one"))
		require.NoError(t, err, stderr)
		assert.True(t, strings.HasSuffix(strings.TrimSpace(out), "\nnbms"), out)
		assert.NotContains(t, stderr, "setting the passwords", "a first start set them while initialising")

		out, stderr, err = start("super-two", "app-two", login("nbms", "app-two")+" && "+login("postgres", "super-two")+
			" && { "+login("nbms", "app-one")+" && echo OLD-PASSWORD-ACCEPTED || true; }")
		require.NoError(t, err, stderr)
		assert.Equal(t, "nbms\npostgres", strings.TrimSpace(out), "the new passwords work and the old one does not")
		assert.Contains(t, stderr, `password authentication failed for user "nbms"`)
		assert.Contains(t, stderr, "setting the passwords of postgres and nbms from the environment")
		assert.NotContains(t, out+stderr, "app-two", "no password in any output")
	})

	t.Run("the database: the app's password rotates through two login roles; the owner never logs in", func(t *testing.T) {
		data, run := name("login-pgdata"), name("login-pgrun")
		for _, v := range []string{data, run} {
			e.run(t, nil, "volume", "create", v)
			e.cleanup(t, "volume", "rm", "-f", v)
		}
		// As the program runs it: the owner without a password; each
		// release's dblogin grants its login, dbretire closes the others.
		env := map[string]string{"POSTGRES_PASSWORD": "super", "NBMS_DB_NAME": "nbms", "NBMS_DB_USER": "nbms"}
		a := append(append(append([]string{"run", "--rm"}, hardened("999:999")...), tmpfs("/tmp", 16)...), envFlags(env)...)
		out, stderr, err := e.try(env, append(a, "-v", data+":"+pgDataPath, "-v", run+":"+pgSocketPath, im.db, "sh", "-c",
			`nbms-db-entrypoint postgres >/tmp/postgres.log 2>&1 &
until pg_isready -q -h 127.0.0.1; do sleep 0.2; done
login() { PGPASSWORD=$2 psql -h 127.0.0.1 -U "$1" -d nbms -Atc "$3" || echo "REFUSED $1"; }
grant() { printf '%s\n' "$2" >/tmp/pw; NBMS_DB_OWNER=nbms NBMS_DB_LOGIN=$1 NBMS_DB_PASSWORD_FILE=/tmp/pw nbms-db-login grant; }
retire() { NBMS_DB_OWNER=nbms NBMS_DB_LOGIN=$1 nbms-db-login retire; }
login nbms super 'SELECT 1'
grant nbms_a one
login nbms_a one "CREATE TABLE t (i int); SELECT 'a ' || current_user || ' ' || (SELECT tableowner FROM pg_tables WHERE tablename = 't')"
grant nbms_b two
login nbms_a one "SELECT 'a ' || current_user"
login nbms_b two "SELECT 'b ' || current_user"
retire nbms_b
login nbms_a one "SELECT 'a ' || current_user"
login nbms_b two "SELECT 'b ' || current_user || ' ' || count(*) FROM t"
grant nbms_a three
login nbms_a three "SELECT 'a ' || current_user"`)...)
		require.NoError(t, err, "%s\n%s", out, stderr)
		assert.Equal(t, strings.Join([]string{
			"REFUSED nbms", // the owner: NOLOGIN, whatever the password
			"CREATE TABLE",
			"a nbms nbms",      // a login acts as the owner, and what it creates is the owner's
			"a nbms", "b nbms", // a rotation: the new login beside the live one
			"REFUSED nbms_a", // retired: its password stops working
			"b nbms 0",
			"a nbms", // the next rotation: the first login again, new password
		}, "\n"), strings.TrimSpace(out), stderr)
		assert.Contains(t, stderr, `password authentication failed for user "nbms"`, "the owner has no password")
		assert.Contains(t, stderr, `password authentication failed for user "nbms_a"`)
		assert.Contains(t, stderr, "nbms-db-login: retiring nbms_a")
		for _, pw := range []string{"one", "two", "three"} {
			assert.NotContains(t, stderr, "PASSWORD '"+pw, "no password in any output")
		}
	})

	t.Run("the stack", func(t *testing.T) {
		runStack(t, e, im, name)
	})
}

// createEdgeNetwork makes the edge network as the program does: a subnet
// of its own (a random /24 of 10.0.0.0/8, outside Docker's default pools;
// another on overlap), Docker's picks from its upper half only, so that
// the app's fixed address in the lower half is free. It returns the subnet.
func createEdgeNetwork(t *testing.T, e *engine, name string) string {
	t.Helper()
	for range 5 {
		b := make([]byte, 2)
		_, err := rand.Read(b)
		require.NoError(t, err)
		subnet := fmt.Sprintf("10.%d.%d.0/24", 200+b[0]%50, b[1])
		ipRange := (&stacks.Config{EdgeSubnet: subnet}).EdgeDynamicRange()
		_, stderr, err := e.try(nil, "network", "create", "--subnet", subnet, "--ip-range", ipRange, name)
		if err == nil {
			e.cleanup(t, "network", "rm", name)
			return subnet
		}
		if !strings.Contains(stderr, "overlap") {
			t.Fatalf("docker network create %s: %v: %s", name, err, stderr)
		}
	}
	t.Fatal("no free /24 for the edge network in five tries")
	return ""
}

// runStack runs the images as the program deploys them and checks that
// they work together.
func runStack(t *testing.T, e *engine, im images, name func(string) string) {
	// Networks: the internal one (no outside access) for the database,
	// Redis and the app; the edge one for the app and nginx.
	internal, edge := name("internal"), name("edge")
	e.run(t, nil, "network", "create", "--internal", internal)
	e.cleanup(t, "network", "rm", internal)
	edgeSubnet := createEdgeNetwork(t, e, edge)

	volumes := map[string]string{}
	for _, v := range []string{"pgdata", "pgrepo", "pgrun", "static", "media", "proxy-control", "cache-control"} {
		volumes[v] = name(v)
		e.run(t, nil, "volume", "create", volumes[v])
		e.cleanup(t, "volume", "rm", "-f", volumes[v])
	}
	container := func(role string) string {
		c := name(role)
		e.cleanup(t, "rm", "-f", "-v", c)
		return c
	}

	// A production stack as an operator would configure it for this host.
	httpPort, httpsPort := testsupport.FreePort(t), testsupport.FreePort(t)
	certPEM, keyPEM := testsupport.SelfSignedCert(t, "localhost")
	cfg, err := stacks.Parse("imgtest", stacks.Values{Raw: map[string]string{
		"profile": "prod", "domain": "localhost", "allowedHosts": `["localhost"]`,
		"bindAddress": "127.0.0.1", "httpPort": strconv.Itoa(httpPort), "httpsPort": strconv.Itoa(httpsPort),
		"tlsMode": "provided", "tlsCertificate": certPEM, "tlsKey": keyPEM,
		"edgeSubnet": edgeSubnet,
	}, Secret: func(key string) bool { return key == "tlsKey" }})
	require.NoError(t, err)

	superPassword, appPassword, redisPassword := randomHex(t, 16), randomHex(t, 16), randomHex(t, 16)
	pgConf, err := pgbackrest.Render(pgbackrest.Params{
		Stanza: pgStanza, PGDataPath: pgDataPath, PGSocketPath: pgSocketPath, PGUser: "postgres", PGPort: 5432,
		RepoPath: pgRepoPath, LogPath: "/tmp/nbms", LockPath: "/tmp/nbms",
		RetentionFull: cfg.Backup.RetentionFull, RetentionDiff: cfg.Backup.RetentionDiff, ProcessMax: cfg.Backup.ProcessMax,
	})
	require.NoError(t, err)
	pgFiles := [][2]string{{pgConfigPath, pgConf}}
	pgVolumes := func(dataMode string) []string {
		return []string{
			"-v", volumes["pgdata"] + ":" + pgDataPath + dataMode,
			"-v", volumes["pgrepo"] + ":" + pgRepoPath,
			"-v", volumes["pgrun"] + ":" + pgSocketPath,
		}
	}

	// PostgreSQL, with WAL archiving through pgBackRest as the program
	// configures it (its -c flags come after the entrypoint's own).
	// Each secrets volume first: its cleanup then runs after its reader's.
	dbSecrets, dbEnv := secretsVolume(t, e, im.db, name("secrets-db"), map[string]string{"POSTGRES_PASSWORD": superPassword})
	db := container("db")
	maps.Copy(dbEnv, map[string]string{
		"POSTGRES_INITDB_ARGS": "--data-checksums --encoding=UTF8 --locale=C.UTF-8",
		"NBMS_DB_NAME":         "nbms", "NBMS_DB_USER": "nbms",
		"PGBACKREST_CONFIG": pgConfigPath, "PGBACKREST_STANZA": pgStanza,
	})
	postgres := []string{"nbms-db-entrypoint", "postgres"}
	settings := pgbackrest.PostgresSettings(pgConfigPath, pgStanza, time.Minute)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		postgres = append(postgres, "-c", k+"="+settings[k])
	}
	args := []string{"run", "-d", "--name", db, "--network", internal, "--network-alias", "db", "--shm-size", "256m", "--health-interval", healthInterval}
	args = append(append(append(append(append(append(args, hardened("999:999")...), tmpfs("/tmp", 64)...), envFlags(dbEnv)...), pgVolumes("")...), dbSecrets...),
		prologue(im.db, pgFiles, postgres...)...)
	e.run(t, dbEnv, args...)

	// Redis, exactly as the program starts it: no secret of the stack, its
	// control volume (a new volume takes the image's owner and mode).
	cacheControl := volumes["cache-control"] + ":/var/lib/nbms-cache"
	cache := container("cache")
	args = []string{"run", "-d", "--name", cache, "--network", internal, "--network-alias", "cache", "--health-interval", healthInterval, "-v", cacheControl}
	args = append(append(append(args, hardened("998:998")...), tmpfs("/data", 16)...), tmpfs("/tmp", 16)...)
	e.run(t, nil, append(args, "--entrypoint", "/bin/sh", im.redis, "-c", deploy.RedisScript, "redis", "192mb")...)

	e.waitHealthy(t, db, 2*time.Minute)
	e.waitHealthy(t, cache, time.Minute)

	t.Run("database: initialised as the contract says", func(t *testing.T) {
		logs := e.logs(db)
		assert.Equal(t, 1, strings.Count(logs, "nbms-db-entrypoint: initialisation complete"), logs)
		// The stanza exists before the real server archives anything.
		assert.Contains(t, logs, "nbms-db-entrypoint: creating the pgBackRest stanza "+pgStanza)
		assert.NotContains(t, logs, "stanza-create failed")
		assert.Contains(t, logs, `listening on IPv4 address "0.0.0.0", port 5432`)
		// PostgreSQL is PID 1 (exec'd) and its environment holds no password.
		pid1 := e.run(t, nil, "exec", db, "sh", "-c", `tr '\0' ' ' </proc/1/cmdline; echo; tr '\0' '\n' </proc/1/environ`)
		cmdline, environ, _ := strings.Cut(pid1, "\n")
		assert.True(t, strings.HasPrefix(cmdline, "postgres -c listen_addresses=* -c "), cmdline)
		assert.Contains(t, cmdline, " -c archive_mode=on", "the caller's flags after the entrypoint's")
		assert.NotContains(t, environ, "PASSWORD")
		hba := e.run(t, nil, "exec", db, "sh", "-c", `grep -v '^#' "$PGDATA/pg_hba.conf" | tr -s ' '`)
		assert.Equal(t, "local all all peer\nlocal replication all peer\nhost all all all scram-sha-256", hba)
		settings := e.run(t, nil, "exec", db, "psql", "-Atc", "SELECT current_setting('data_checksums'), current_setting('server_encoding'), current_setting('lc_collate'), current_setting('archive_mode')")
		assert.Equal(t, "on|UTF8|C.UTF-8|on", settings)

		// The release's login, granted as the program's dblogin does: over
		// the socket volume, on no network, the password from its file.
		loginSecrets, loginEnv := secretsVolume(t, e, im.db, name("secrets-login"), map[string]string{"NBMS_DB_PASSWORD": appPassword})
		maps.Copy(loginEnv, map[string]string{"NBMS_DB_OWNER": "nbms", "NBMS_DB_LOGIN": "nbms_a"})
		grant := append(append(append(append([]string{"run", "--rm", "--network", "none"}, hardened("999:999")...), tmpfs("/tmp", 8)...), envFlags(loginEnv)...), loginSecrets...)
		out := e.run(t, loginEnv, append(grant, "-v", volumes["pgrun"]+":"+pgSocketPath, "--entrypoint", "/usr/local/bin/nbms-db-login", im.db, "grant")...)
		assert.NotContains(t, out, appPassword)

		// Over TCP: the app's login and the superuser with their passwords,
		// from another container on the network; a wrong password, and the
		// owner itself, are refused.
		psql := func(user, password, query string) (string, error) {
			env := map[string]string{"PGPASSWORD": password}
			args := append(append(append([]string{"run", "--rm", "--network", internal}, hardened("999:999")...), envFlags(env)...),
				im.db, "psql", "-Atc", query, "host=db user="+user+" dbname=nbms")
			out, stderr, err := e.try(env, args...)
			return out + stderr, err
		}
		out, err := psql("nbms_a", appPassword, "SELECT current_user, postgis_lib_version(), (SELECT datdba::regrole FROM pg_database WHERE datname = 'nbms')")
		require.NoError(t, err, out)
		assert.Regexp(t, `^nbms\|3\.3\.\d+\|nbms$`, out, "the app's login acts as the owner of its database, which has PostGIS")
		out, err = psql("postgres", superPassword, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
		require.NoError(t, err, out)
		assert.Equal(t, "t", out)
		out, err = psql("nbms_a", "wrong", "SELECT 1")
		require.Error(t, err)
		assert.Contains(t, out, `password authentication failed for user "nbms_a"`)
		out, err = psql("nbms", appPassword, "SELECT 1")
		require.Error(t, err)
		assert.Contains(t, out, `password authentication failed for user "nbms"`, "the owner has no password")
	})

	// The release's Redis login, granted as the program's cachelogin does:
	// over the control volume's socket, on no network.
	cacheLoginAs := func(login, password string) func(command string) (string, string, error) {
		secrets, env := secretsVolume(t, e, im.redis, name("secrets-cache-"+login), map[string]string{"REDIS_PASSWORD": password})
		env["NBMS_CACHE_LOGIN"] = login
		return func(command string) (string, string, error) {
			a := append(append(append(append([]string{"run", "--rm", "--network", "none", "-v", cacheControl}, hardened("998:998")...), tmpfs("/tmp", 8)...), envFlags(env)...), secrets...)
			return e.try(env, append(a, "--entrypoint", "/bin/sh", im.redis, "-c", deploy.CacheLoginScript, "nbms-cache-login", command)...)
		}
	}
	cacheLogin := cacheLoginAs("nbms_a", redisPassword)
	_, stderr, err := cacheLogin("grant")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "nbms-cache-login: granting login nbms_a its password")
	assert.NotContains(t, stderr, redisPassword)

	t.Run("cache: only its logins get in, and they outlive a restart of Redis", func(t *testing.T) {
		// From another container on the network, as the app connects.
		redisCLI := func(args ...string) string {
			a := append(append([]string{"run", "--rm", "--network", internal}, hardened("998:998")...), im.redis, "redis-cli", "-h", "cache", "--no-auth-warning")
			out, stderr, _ := e.try(nil, append(a, args...)...)
			return strings.TrimSpace(out + stderr)
		}
		cli := func(auth ...string) string { return redisCLI(append(auth, "ping")...) }
		assert.Contains(t, cli(), "NOAUTH", "no anonymous access")
		assert.Equal(t, "PONG", cli("--user", "nbms_a", "-a", redisPassword))
		assert.Contains(t, cli("--user", "nbms_a", "-a", "wrong"), "WRONGPASS")
		assert.Contains(t, cli("-a", redisPassword), "WRONGPASS", "the default user is off")
		admin := strings.TrimSpace(e.run(t, nil, "exec", cache, "cat", "/var/lib/nbms-cache/admin"))
		assert.Contains(t, cli("--user", "nbms-admin", "-a", admin), "PONG", "the admin may ping")
		assert.Contains(t, redisCLI("--user", "nbms-admin", "-a", admin, "get", "k"), "NOPERM", "but reads no data")
		assert.Equal(t, "maxmemory\n201326592", e.run(t, nil, "exec", cache, "sh", "-c", deploy.RedisCLI+" config get maxmemory"))
		assert.Regexp(t, `(?m)^user nbms_a on .*#[0-9a-f]{64} `, e.run(t, nil, "exec", cache, "sh", "-c", deploy.RedisCLI+" acl list"), "the login's password is kept as a hash")

		e.run(t, nil, "restart", cache)
		e.waitHealthy(t, cache, time.Minute)
		assert.Equal(t, "PONG", cli("--user", "nbms_a", "-a", redisPassword), "the ACL file kept the login")
		assert.NotEqual(t, admin, strings.TrimSpace(e.run(t, nil, "exec", cache, "cat", "/var/lib/nbms-cache/admin")), "each start makes a new admin password")

		// A rotation: the other login granted beside the live one, then
		// every login but the new one retired.
		rotated := randomHex(t, 16)
		other := cacheLoginAs("nbms_b", rotated)
		_, stderr, err := other("grant")
		require.NoError(t, err, stderr)
		assert.Equal(t, "PONG", cli("--user", "nbms_b", "-a", rotated), "the new login")
		assert.Equal(t, "PONG", cli("--user", "nbms_a", "-a", redisPassword), "beside the live one")
		_, stderr, err = other("retire")
		require.NoError(t, err, stderr)
		assert.Contains(t, stderr, "nbms-cache-login: retired every login but nbms_b: nbms_a")
		assert.Contains(t, cli("--user", "nbms_a", "-a", redisPassword), "WRONGPASS", "the previous password stops working")
		assert.Equal(t, "PONG", cli("--user", "nbms_b", "-a", rotated))
		_, stderr, err = other("retire")
		require.NoError(t, err, stderr)
		assert.Contains(t, stderr, "retired every login but nbms_b: none (already retired)")
		// And back, for the app below: the next rotation's turn.
		for _, command := range []string{"grant", "retire"} {
			_, stderr, err = cacheLogin(command)
			require.NoError(t, err, stderr)
		}
		assert.Contains(t, cli("--user", "nbms_b", "-a", rotated), "WRONGPASS")
		assert.Equal(t, "PONG", cli("--user", "nbms_a", "-a", redisPassword))
	})

	// The app: the program's environment for this stack, its one-shot
	// commands, then the server.
	secret := map[string]string{
		"SECRET_KEY":   rand.Text() + rand.Text(),
		"DATABASE_URL": "postgres://nbms_a:" + appPassword + "@db:5432/nbms?sslmode=disable",
		"REDIS_URL":    "redis://nbms_a:" + redisPassword + "@cache:6379/0",
	}
	appEnv, err := deploy.AppEnv(cfg, secret)
	require.NoError(t, err)
	appSecrets, secretFiles := secretsVolume(t, e, im.nginx, name("secrets-app"), secret)
	maps.Copy(appEnv, secretFiles)
	appArgs := func(role string, detached bool) []string {
		args := []string{"run", "--name", container(role), "--network", internal}
		if detached {
			args = []string{"create", "--name", container(role), "--network", internal, "--init", "--health-interval", healthInterval}
		}
		args = append(append(append(args, hardened("65532:65532")...), tmpfs("/tmp", 64)...), envFlags(appEnv)...)
		return append(append(args, "-v", volumes["static"]+":"+stacks.StaticRoot, "-v", volumes["media"]+":"+stacks.MediaRoot), appSecrets...)
	}
	t.Run("app: migrate and collectstatic", func(t *testing.T) {
		out := e.run(t, appEnv, append(appArgs("migrate", false), append([]string{im.app}, deploy.MigrateCommand...)...)...)
		assert.Contains(t, out, "applied ")
		out = e.run(t, appEnv, append(appArgs("collectstatic", false), append([]string{im.app}, deploy.CollectstaticCommand...)...)...)
		assert.Contains(t, out, "published ", "written as 65532 to the fresh static volume")
	})
	app := name("app")
	e.run(t, appEnv, append(appArgs("app", true), im.app, "serve")...)
	e.run(t, nil, "network", "connect", edge, app)
	e.run(t, nil, "start", app)
	e.waitHealthy(t, app, time.Minute)

	// The switch, as the program runs it: the new release's readiness from
	// inside the edge network, by the container's name, then that name as
	// the upstream for nginx (no proxy runs yet: it starts on it).
	control := volumes["proxy-control"] + ":/var/lib/nbms-proxy"
	out := e.run(t, nil, append(append(append([]string{"run", "--name", container("switch"), "--network", edge, "-v", control},
		hardened("101:101")...), tmpfs("/tmp", 8)...),
		"--entrypoint", "/usr/local/bin/nbms-switch", im.nginx, "release-1", cfg.Domain, "60", app+":8000")...)
	assert.Contains(t, out, "it will load the upstream of release release-1", "no proxy yet: it starts on this upstream")

	// nginx with the config the program renders for this stack, under the
	// supervisor that applies the switches.
	params, err := deploy.NginxParams(cfg)
	require.NoError(t, err)
	conf, err := nginx.Render(params)
	require.NoError(t, err)
	proxySecrets, _ := secretsVolume(t, e, im.nginx, name("secrets-proxy"), map[string]string{"TLS_KEY": keyPEM})
	proxy := container("proxy")
	args = []string{"run", "-d", "--name", proxy, "--network", edge, "--health-interval", healthInterval,
		"--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
		"-p", fmt.Sprintf("127.0.0.1:%d:80", httpPort), "-p", fmt.Sprintf("127.0.0.1:%d:443", httpsPort),
		"-v", volumes["static"] + ":" + stacks.StaticRoot + ":ro", "-v", volumes["media"] + ":" + stacks.MediaRoot + ":ro", "-v", control}
	args = append(append(append(args, hardened("101:101")...), tmpfs("/tmp", 64)...), proxySecrets...)
	e.run(t, nil, append(args, prologue(im.nginx,
		[][2]string{{proxyConf, conf}, {proxyCert, certPEM}},
		"/usr/local/bin/nbms-proxy", proxyConf)...)...)
	e.waitHealthy(t, proxy, time.Minute)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(certPEM)))
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(t *testing.T, url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	https := fmt.Sprintf("https://localhost:%d", httpsPort)
	readyThroughNginx := func(t *testing.T) {
		t.Helper()
		status, body := get(t, https+"/readyz")
		assert.Equal(t, http.StatusOK, status, "nginx → app → PostgreSQL and Redis: %s\nproxy:\n%s\napp:\n%s", body, e.logs(proxy), e.logs(app))
	}

	t.Run("proxy: TLS, the app behind it, the static files", func(t *testing.T) {
		status, _ := get(t, fmt.Sprintf("http://localhost:%d%s", httpPort, nginx.HealthPath))
		assert.Equal(t, http.StatusOK, status)
		status, _ = get(t, fmt.Sprintf("http://localhost:%d/x", httpPort))
		assert.Equal(t, http.StatusMovedPermanently, status)
		readyThroughNginx(t)
		status, body := get(t, https+"/static/manifest.json")
		require.Equal(t, http.StatusOK, status, "the manifest collectstatic wrote, read by nginx (uid 101) from the volume:\n%s", body)
		var manifest map[string]string
		require.NoError(t, json.Unmarshal([]byte(body), &manifest))
		require.NotEmpty(t, manifest)
		for _, hashed := range manifest {
			status, _ = get(t, https+"/static/"+hashed)
			assert.Equal(t, http.StatusOK, status, hashed)
			break
		}
	})

	t.Run("backups: pgBackRest over the shared socket, and the scheduler", func(t *testing.T) {
		backupEnv := map[string]string{"PGBACKREST_CONFIG": pgConfigPath, "PGBACKREST_STANZA": pgStanza}
		backupArgs := func(role string, detached bool) []string {
			args := []string{"run", "--name", container(role), "--network", internal, "--init"}
			if detached {
				args = append(args, "-d")
			}
			args = append(append(append(append(args, hardened("999:999")...), tmpfs("/tmp", 128)...), envFlags(backupEnv)...), pgVolumes(":ro")...)
			return args
		}
		out := e.run(t, backupEnv, append(backupArgs("backup-once", false), prologue(im.backup, pgFiles, "sh", "-c",
			"pgbackrest stanza-create && pgbackrest --type=full backup && pgbackrest --output=json info")...)...)
		var info []struct {
			Status struct{ Code int }
			Backup []struct{ Type string }
		}
		require.NoError(t, json.Unmarshal([]byte(out[strings.LastIndex(out, "\n")+1:]), &info), out)
		require.Len(t, info, 1)
		assert.Zero(t, info[0].Status.Code, "stanza ok: WAL archived by the database container's archive_command")
		require.Len(t, info[0].Backup, 1)
		assert.Equal(t, "full", info[0].Backup[0].Type)
		// The backup switched WAL and waited for it to be archived; no
		// archive_command failed before it, not even on this first start.
		archiver := e.run(t, nil, "exec", db, "psql", "-Atc", "SELECT archived_count > 0, failed_count FROM pg_stat_archiver")
		assert.Equal(t, "t|0", archiver, "WAL archived from the first start with no failed archive_command")

		// The scheduler, with the program's command line.
		scheduler := name("backup")
		e.run(t, backupEnv, append(backupArgs("backup", true), prologue(im.backup, pgFiles, deploy.BackupSchedulerCommand(cfg)...)...)...)
		e.waitLog(t, scheduler, "backup scheduler started", time.Minute)
		e.run(t, nil, "exec", scheduler, "pgbackrest", "info") // the program's health check
		e.run(t, nil, "stop", scheduler)
		assert.Equal(t, "0", e.run(t, nil, "inspect", "--format", "{{.State.ExitCode}}", scheduler), e.logs(scheduler))
	})

	t.Run("database: fast stop with the app connected, restart without init", func(t *testing.T) {
		start := time.Now()
		e.run(t, nil, "stop", "--time", "30", db)
		took := time.Since(start)
		assert.Less(t, took, 15*time.Second, "SIGINT is a fast shutdown")
		assert.Equal(t, "0", e.run(t, nil, "inspect", "--format", "{{.State.ExitCode}}", db))
		assert.Contains(t, e.logs(db), "received fast shutdown request")
		e.run(t, nil, "start", db)
		e.waitHealthy(t, db, time.Minute)
		logs := e.logs(db)
		assert.Equal(t, 1, strings.Count(logs, "nbms-db-entrypoint: initialisation complete"), "initialised once")
		assert.Equal(t, 2, strings.Count(logs, "listening on IPv4 address"), "a second start of the real server")
		readyThroughNginx(t)
	})
}
