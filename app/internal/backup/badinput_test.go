package backup_test

import (
	"bytes"
	"context"
	"net"
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

	"github.com/nbms-deploy/nbms/app/internal/backup"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const offHostBucket = "nbms-backups"

// offHost is a cluster of newCluster with production's second repository
// (repo2, rendered by infra/pgbackrest with its S3Repo) on a real S3
// server: versitygw over TLS with a certificate of a test CA, behind a TCP
// forwarder that stands for the backup relay (the stack's way off the
// host, which accepts the connection and passes it on).
type offHost struct {
	*cluster
	s3      *testsupport.S3
	relay   *testsupport.Forwarder
	ca      *testsupport.CA
	repo2   pgbackrest.S3Repo
	secrets pgbackrest.S3Secrets
}

func newOffHost(t *testing.T) *offHost {
	t.Helper()
	c := newCluster(t)
	ca := testsupport.NewCA(t, "NBMS test CA")
	caFile := filepath.Join(c.base, "s3-ca.pem")
	c.writeFile(caFile, ca.PEM)
	s3 := testsupport.StartS3(t, nil, filepath.Join(c.base, "s3"), testsupport.ClosedAddr(t), ca, []string{"localhost"}, offHostBucket)
	relay := testsupport.NewForwarder(t, s3.Addr)
	_, port, err := net.SplitHostPort(relay.Addr())
	require.NoError(t, err)
	relayPort, err := strconv.Atoi(port)
	require.NoError(t, err)
	spool := filepath.Join(c.base, "spool")
	require.NoError(t, os.Mkdir(spool, 0o700))
	require.NoError(t, os.Chown(spool, c.uid, c.gid))
	o := &offHost{
		cluster: c, s3: s3, relay: relay, ca: ca,
		repo2: pgbackrest.S3Repo{
			Endpoint: "localhost", Port: relayPort, Bucket: offHostBucket, Region: "us-east-1", Path: "/nbms",
			PathStyle: true, CAFile: caFile, RetentionFull: 2, RetentionDiff: 6, SpoolPath: spool,
		},
		secrets: pgbackrest.S3Secrets{AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CipherPass: "cipher-" + testsupport.RandomWord(t)},
	}
	// The bucket on a tmpfs of its own, which the "storage full" case
	// fills.
	mountTmpfs(t, filepath.Join(s3.Root, offHostBucket), "64m")
	o.configure(t, o.repo2, o.secrets)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(c.base, "log", drillStanza+"-archive-push-async.log"))
			t.Logf("archive-push-async log:\n%s", log)
		}
	})
	// Without --repo, stanza-create creates the stanza in both
	// repositories, repo2's encrypted with o.secrets.CipherPass. It takes
	// the archive lock, which archive-push:async holds while it runs
	// (PostgreSQL archives from the start): try until it is free.
	require.Eventually(t, func() bool {
		err = c.pgbackrest.StanzaCreate(context.Background())
		return err == nil || !strings.Contains(err.Error(), "ERROR: [050]: unable to acquire lock")
	}, time.Minute, 100*time.Millisecond)
	require.NoError(t, err)
	return o
}

// configure renders the cluster's pgbackrest.conf with repo2 as repo and
// secrets. Production keeps the secrets in an include file of their own
// (infra/pgbackrest's TestRealBackupToAnOffHostRepository runs that);
// here they go in [global] of the one file, which PostgreSQL's
// archive_command, started before repo2 existed, reads too.
//
// One timeout is the test's own, not production's: io-timeout=1 in
// [global] (production keeps pgBackRest's 60 s there), so that a backup
// to a repo2 that cannot be reached fails in seconds, not the 4 to 8
// minutes it takes at 60 s (measured by hand). archive-push and backup
// keep production's own timeouts (pgbackrest.ArchivePushIOTimeout and
// BackupArchiveTimeout, in their command sections, which win over
// [global]): what WAL does while repo2 is down is production's.
func (o *offHost) configure(t *testing.T, repo pgbackrest.S3Repo, secrets pgbackrest.S3Secrets) {
	t.Helper()
	p := o.params
	p.OffHost = &repo
	conf, err := pgbackrest.Render(p)
	require.NoError(t, err)
	secretConf, err := pgbackrest.RenderSecrets(secrets)
	require.NoError(t, err)
	const global = "[global]\n"
	require.True(t, strings.HasPrefix(secretConf, global))
	conf = strings.Replace(conf, global, global+"io-timeout=1\n"+strings.TrimPrefix(secretConf, global), 1)
	// Replaced whole (rename), never half-written: PostgreSQL's
	// archive_command may be reading it.
	tmp := o.conf + ".new"
	o.writeFile(tmp, conf)
	require.NoError(t, os.Rename(tmp, o.conf))
}

