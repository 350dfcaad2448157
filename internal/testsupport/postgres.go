package testsupport

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PGBin is where Debian's PostgreSQL 15 server programs are.
const PGBin = "/usr/lib/postgresql/15/bin"

// PGHost is a temporary directory owned by the postgres OS user, in which
// a test runs throwaway PostgreSQL 15 clusters and pgBackRest. Both run as
// postgres: PostgreSQL refuses to run as root, and pgBackRest run as root
// leaves repository files that postgres can no longer write. The tests
// themselves run as root and switch with runuser.
type PGHost struct {
	t        testing.TB
	Base     string
	UID, GID int
}

// NewPGHost makes the directory (under the system's temporary directory:
// the test's own is not readable by postgres) and removes it at cleanup.
func NewPGHost(t testing.TB, prefix string) *PGHost {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the postgres OS user comes with Debian's postgresql package: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	h := &PGHost{t: t, Base: base, UID: uid, GID: gid}
	h.chown(base)
	return h
}

func (h *PGHost) chown(path string) {
	h.t.Helper()
	if err := os.Chown(path, h.UID, h.GID); err != nil {
		h.t.Fatal(err)
	}
}

// Dir makes the directory name under Base, mode 0700, owned by postgres,
// and returns its path.
func (h *PGHost) Dir(name string) string {
	h.t.Helper()
	path := filepath.Join(h.Base, name)
	if err := os.MkdirAll(path, 0o700); err != nil {
		h.t.Fatal(err)
	}
	h.chown(path)
	return path
}

// WriteFile writes a file owned by postgres.
func (h *PGHost) WriteFile(path, content string, mode os.FileMode) {
	h.t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		h.t.Fatal(err)
	}
	h.chown(path)
}

// Command is name run as postgres in Base.
func (h *PGHost) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	cmd.Dir = h.Base
	return cmd
}

// Run runs name as postgres and returns its output, failing the test on a
// non-zero exit.
func (h *PGHost) Run(name string, args ...string) string {
	h.t.Helper()
	out, err := h.Command(name, args...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// PGCluster is one PostgreSQL 15 cluster of a PGHost, listening on
// 127.0.0.1:Port and on a socket directory of its own.
type PGCluster struct {
	h               *PGHost
	Name            string
	Data, Sock, Log string
	Port            int
	started         bool
}

// Cluster names a cluster of h: its data directory Base/name (not made:
// initdb or a restore makes it), its socket directory and log file.
// Cleanup stops it (immediate) and, when the test failed, logs its log.
func (h *PGHost) Cluster(name string) *PGCluster {
	c := &PGCluster{
		h: h, Name: name,
		Data: filepath.Join(h.Base, name), Sock: h.Dir(name + "-sock"),
		Log: filepath.Join(h.Base, name+".log"), Port: FreePort(h.t),
	}
	h.t.Cleanup(func() {
		if h.t.Failed() {
			log, _ := os.ReadFile(c.Log)
			h.t.Logf("PostgreSQL log of %s:\n%s", name, log)
		}
		if c.started {
			_ = h.Command(PGBin+"/pg_ctl", "-D", c.Data, "-m", "immediate", "-w", "stop").Run()
		}
	})
	return c
}

// InitDB runs initdb with the superuser postgres, whose password is
// superuserPassword (through a file: never a command line), data checksums
// and UTF-8.
func (c *PGCluster) InitDB(superuserPassword string) {
	c.h.t.Helper()
	pwfile := filepath.Join(c.h.Base, c.Name+".pw")
	c.h.WriteFile(pwfile, superuserPassword+"\n", 0o600)
	c.h.Run(PGBin+"/initdb", "-D", c.Data, "-U", "postgres", "--pwfile="+pwfile, "-E", "UTF8",
		"--locale=C.UTF-8", "--data-checksums", "--no-sync")
	if err := os.Remove(pwfile); err != nil {
		c.h.t.Fatal(err)
	}
}

// ListenSettings are the postgresql.conf lines that make the cluster
// listen where c says.
func (c *PGCluster) ListenSettings() string {
	return "listen_addresses = '127.0.0.1'\n" +
		"port = " + strconv.Itoa(c.Port) + "\n" +
		"unix_socket_directories = '" + c.Sock + "'\n"
}

// AppendConf appends text to the cluster's postgresql.conf: later lines
// win over earlier ones, as later -c flags do on the server's command line.
func (c *PGCluster) AppendConf(text string) {
	c.h.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.Data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.h.t.Fatal(err)
	}
	if _, err := f.WriteString("\n" + text); err != nil {
		c.h.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		c.h.t.Fatal(err)
	}
}

// Start starts the server and waits until it accepts connections (a
// standby: read-only ones).
func (c *PGCluster) Start() {
	c.h.t.Helper()
	c.started = true
	c.h.Run(PGBin+"/pg_ctl", "-D", c.Data, "-l", c.Log, "-w", "-t", "120", "start")
}

// Stop stops the server with pg_ctl's mode: "fast" (a clean shutdown
// checkpoint) or "immediate" (as a crash).
func (c *PGCluster) Stop(mode string) {
	c.h.t.Helper()
	c.h.Run(PGBin+"/pg_ctl", "-D", c.Data, "-m", mode, "-w", "-t", "120", "stop")
	c.started = false
}

// Psql runs sql with psql as postgres over the Unix socket (peer
// authentication) in database postgres and returns its unaligned output.
func (c *PGCluster) Psql(sql string) string {
	c.h.t.Helper()
	return strings.TrimSpace(c.h.Run(PGBin+"/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
		"-h", c.Sock, "-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres", "-c", sql))
}

// URL is a TCP connection URL of the cluster's database postgres as user
// with password.
func (c *PGCluster) URL(user, password string) string {
	return "postgres://" + user + ":" + password + "@127.0.0.1:" + strconv.Itoa(c.Port) + "/postgres?sslmode=disable"
}

// WaitFor polls sql (through Psql) until it prints want, failing the test
// after timeout with the last output.
func (c *PGCluster) WaitFor(sql, want string, timeout time.Duration) {
	c.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got string
	for {
		out, err := c.h.Command(PGBin+"/psql", "-X", "-At", "-h", c.Sock, "-p", strconv.Itoa(c.Port),
			"-U", "postgres", "-d", "postgres", "-c", sql).CombinedOutput()
		got = strings.TrimSpace(string(out))
		if err == nil && got == want {
			return
		}
		select {
		case <-ctx.Done():
			c.h.t.Fatalf("%s: %q never printed %q within %s; last: %s", c.Name, sql, want, timeout, got)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
