package pgbackrest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// postgresOS runs commands as the postgres OS user: PostgreSQL refuses to
// run as root, and pgBackRest run as root leaves a repository postgres can
// no longer write (ops-anchors §2.7).
type postgresOS struct {
	t        *testing.T
	uid, gid uint32
	dir      string
}

func newPostgresOS(t *testing.T, dir string) postgresOS {
	u, err := user.Lookup("postgres")
	require.NoError(t, err, "the postgres OS user comes with Debian's postgresql package")
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	require.NoError(t, err)
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	require.NoError(t, err)
	return postgresOS{t: t, uid: uint32(uid), gid: uint32(gid), dir: dir}
}

func (pg postgresOS) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: pg.uid, Gid: pg.gid}}
	cmd.Dir = pg.dir // the test's working directory is not readable by postgres
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + pg.dir}
	return cmd
}

// run runs name as postgres and returns its output, failing the test on a
// non-zero exit.
func (pg postgresOS) run(name string, args ...string) string {
	pg.t.Helper()
	out, err := pg.command(name, args...).CombinedOutput()
	require.NoError(pg.t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func (pg postgresOS) mkdir(path string) {
	pg.t.Helper()
	require.NoError(pg.t, os.MkdirAll(path, 0o700))
	require.NoError(pg.t, os.Chown(path, int(pg.uid), int(pg.gid)))
}

// info is the part of `pgbackrest --output=json info` (2.45) the test reads.
type info struct {
	Name   string `json:"name"`
	Status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
	DB []struct {
		SystemID uint64 `json:"system-id"` // above 2^53: float64 would round it
		Version  string `json:"version"`
	} `json:"db"`
	Archive []struct {
		Max *string `json:"max"`
	} `json:"archive"`
	Backup []struct {
		Label string `json:"label"`
		Type  string `json:"type"`
		Error bool   `json:"error"`
	} `json:"backup"`
}

// TestRealBackup runs the real pgBackRest 2.45 with the rendered config
// against a throwaway PostgreSQL 15 cluster archiving WAL through
// ArchiveCommand: stanza-create, check, a full backup, info.
func TestRealBackup(t *testing.T) {
	base, err := os.MkdirTemp("", "nbms-pgbackrest-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	pg := newPostgresOS(t, base)
	pg.mkdir(base)

	data := filepath.Join(base, "data")
	sock := filepath.Join(base, "sock")
	// The config lives at a path that needs every layer of quoting: a quote
	// and a space for the shell, a % for archive_command's own expansion,
	// and the shell quoting's '\'' (a backslash) for postgresql.conf.
	confDir := filepath.Join(base, "it's 100% conf")
	for _, dir := range []string{sock, confDir, filepath.Join(base, "repo"), filepath.Join(base, "log"), filepath.Join(base, "lock")} {
		pg.mkdir(dir)
	}
	confPath := filepath.Join(confDir, "pgbackrest.conf")
	port := testsupport.FreePort(t)
	const stanza = "nbms-test"

	p := Params{
		Stanza:        stanza,
		PGDataPath:    data,
		PGSocketPath:  sock,
		PGUser:        "postgres",
		RepoPath:      filepath.Join(base, "repo"),
		LogPath:       filepath.Join(base, "log"),
		LockPath:      filepath.Join(base, "lock"),
		PGPort:        port,
		RetentionFull: 2,
		RetentionDiff: 3,
		ProcessMax:    2,
	}
	conf, err := Render(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o640))
	require.NoError(t, os.Chown(confPath, int(pg.uid), int(pg.gid)))

	pg.run(pgBin+"/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--data-checksums", "--no-sync")
	settings := "listen_addresses = '127.0.0.1'\n" +
		"port = " + strconv.Itoa(port) + "\n" +
		"unix_socket_directories = '" + sock + "'\n" +
		PostgresConf(PostgresSettings(confPath, stanza, time.Minute))
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(settings)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	pgLog := filepath.Join(base, "pg.log")
	t.Cleanup(func() {
		_ = pg.command(pgBin+"/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run()
	})
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(pgLog)
			t.Logf("PostgreSQL log:\n%s", log)
		}
	})
	pg.run(pgBin+"/pg_ctl", "-D", data, "-l", pgLog, "-w", "-t", "60", "start")

	pgbackrest := func(args ...string) string {
		t.Helper()
		return pg.run("pgbackrest", append([]string{"--config=" + confPath, "--stanza=" + stanza}, args...)...)
	}
	pgbackrest("stanza-create")
	// check switches WAL and waits until archive_command has pushed it.
	pgbackrest("check")
	pgbackrest("--type=full", "backup")

	archiver := pg.run(pgBin+"/psql", "-h", sock, "-p", strconv.Itoa(port), "-U", "postgres", "-X", "-At",
		"-c", "SELECT archived_count > 0, failed_count FROM pg_stat_archiver")
	assert.Equal(t, "t|0", strings.TrimSpace(archiver), "archive_command pushed WAL and never failed")

	var stanzas []info
	require.NoError(t, json.Unmarshal([]byte(pgbackrest("--output=json", "info")), &stanzas))
	require.Len(t, stanzas, 1)
	got := stanzas[0]
	assert.Equal(t, stanza, got.Name)
	assert.Equal(t, 0, got.Status.Code, got.Status.Message)
	require.Len(t, got.Backup, 1)
	assert.Equal(t, "full", got.Backup[0].Type)
	assert.False(t, got.Backup[0].Error)
	require.Len(t, got.Archive, 1)
	require.NotNil(t, got.Archive[0].Max, "WAL reached the repository")
	require.Len(t, got.DB, 1)
	assert.Equal(t, "15", got.DB[0].Version)

	control := pg.run(pgBin+"/pg_controldata", "-D", data)
	m := regexp.MustCompile(`Database system identifier:\s+(\d+)`).FindStringSubmatch(control)
	require.NotNil(t, m, control)
	systemID, err := strconv.ParseUint(m[1], 10, 64)
	require.NoError(t, err)
	assert.Equal(t, systemID, got.DB[0].SystemID, "system-id decoded exactly (uint64)")

	entries, err := os.ReadDir(p.LogPath)
	require.NoError(t, err)
	assert.NotEmpty(t, entries, "pgBackRest wrote its log under LogPath")
}