// psql runs sql in the cluster's database and returns its output.
func (o *offHost) psql(t *testing.T, sql string) string {
	t.Helper()
	return strings.TrimSpace(o.run(pgBin+"/psql", "-X", "-At", "-h", o.sock, "-p", strconv.Itoa(o.port), "-U", "postgres", "-d", drillDB, "-c", sql))
}

// waitArchived completes the current WAL segment and waits until
// PostgreSQL counts it archived: archive_command succeeds only once a
// segment is in both repositories, and the archiver goes in order, so
// nothing older is left behind either.
func (o *offHost) waitArchived(t *testing.T) {
	t.Helper()
	segment := o.psql(t, `SELECT pg_walfile_name(pg_current_wal_lsn())`)
	// Something to switch away from: pg_switch_wal does nothing in an
	// empty segment.
	o.psql(t, `CREATE TABLE IF NOT EXISTS wal_marks (at timestamptz); INSERT INTO wal_marks VALUES (now()); SELECT pg_switch_wal()`)
	require.Eventually(t, func() bool {
		return o.psql(t, `SELECT last_archived_wal >= '`+segment+`' FROM pg_stat_archiver`) == "t"
	}, 3*time.Minute, 200*time.Millisecond, "segment %s archived to both repositories", segment)
}

// waitAsyncIdle waits until no archive-push:async of this cluster runs.
// One that started while a case had repo2 broken goes on failing after
// the case mends it, and while it runs every archive_command fails at
// once (with the error it last recorded); after three such failures
// PostgreSQL's archiver waits a minute, which the next case's backup to
// repo1 would wait out.
func (o *offHost) waitAsyncIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
		require.NoError(t, err)
		for _, path := range cmdlines {
			cmdline, err := os.ReadFile(path) // gone since the glob: err
			if err == nil && bytes.Contains(cmdline, []byte("archive-push:async")) && bytes.Contains(cmdline, []byte("--config="+o.conf)) {
				return false
			}
		}
		return true
	}, 2*time.Minute, 100*time.Millisecond, "archive-push:async still runs")
}

// repoN is the cluster's pgBackRest for repository n alone (--repo=n).
func (o *offHost) repoN(n int) backup.PgBackRest {
	p := o.pgbackrest
	p.Repo = n
	return p
}

// backUpBoth runs one scheduled backup of type typ as production's
// scheduler does (--repo 1 --repo 2: the local repository first), with an
// alert URL, and returns each repository's log line and alert.
func (o *offHost) backUpBoth(t *testing.T, typ backup.Type) (lines map[int]map[string]any, alerts map[int]backup.Run) {
	t.Helper()
	alertURL, received := alertReceiver(t)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: o.pgbackrest, Repos: []int{1, 2}, AlertURL: alertURL,
		FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6",
	}, logger)
	require.NoError(t, err)
	runs := s.Backup(context.Background(), typ)
	require.Len(t, runs, 2)
	lines = map[int]map[string]any{}
	for _, line := range logLines(t, logs) {
		repo, ok := line["repo"].(float64)
		require.True(t, ok, "every line names its repository: %v", line)
		require.NotContains(t, lines, int(repo), "one line per repository")
		lines[int(repo)] = line
	}
	require.Len(t, lines, 2)
	alerts = map[int]backup.Run{}
	for _, a := range received() {
		alerts[a.Repo] = a
	}
	return lines, alerts
}

