package pgbackrest

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// prodParams matches the database container's layout: the Debian paths of
// the PostGIS image, the repository on its own volume.
func prodParams() Params {
	return Params{
		Stanza:        "nbms",
		PGDataPath:    "/var/lib/postgresql/data",
		PGSocketPath:  "/var/run/postgresql",
		PGUser:        "postgres",
		RepoPath:      "/var/lib/pgbackrest",
		LogPath:       "/var/log/pgbackrest",
		LockPath:      "/tmp/pgbackrest",
		PGPort:        5432,
		RetentionFull: 2,
		RetentionDiff: 6,
		ProcessMax:    2,
	}
}

const prodConfigPath = "/etc/pgbackrest/pgbackrest.conf"

func TestRenderGolden(t *testing.T) {
	conf, err := Render(prodParams())
	require.NoError(t, err)
	again, err := Render(prodParams())
	require.NoError(t, err)
	require.Equal(t, conf, again, "Render must be deterministic")

	pgConf := PostgresConf(PostgresSettings(prodConfigPath, "nbms", time.Minute))
	require.Equal(t, pgConf, PostgresConf(PostgresSettings(prodConfigPath, "nbms", time.Minute)), "PostgresConf must be deterministic")

	for name, got := range map[string]string{"pgbackrest.conf.golden": conf, "postgresql.conf.golden": pgConf} {
		path := filepath.Join("testdata", name)
		if *update {
			require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		}
		want, err := os.ReadFile(path)
		require.NoError(t, err, "run go test -update to create it")
		assert.Equal(t, string(want), got, "%s changed; review and run go test -update", name)
	}
}

// offHost is a valid off-host repository.
func offHost() *S3Repo {
	return &S3Repo{
		Endpoint: "s3.example.org", Bucket: "nbms-backups", Region: "eu-west-1", Path: "/nbms", PathStyle: true,
		CAFile: "/etc/nbms/s3-ca.pem", RetentionFull: 4, RetentionDiff: 6, SpoolPath: "/var/spool/pgbackrest",
	}
}