// TestRealBackupToAnOffHostRepository runs the real pgBackRest 2.45 with
// the rendered config and a second repository on a real S3 server
// (versitygw's posix backend, over TLS with a certificate of a test CA):
// WAL reaches both repositories, a full backup goes to each, every file
// pgBackRest wrote to the object store is ciphertext, and the object store
// alone restores the rows.
func TestRealBackupToAnOffHostRepository(t *testing.T) {
	base, err := os.MkdirTemp("", "nbms-pgbackrest-s3-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	pg := newPostgresOS(t, base)
	pg.mkdir(base)
	dir := func(name string) string {
		path := filepath.Join(base, name)
		pg.mkdir(path)
		return path
	}
	data, sock, conf, include := filepath.Join(base, "data"), dir("sock"), dir("conf"), dir("conf.d")

	// The S3 server: its root holds one directory per bucket.
	ca := testsupport.NewCA(t, "NBMS test CA")
	caFile := filepath.Join(conf, "s3-ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(ca.PEM), 0o644))
	s3Port := testsupport.FreePort(t)
	s3 := testsupport.StartS3(t, nil, dir("s3"), "127.0.0.1:"+strconv.Itoa(s3Port), ca, []string{"localhost"}, "nbms-backups")
	secrets := S3Secrets{AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CipherPass: "cipher-" + testsupport.RandomWord(t)}

	const stanza = "nbms-offhost"
	port := testsupport.FreePort(t)
	p := Params{
		Stanza: stanza, PGDataPath: data, PGSocketPath: sock, PGUser: "postgres", PGPort: port,
		RepoPath: dir("repo"), LogPath: dir("log"), LockPath: dir("lock"),
		RetentionFull: 2, RetentionDiff: 3, ProcessMax: 2,
		OffHost: &S3Repo{
			// localhost: the name the certificate has (pgBackRest refuses an
			// address), which resolves to 127.0.0.1.
			Endpoint: "localhost", Port: s3Port, Bucket: "nbms-backups", Region: "us-east-1", Path: "/nbms",
			PathStyle: true, CAFile: caFile, RetentionFull: 1, RetentionDiff: 1, SpoolPath: dir("spool"),
		},
	}
	rendered, err := Render(p)
	require.NoError(t, err)
	confPath := filepath.Join(conf, "pgbackrest.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(rendered), 0o640))
	secretConf, err := RenderSecrets(secrets)
	require.NoError(t, err)
	secretPath := filepath.Join(include, "repo2.conf")
	require.NoError(t, os.WriteFile(secretPath, []byte(secretConf), 0o600))
	for _, f := range []string{confPath, secretPath} {
		require.NoError(t, os.Chown(f, int(pg.uid), int(pg.gid)))
	}
	assert.NotContains(t, rendered, secrets.SecretKey, "the main file holds no secret")
	assert.NotContains(t, rendered, secrets.CipherPass)

	// PostgreSQL, whose archive_command (and archive-async's background
	// process) find the secrets through the include path in their
	// environment, as the database container's would.
	pg.run(pgBin+"/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--data-checksums", "--no-sync")
	settings := "listen_addresses = '127.0.0.1'\nport = " + strconv.Itoa(port) + "\nunix_socket_directories = '" + sock + "'\n" +
		PostgresConf(PostgresSettings(confPath, stanza, time.Minute))
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(settings)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	withInclude := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.Env = append(cmd.Env, "PGBACKREST_CONFIG_INCLUDE_PATH="+include)
		return cmd
	}
	run := func(cmd *exec.Cmd) string {
		t.Helper()
		out, err := withInclude(cmd).CombinedOutput()
		require.NoError(t, err, "%s:\n%s", strings.Join(cmd.Args, " "), out)
		return string(out)
	}
	pgLog := filepath.Join(base, "pg.log")
	t.Cleanup(func() { _ = pg.command(pgBin+"/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run() })
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(pgLog)
			t.Logf("PostgreSQL log:\n%s", log)
		}
	})
	run(pg.command(pgBin+"/pg_ctl", "-D", data, "-l", pgLog, "-w", "-t", "60", "start"))
	psql := func(port int, sql string) string {
		return strings.TrimSpace(pg.run(pgBin+"/psql", "-h", sock, "-p", strconv.Itoa(port), "-U", "postgres", "-X", "-At", "-c", sql))
	}
	const marker = "nbms-offhost-plaintext-marker"
	psql(port, "CREATE TABLE sites AS SELECT g AS id, '"+marker+"-' || g AS name FROM generate_series(1, 5000) g")
	pgbackrest := func(args ...string) string {
		t.Helper()
		return run(pg.command("pgbackrest", append([]string{"--config=" + confPath, "--stanza=" + stanza}, args...)...))
	}
	pgbackrest("stanza-create")
	pgbackrest("check") // a WAL switch, archived to both repositories
	pgbackrest("--repo=1", "--type=full", "backup")
	pgbackrest("--repo=2", "--type=full", "backup")
	psql(port, "INSERT INTO sites SELECT g, '"+marker+"-' || g FROM generate_series(5001, 5100) g")
	psql(port, "SELECT pg_switch_wal()")
	require.Eventually(t, func() bool {
		return psql(port, "SELECT last_archived_wal IS NOT NULL AND last_archived_wal >= last_failed_wal IS NOT FALSE AND archived_count >= 3 FROM pg_stat_archiver") == "t"
	}, time.Minute, 200*time.Millisecond, "the archiver pushed the switched segment")

	for _, repo := range []string{"1", "2"} {
		var stanzas []info
		require.NoError(t, json.Unmarshal([]byte(pgbackrest("--repo="+repo, "--output=json", "info")), &stanzas))
		require.Len(t, stanzas, 1)
		assert.Zero(t, stanzas[0].Status.Code, "repo%s: %s", repo, stanzas[0].Status.Message)
		require.Len(t, stanzas[0].Backup, 1, "repo%s: one full backup", repo)
		assert.Equal(t, "full", stanzas[0].Backup[0].Type)
		require.NotEmpty(t, stanzas[0].Archive, "repo%s", repo)
		assert.NotNil(t, stanzas[0].Archive[0].Max, "repo%s holds WAL", repo)
	}

	// Client-side encryption: every file in the bucket is OpenSSL's
	// salted aes-256-cbc format, and none holds the table's text.
	objects := s3.Objects(t, "nbms-backups")
	for _, object := range objects {
		content, err := os.ReadFile(filepath.Join(s3.Root, "nbms-backups", object))
		require.NoError(t, err)
		assert.True(t, bytes.HasPrefix(content, []byte("Salted__")), "%s is ciphertext", object)
		assert.False(t, bytes.Contains(content, []byte(marker)), "%s holds no plaintext", object)
	}
	assert.Greater(t, len(objects), 10, "the backup and the WAL are in the bucket")

	// The host is lost: repo2 alone restores every row archived, into a new
	// data directory, started on another port.
	run(pg.command(pgBin+"/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"))
	restored := dir("restored")
	pgbackrest("--repo=2", "--pg1-path="+restored, "restore")
	restoredPort := testsupport.FreePort(t)
	restoredLog := filepath.Join(base, "restored.log")
	t.Cleanup(func() { _ = pg.command(pgBin+"/pg_ctl", "-D", restored, "-m", "immediate", "-w", "stop").Run() })
	run(pg.command(pgBin+"/pg_ctl", "-D", restored, "-l", restoredLog, "-w", "-t", "120",
		"-o", "-c port="+strconv.Itoa(restoredPort)+" -c archive_mode=off", "start"))
	require.Eventually(t, func() bool {
		return psql(restoredPort, "SELECT pg_is_in_recovery()") == "f"
	}, 2*time.Minute, 200*time.Millisecond, "recovery from repo2's WAL ended")
	assert.Equal(t, "5100", psql(restoredPort, "SELECT count(*) FROM sites"), "every row archived before the loss is back")
}