// TestOffHostFailuresAreNamed provokes, for real, each way the off-host
// repository can fail a scheduled backup: the repo2 backup fails with a
// log line (and an alert) whose cause names it, while the repo1 backup of
// the same run succeeds and repo1 keeps every backup it had.
func TestOffHostFailuresAreNamed(t *testing.T) {
	ctx := context.Background()
	o := newOffHost(t)

	// A full backup in each repository first: what each case's
	// differential builds on.
	lines, _ := o.backUpBoth(t, backup.Full)
	for repo := 1; repo <= 2; repo++ {
		require.Equal(t, "ok", lines[repo]["result"], "repo%d: %v", repo, lines[repo]["error"])
	}
	fullLabel := lines[1]["label"].(string)

	otherCA := testsupport.NewCA(t, "a CA repo2-storage-ca-file does not hold")
	tests := []struct {
		name string
		// provoke breaks repo2, with t.Cleanup to mend it.
		provoke func(t *testing.T)
		cause   string
		typ     backup.Type
	}{
		{"the store is down behind the relay", func(t *testing.T) {
			o.s3.Stop() // the relay accepts, finds nothing behind and closes
			t.Cleanup(func() { o.s3.Serve(t, "", "") })
		}, "repository unreachable", backup.Diff},
		{"nothing listens on the port", func(t *testing.T) {
			o.relay.Stop() // connection refused
			t.Cleanup(o.relay.Restart)
		}, "repository unreachable", backup.Diff},
		{"wrong secret key", func(t *testing.T) {
			secrets := o.secrets
			secrets.SecretKey = "wrong-" + testsupport.RandomWord(t)
			o.configure(t, o.repo2, secrets)
			t.Cleanup(func() { o.configure(t, o.repo2, o.secrets) })
		}, "credentials refused", backup.Diff},
		{"access key unknown to the store", func(t *testing.T) {
			secrets := o.secrets
			secrets.AccessKey = "unknown-" + testsupport.RandomWord(t)
			o.configure(t, o.repo2, secrets)
			t.Cleanup(func() { o.configure(t, o.repo2, o.secrets) })
		}, "stanza not found: wrong bucket, path or access key", backup.Diff},
		{"wrong cipher passphrase", func(t *testing.T) {
			secrets := o.secrets
			secrets.CipherPass = "another-" + testsupport.RandomWord(t)
			o.configure(t, o.repo2, secrets)
			t.Cleanup(func() { o.configure(t, o.repo2, o.secrets) })
		}, "wrong cipher passphrase", backup.Diff},
		{"expired certificate", func(t *testing.T) {
			chain, key := o.ca.IssueExpired(t, "localhost")
			o.s3.Serve(t, chain, key)
			t.Cleanup(func() { o.s3.Serve(t, "", "") })
		}, "certificate not trusted or expired", backup.Diff},
		{"certificate of another CA", func(t *testing.T) {
			chain, key := otherCA.Issue(t, "localhost")
			o.s3.Serve(t, chain, key)
			t.Cleanup(func() { o.s3.Serve(t, "", "") })
		}, "certificate not trusted or expired", backup.Diff},
		{"certificate for another host name", func(t *testing.T) {
			chain, key := o.ca.Issue(t, "s3.example.org")
			o.s3.Serve(t, chain, key)
			t.Cleanup(func() { o.s3.Serve(t, "", "") })
		}, "certificate names another host", backup.Diff},
		{"storage full", func(t *testing.T) {
			// Fill the bucket's tmpfs but for 1 MiB: room for WAL, not for
			// a full backup. versitygw answers the write that finds its
			// disk full with 507. The WAL of the cases above first, or it
			// would take that room.
			o.waitArchived(t)
			ballast := filepath.Join(o.s3.Root, offHostBucket, "ballast")
			fill(t, ballast, 1<<20)
			t.Cleanup(func() { require.NoError(t, os.Remove(ballast)) })
		}, "repository storage full", backup.Full},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := tt.typ
			o.waitAsyncIdle(t)
			tt.provoke(t)
			lines, alerts := o.backUpBoth(t, typ)

			// repo2: failed, and named.
			assert.Equal(t, "ERROR", lines[2]["level"])
			assert.Equal(t, "failed", lines[2]["result"])
			assert.Equal(t, tt.cause, lines[2]["cause"])
			assert.Contains(t, lines[2]["error"], "pgbackrest --type="+string(typ)+" backup: exit status", "pgBackRest's own error is kept")
			require.Contains(t, alerts, 2, "the failure is alerted")
			assert.Equal(t, tt.cause, alerts[2].Cause, "the alert names the cause too")
			t.Logf("repo2 error: %s", lines[2]["error"])

			// repo1: backed up in the same run, its earlier backups intact.
			require.Equal(t, "ok", lines[1]["result"], "repo1: %v", lines[1]["error"])
			assert.NotContains(t, lines[1], "cause")
			assert.NotContains(t, alerts, 1)
			label := lines[1]["label"].(string)
			if typ == backup.Diff {
				assert.Regexp(t, `^`+fullLabel+`_\d{8}-\d{6}D$`, label)
			}
			stanzas, err := o.repoN(1).Info(ctx)
			require.NoError(t, err)
			require.Len(t, stanzas, 1)
			assert.Equal(t, 0, stanzas[0].Status.Code, "repo1: %s", stanzas[0].Status.Message)
			var labels []string
			for _, b := range stanzas[0].Backup {
				labels = append(labels, b.Label)
			}
			assert.Contains(t, labels, fullLabel, "repo1 keeps its full backup")
			assert.Contains(t, labels, label)
		})
	}
}

// fill writes path until its file system is full, then frees leave
// bytes of it.
func fill(t *testing.T, path string, leave int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 1<<16)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Truncate(max(size-leave, 0)))
}