// An off-host repository is repo2 on S3, encrypted, with WAL pushed
// asynchronously to both repositories; its secrets are only in the
// include file.
func TestRenderOffHost(t *testing.T) {
	p := prodParams()
	p.OffHost = offHost()
	conf, err := Render(p)
	require.NoError(t, err)
	local, err := Render(prodParams())
	require.NoError(t, err)
	global, stanza, _ := strings.Cut(conf, "\n\n["+p.Stanza+"]")
	localGlobal, localStanza, _ := strings.Cut(local, "\n\n["+p.Stanza+"]")
	assert.Equal(t, localStanza, stanza, "the stanza section is the same")
	assert.Equal(t, localGlobal+`
archive-async=y
spool-path=/var/spool/pgbackrest
repo2-type=s3
repo2-path=/nbms
repo2-s3-endpoint=s3.example.org
repo2-s3-port=443
repo2-s3-bucket=nbms-backups
repo2-s3-region=eu-west-1
repo2-s3-uri-style=path
repo2-storage-ca-file=/etc/nbms/s3-ca.pem
repo2-cipher-type=aes-256-cbc
repo2-retention-full-type=count
repo2-retention-full=4
repo2-retention-diff=6

[global:archive-push]
io-timeout=5

[global:backup]
archive-timeout=300`, global)

	secrets, err := RenderSecrets(S3Secrets{AccessKey: "AKIAEXAMPLE", SecretKey: "s3cr3t/Key+x", CipherPass: "pass-phrase-x"})
	require.NoError(t, err)
	assert.Equal(t, "[global]\nrepo2-s3-key=AKIAEXAMPLE\nrepo2-s3-key-secret=s3cr3t/Key+x\nrepo2-cipher-pass=pass-phrase-x\n", secrets)
	for _, bad := range []S3Secrets{
		{SecretKey: "s", CipherPass: "c"},
		{AccessKey: "a", SecretKey: "two words", CipherPass: "c"},
		{AccessKey: "a", SecretKey: "s", CipherPass: "c\nrepo2-type=posix"},
	} {
		_, err := RenderSecrets(bad)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "words", "the message never quotes a secret")
		assert.NotContains(t, err.Error(), "posix")
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Params)
		want   []string
	}{
		{"production params", func(*Params) {}, nil},
		{"every problem at once", func(p *Params) { *p = Params{} }, []string{
			"Stanza:", "PGDataPath:", "PGSocketPath:", "RepoPath:", "LogPath:", "LockPath:", "PGUser:", "PGPort:",
			"RetentionFull:", "RetentionDiff:", "ProcessMax:",
		}},
		{"stanza that would open an INI section", func(p *Params) { p.Stanza = "nbms]\n[x" }, []string{"Stanza:"}},
		{"stanza with a space", func(p *Params) { p.Stanza = "nbms prod" }, []string{"Stanza:"}},
		{"relative data path", func(p *Params) { p.PGDataPath = "data" }, []string{"PGDataPath:"}},
		{"path with a newline", func(p *Params) { p.LogPath = "/var/log\nrepo1-path=/tmp" }, []string{"LogPath:"}},
		{"unclean path", func(p *Params) { p.LockPath = "/tmp/../etc" }, []string{"LockPath:"}},
		{"repository inside the data directory", func(p *Params) { p.RepoPath = p.PGDataPath + "/backup" }, []string{"RepoPath: "}},
		{"role name with a quote", func(p *Params) { p.PGUser = "post'gres" }, []string{"PGUser:"}},
		{"port out of range", func(p *Params) { p.PGPort = 70000 }, []string{"PGPort:"}},
		{"no full backup kept", func(p *Params) { p.RetentionFull = 0 }, []string{"RetentionFull:"}},
		{"too many processes", func(p *Params) { p.ProcessMax = 1000 }, []string{"ProcessMax:"}},
		{"off-host repository", func(p *Params) { p.OffHost = offHost() }, nil},
		{"off-host repository, every problem at once", func(p *Params) { p.OffHost = &S3Repo{Port: -1} }, []string{
			"OffHost.Endpoint:", "OffHost.Port:", "OffHost.Bucket:", "OffHost.Region:", "OffHost.Path:",
			"OffHost.RetentionFull:", "OffHost.RetentionDiff:", "OffHost.SpoolPath:",
		}},
		{"off-host endpoint with a scheme", func(p *Params) { p.OffHost = offHost(); p.OffHost.Endpoint = "https://s3.example.org" }, []string{"OffHost.Endpoint:"}},
		{"off-host endpoint as an address", func(p *Params) { p.OffHost = offHost(); p.OffHost.Endpoint = "192.0.2.10" }, []string{"OffHost.Endpoint:"}},
		{"off-host bucket in capitals", func(p *Params) { p.OffHost = offHost(); p.OffHost.Bucket = "NBMS" }, []string{"OffHost.Bucket:"}},
		{"off-host CA file with a newline", func(p *Params) { p.OffHost = offHost(); p.OffHost.CAFile = "/ca.pem\nrepo2-type=posix" }, []string{"OffHost.CAFile:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := prodParams()
			tc.change(&p)
			err := p.Validate()
			_, renderErr := Render(p)
			if tc.want == nil {
				require.NoError(t, err)
				require.NoError(t, renderErr)
				return
			}
			require.Error(t, err)
			assert.Equal(t, err.Error(), renderErr.Error(), "Render refuses what Validate refuses")
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestArchiveCommand(t *testing.T) {
	cases := []struct {
		configPath, stanza, want string
	}{
		{prodConfigPath, "nbms", "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=nbms archive-push %p"},
		{"/etc/pg backrest.conf", "nbms", "pgbackrest '--config=/etc/pg backrest.conf' --stanza=nbms archive-push %p"},
		{"/etc/it's.conf", "nbms", `pgbackrest '--config=/etc/it'\''s.conf' --stanza=nbms archive-push %p`},
		{"/etc/100%.conf", "nbms", "pgbackrest --config=/etc/100%%.conf --stanza=nbms archive-push %p"},
		{"/etc/$HOME;rm -rf", "nbms", `pgbackrest '--config=/etc/$HOME;rm -rf' --stanza=nbms archive-push %p`},
	}
	for _, tc := range cases {
		t.Run(tc.configPath, func(t *testing.T) {
			assert.Equal(t, tc.want, ArchiveCommand(tc.configPath, tc.stanza))
			assert.Equal(t, tc.want, PostgresSettings(tc.configPath, tc.stanza, time.Minute)["archive_command"])
		})
	}
}

func TestPostgresConfQuoting(t *testing.T) {
	got := PostgresConf(map[string]string{"b": `it's`, "a": `back\slash`, "c": "plain"})
	assert.Equal(t, "a = 'back\\\\slash'\nb = 'it''s'\nc = 'plain'\n", got)
}

// FuzzArchiveCommand runs the command the way PostgreSQL does: replace %p
// and %%, then /bin/sh -c. A stand-in pgbackrest function prints its
// arguments, which must be exactly the intended ones, whatever the path.
func FuzzArchiveCommand(f *testing.F) {
	f.Add(prodConfigPath, "nbms")
	f.Add("/tmp/it's 100% conf/pgbackrest.conf", "nbms")
	f.Add("/tmp/$(touch /tmp/pwned)`id`;|&\\\"\n", "a-b_c")
	f.Add("/tmp/%p %f %%", "x")
	f.Fuzz(func(t *testing.T, configPath, stanza string) {
		if strings.ContainsRune(configPath+stanza, 0) {
			return // no argv entry can hold a NUL byte
		}
		const wal = "pg_wal/000000010000000000000001"
		command := substitutePercent(ArchiveCommand(configPath, stanza), wal)
		script := `pgbackrest() { for a in "$@"; do printf '%s\0' "$a"; done; }; ` + command
		out, err := exec.Command("/bin/sh", "-c", script).Output()
		require.NoError(t, err, "command: %s", command)
		want := []string{"--config=" + configPath, "--stanza=" + stanza, "archive-push", wal}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		require.Equal(t, want, got, "command: %s", command)
	})
}

// substitutePercent is PostgreSQL 15's archive_command expansion: %p is the
// WAL path, %f its file name, %% a literal %, any other % is kept.
func substitutePercent(command, walPath string) string {
	var b bytes.Buffer
	for i := 0; i < len(command); i++ {
		if command[i] == '%' && i+1 < len(command) {
			switch command[i+1] {
			case 'p':
				b.WriteString(walPath)
				i++
				continue
			case 'f':
				b.WriteString(filepath.Base(walPath))
				i++
				continue
			case '%':
				b.WriteByte('%')
				i++
				continue
			}
		}
		b.WriteByte(command[i])
	}
	return b.String()
}