// mountTmpfs mounts a tmpfs of size (mount's size=) on dir, for the
// test's duration.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, "mount (the tests run as root): %s", out)
	t.Cleanup(func() {
		// Lazy: a pgBackRest process still finishing a request may keep
		// versitygw's file open; the tmpfs goes when it is closed.
		if out, err := exec.Command("umount", "--lazy", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// TestWALWhileOffHostIsUnreachable: with repo2 unreachable, PostgreSQL's
// archive_command (archive-push to both repositories) fails, so the
// archiver keeps the segments and retries them, but each reaches repo1,
// the database takes writes and a scheduled backup to repo1 succeeds
// while repo2's fails, at production's archive-push and backup timeouts.
// Once repo2 is back a retry succeeds and repo2 has every segment: the gap
// is reported (the archiver's failures, the scheduler's repo2 line) and
// caught up.
func TestWALWhileOffHostIsUnreachable(t *testing.T) {
	ctx := context.Background()
	o := newOffHost(t)
	psql := func(sql string) string {
		t.Helper()
		return o.psql(t, sql)
	}
	inRepo1 := func(segment string) bool {
		matches, err := filepath.Glob(filepath.Join(o.repo, "archive", drillStanza, "15-1", segment[:16], segment+"-*"))
		require.NoError(t, err)
		return len(matches) == 1
	}
	inRepo2 := func(segment string) bool {
		for _, object := range o.s3.Objects(t, offHostBucket) {
			if strings.HasPrefix(filepath.Base(object), segment+"-") {
				return true
			}
		}
		return false
	}
	// Everything so far is in both repositories: the first segment to
	// fail is one completed after repo2 went.
	o.waitArchived(t)
	archived := psql(`SELECT last_archived_wal FROM pg_stat_archiver`)

	o.s3.Stop() // behind the relay: the production case
	psql(`CREATE TABLE written_while_repo2_is_down (id int)`)
	// Three segments, one after the other: each reaches repo1 although
	// every archive-push of it fails on repo2 (how long each took is
	// logged: the runbook's figures).
	var segments []string
	for i := 1; i <= 3; i++ {
		segment := psql(`SELECT pg_walfile_name(pg_current_wal_lsn())`)
		psql(`INSERT INTO written_while_repo2_is_down VALUES (` + strconv.Itoa(i) + `); SELECT pg_switch_wal()`)
		switched := time.Now()
		require.Eventually(t, func() bool { return inRepo1(segment) }, 5*time.Minute, 200*time.Millisecond,
			"segment %s reaches repo1 while repo2 is down", segment)
		t.Logf("segment %s reached repo1 %s after it was completed, repo2 down", segment, time.Since(switched).Round(100*time.Millisecond))
		segments = append(segments, segment)
	}
	last := segments[len(segments)-1]
	assert.Greater(t, psql(`SELECT last_failed_wal FROM pg_stat_archiver`), archived, "archive_command fails")
	for _, segment := range segments {
		assert.False(t, inRepo2(segment), segment)
		assert.FileExists(t, filepath.Join(o.data, "pg_wal", "archive_status", segment+".ready"), "PostgreSQL keeps %s for a retry", segment)
	}
	assert.Equal(t, "f", psql(`SELECT coalesce(last_archived_wal >= '`+segments[0]+`', false) FROM pg_stat_archiver`), "PostgreSQL has not counted them archived")
	assert.Equal(t, "3", psql(`SELECT count(*) FROM written_while_repo2_is_down`), "the database takes writes")

	// A scheduled run: the local backup waits for its WAL to reach repo1
	// (BackupArchiveTimeout) and succeeds; repo2's fails, named.
	started := time.Now()
	lines, _ := o.backUpBoth(t, backup.Full)
	t.Logf("scheduled run with repo2 down: %s", time.Since(started).Round(100*time.Millisecond))
	assert.Equal(t, "ok", lines[1]["result"], "repo1's backup while repo2 is down: %v", lines[1]["error"])
	assert.Equal(t, "failed", lines[2]["result"])
	assert.Equal(t, "repository unreachable", lines[2]["cause"], "%v", lines[2]["error"])

	o.s3.Serve(t, "", "")
	back := time.Now()
	require.Eventually(t, func() bool {
		return psql(`SELECT last_archived_wal >= '`+last+`' FROM pg_stat_archiver`) == "t"
	}, 5*time.Minute, 200*time.Millisecond, "retries archive %s to repo2", last)
	t.Logf("PostgreSQL counted %s archived %s after repo2 came back", last, time.Since(back).Round(100*time.Millisecond))
	for _, segment := range segments {
		assert.True(t, inRepo2(segment), "%s caught up in repo2", segment)
		assert.NoFileExists(t, filepath.Join(o.data, "pg_wal", "archive_status", segment+".ready"))
	}
	stanzas, err := o.repoN(2).Info(ctx)
	require.NoError(t, err)
	require.Len(t, stanzas, 1)
	require.NotEmpty(t, stanzas[0].Archive)
	require.NotNil(t, stanzas[0].Archive[0].Max)
	assert.GreaterOrEqual(t, *stanzas[0].Archive[0].Max, last, "repo2's archive reaches the last segment")
}
