package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/driver"
)

// The disaster recovery drills. The host is lost: every container of the
// stack killed (no clean shutdown), every volume, network and image of it
// removed, and its Pulumi state deleted. What is left is what the backup
// runbook tells the operator to keep off the host: the stack file, the
// state's passphrase, the TLS certificate and key, the repository's keys
// and passphrase, and the off-host repository itself (the S3 server in
// its network namespace). `nbms-deploy recover` brings the stack back from
// that alone.

// The drill's rows: a table in the app's database, written one committed
// row at a time by a procedure (COMMIT inside a CALL), each with its
// commit-time clock and the WAL position of its insert.
const drillSchema = `
CREATE TABLE IF NOT EXISTS dr_drill (
	id bigserial PRIMARY KEY,
	batch text NOT NULL,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	lsn pg_lsn NOT NULL DEFAULT pg_current_wal_insert_lsn()
);
CREATE OR REPLACE PROCEDURE dr_drill_write(name text, n int, pause float8) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..n LOOP
		INSERT INTO dr_drill (batch) VALUES (name);
		COMMIT;
		PERFORM pg_sleep(pause);
	END LOOP;
END $$;`

// rtoGoal is the recovery time objective on this machine for the
// e2e database: an empty engine to /readyz 200.
const rtoGoal = 5 * time.Minute

// sql runs statements as postgres in the app's database and returns the
// output (unaligned, tuples only), trimmed.
func sql(t *testing.T, statements string) string {
	t.Helper()
	out, err := execIn(t, conventions.RoleDB, "", "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "nbms",
		"-v", "ON_ERROR_STOP=1", "-Atc", statements)
	require.NoError(t, err)
	return strings.TrimSpace(out)
}

// keepPassphrase writes the off-host repository's passphrase where the
// operator keeps it, away from the host, and returns the file.
func (s *stack) keepPassphrase(t *testing.T, passphrase string) string {
	dir := filepath.Join(s.dir, "kept-off-host")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	file := filepath.Join(dir, "backup-cipher-pass")
	require.NoError(t, os.WriteFile(file, []byte(passphrase+"\n"), 0o600))
	return file
}

// awaitArchived waits until PostgreSQL reports the WAL segment archived
// (to both repositories: archive-async reports success once each has it).
func awaitArchived(t *testing.T, segment string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for sql(t, fmt.Sprintf("SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver", segment)) != "t" {
		require.True(t, time.Now().Before(deadline), "segment %s not archived within 2 minutes: %s", segment,
			sql(t, "SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver"))
		time.Sleep(time.Second)
	}
}

// segmentEnd is the WAL position where a 16 MB segment ends, from the name
// of the last file PostgreSQL archived: a segment, or a backup history file
// named after the segment its backup started in (000000020000000000000044.000000E8.backup),
// which the archiver, going oldest name first, took after that segment. A
// timeline history file (00000003.history) names no segment: 0/0.
func segmentEnd(t *testing.T, archived string) string {
	t.Helper()
	if len(archived) < 24 {
		t.Logf("the last archived file, %s, names no segment", archived)
		return "0/0"
	}
	segment := archived[:24]
	log, err := strconv.ParseUint(segment[8:16], 16, 32)
	require.NoError(t, err)
	seg, err := strconv.ParseUint(segment[16:24], 16, 32)
	require.NoError(t, err)
	end := log<<32 + (seg+1)*16<<20
	return fmt.Sprintf("%X/%X", end>>32, end&0xFFFFFFFF)
}

// loseHost destroys the host's side of the stack as a dead machine would:
// the containers killed, the volumes, networks and images gone, the state
// deleted. It returns when it happened.
func (s *stack) loseHost(t *testing.T) time.Time {
	lost := time.Now()
	removeStackObjects(t) // docker rm -f: SIGKILL, then the volumes
	for _, kind := range []string{"container", "volume", "network"} {
		require.Empty(t, stackObjects(t, kind), "no %s of the stack is left", kind)
	}
	state := filepath.Join(s.dir, "state")
	require.NoError(t, os.RemoveAll(state))
	require.NoError(t, os.MkdirAll(state, 0o700))
	return lost
}

// recoverStack runs `nbms-deploy recover --to to` as the runbook says and
// returns its wall time: the recovery time, from an engine without the
// stack to /readyz 200 (the driver's post-deploy probe).
func (s *stack) recoverStack(t *testing.T, label, stackFile, to string) time.Duration {
	start := time.Now()
	code, out := s.runBinary(label, driver.Recover, stackFile, "--to", to)
	took := time.Since(start)
	require.Equal(t, driver.ExitOK, code, tail(out, 80))
	assert.Contains(t, out, "Recovering stack "+stackName+" from its off-host repository")
	assert.Contains(t, out, "Probe: ready after")
	return took
}

// checkRecovered checks a recovered stack from the outside: every
// container healthy, the restore one-shot hardened and done, the app
// serving reads and logged-in writes, and the backup schedule resumed
// into both repositories with WAL archiving working. It returns what the
// restore said it recovered.
func (s *stack) checkRecovered(t *testing.T, since time.Time) string {
	s.waitHealthy(t, 3*time.Minute)
	restore := inspect(t, container(conventions.RoleRestore))
	assert.Equal(t, "exited", restore.State.Status)
	assert.Equal(t, 0, restore.State.ExitCode)
	assert.Equal(t, "999:999", restore.Config.User, "the restore runs as postgres")
	assert.True(t, restore.HostConfig.ReadonlyRootfs, "read-only root")
	assert.Contains(t, restore.HostConfig.CapDrop, "ALL")
	assert.Contains(t, restore.HostConfig.SecurityOpt, "no-new-privileges:true")
	var networks []string
	for name := range restore.NetworkSettings.Networks {
		networks = append(networks, name)
	}
	assert.Equal(t, []string{conventions.BackupNetwork(stackName)}, networks, "only the way to the off-host repository")
	logs, err := exec.Command("docker", "logs", container(conventions.RoleRestore)).CombinedOutput()
	require.NoError(t, err)
	var recovered string
	for line := range strings.SplitSeq(string(logs), "\n") {
		if strings.HasPrefix(line, "recovered: ") {
			recovered = line
		}
	}
	require.NotEmpty(t, recovered, "the restore reports what it recovered:\n%s", tail(string(logs), 40))

	// Reads, and the account from before the loss logs in and writes.
	resp, body := s.do("GET", "/api/public/indicators/"+indicatorCode, nil, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), indicatorName, "the indicator written through the edge before the loss")
	session := s.login(t)
	code := fmt.Sprintf("E2E-DR-%d", time.Now().UnixNano())
	resp, body = s.do("POST", "/api/indicators", strings.NewReader(fmt.Sprintf(`{"code":%q,"title":"Written after a recovery","unit":"%%","published":true}`, code)), s.writeHeader(session))
	assert.Equal(t, http.StatusCreated, resp.StatusCode, string(body))

	// The schedule resumes: a full backup in each repository (the local
	// one was lost with the host), and WAL archiving to both.
	for _, repo := range []string{"1", "2"} {
		info, _ := awaitFullBackup(t, repo, since, 3*time.Minute)
		assert.Equal(t, 0, info[0].Status.Code, "repo%s: %s", repo, info[0].Status.Message)
	}
	assert.Equal(t, "0", sql(t, "SELECT failed_count FROM pg_stat_archiver"), "no archive_command failed since the recovery")
	return recovered
}

// drillPointInTime: rows before a target time and rows after it, the
// host lost once all are archived, the stack recovered to the target:
// exactly the rows before it are back. The first recovery also checks the
// refusals around it: recover of a stack that has its database, and the
// updates after it without the passphrase it was given.
func (s *stack) drillPointInTime(t *testing.T, stackFile, passphrase string) {
	passFile := s.keepPassphrase(t, passphrase)
	code, out := s.runBinary("recover.refused", driver.Recover, stackFile, "--secret-file", "backupCipherPass="+passFile)
	assert.Equal(t, driver.ExitUsage, code, tail(out, 40))
	assert.Contains(t, out, "stack "+stackName+" has a database in its state", tail(out, 40))

	sql(t, drillSchema)
	sql(t, "CALL dr_drill_write('before', 300, 0.005)")
	time.Sleep(1500 * time.Millisecond)
	target := sql(t, `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)
	time.Sleep(1500 * time.Millisecond)
	sql(t, "CALL dr_drill_write('after', 300, 0.005)")
	require.Equal(t, "after=300,before=300", sql(t, "SELECT string_agg(batch || '=' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM dr_drill GROUP BY batch) c"))
	awaitArchived(t, sql(t, "SELECT pg_walfile_name(pg_switch_wal())"))

	s.loseHost(t)
	s.cipherPassFile = passFile // from now on every run gives it, as the runbook says
	since := time.Now()
	rto := s.recoverStack(t, "recover.point-in-time", stackFile, target)
	assert.Equal(t, "before=300", sql(t, "SELECT string_agg(batch || '=' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM dr_drill GROUP BY batch) c"),
		"exactly the rows committed before %s", target)
	assert.Equal(t, "t", sql(t, fmt.Sprintf("SELECT max(at) < '%s' FROM dr_drill", target)))
	recovered := s.checkRecovered(t, since)
	at, err := time.Parse(time.RFC3339Nano, target)
	require.NoError(t, err)
	assert.Contains(t, recovered, "target "+at.Format("2006-01-02 15:04:05.999999")+"+00;", "the restore's target is the one given")
	assert.LessOrEqual(t, rto, rtoGoal, "RTO goal")
	s.figures.Recovery["pointInTime"] = map[string]any{
		"rtoSeconds": round1(rto.Seconds()), "target": target, "rowsBefore": 300, "rowsAfter": 300, "rowsRecovered": 300, "restore": recovered,
	}

	// An update without the passphrase is refused before anything runs;
	// with it, the next up only removes the restore one-shot.
	s.cipherPassFile = ""
	code, out = s.runBinary("up.without-passphrase", driver.Up, stackFile)
	s.cipherPassFile = passFile
	assert.Equal(t, driver.ExitUsage, code, tail(out, 40))
	assert.Contains(t, out, "give it again with --secret-file backupCipherPass=FILE", tail(out, 40))
	res, err := s.run("up.after-recovery", driver.Up, stackFile)
	require.NoError(t, err)
	assert.Equal(t, []string{conventions.RoleRestore}, changedResources(res), "the restore one-shot goes, nothing else changes:%s", describeChanges(res))
}

// drillLatest: writes go on, the host is lost, the stack is recovered
// with every archived transaction. Every row whose WAL segment was
// archived before the loss is back; the rows lost are the recovery point
// (RPO), which archive_timeout bounds.
func (s *stack) drillLatest(t *testing.T, stackFile string) {
	archiveTimeout := 60 * time.Second // Pulumi.e2e.yaml's nbms:backup.archiveTimeout
	// About 70 rows a second (each a transaction), for longer than
	// archive_timeout so that at least one segment is switched by it.
	writer := exec.Command("docker", "exec", container(conventions.RoleDB), "psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "nbms",
		"-c", "CALL dr_drill_write('stream', 1000000, 0.01)")
	require.NoError(t, writer.Start())
	time.Sleep(archiveTimeout + 15*time.Second)
	// The writer stops just before the loss, so that what was committed is
	// known exactly; the unarchived tail stays unarchived.
	require.Equal(t, "t", sql(t, "SELECT bool_or(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'CALL dr_drill_write(''stream''%'"))
	_ = writer.Wait() // canceled: its last insert rolled back, the others are committed
	committed := strings.Split(sql(t, `SELECT count(*), min(id), max(id), to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM dr_drill WHERE batch = 'stream'`), "|")
	require.Len(t, committed, 4)
	archived := sql(t, "SELECT last_archived_wal FROM pg_stat_archiver")
	// Rows inserted well before the end of the last archived segment (their
	// commit records follow within bytes) are in the archive.
	mustReturn := sql(t, fmt.Sprintf("SELECT count(*) FROM dr_drill WHERE batch = 'stream' AND lsn < '%s'::pg_lsn - 8192", segmentEnd(t, archived)))
	lost := s.loseHost(t)

	since := time.Now()
	rto := s.recoverStack(t, "recover.latest", stackFile, "latest")
	back := strings.Split(sql(t, `SELECT count(*), min(id), max(id), to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM dr_drill WHERE batch = 'stream'`), "|")
	require.Len(t, back, 4)
	n := func(s string) int {
		v, err := strconv.Atoi(s)
		require.NoError(t, err)
		return v
	}
	ts := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	assert.Equal(t, "before=300", sql(t, "SELECT 'before=' || count(*) FROM dr_drill WHERE batch = 'before'"), "the rows of the first recovery")
	assert.GreaterOrEqual(t, n(back[0]), n(mustReturn), "every row in an archived segment (%s) is back", archived)
	assert.LessOrEqual(t, n(back[0]), n(committed[0]))
	assert.Equal(t, committed[1], back[1], "from the first row on")
	assert.Equal(t, n(back[2])-n(back[1])+1, n(back[0]), "with no gap: a prefix of what was committed")
	rpo := ts(committed[3]).Sub(ts(back[3]))
	rowsLost := n(committed[0]) - n(back[0])
	t.Logf("RPO: %d of %d rows lost, %.1f s of writes (archive_timeout %s); RTO %.1f s", rowsLost, n(committed[0]), rpo.Seconds(), archiveTimeout, rto.Seconds())
	// archive_timeout, plus the push of the last segment to both
	// repositories.
	assert.LessOrEqual(t, rpo, archiveTimeout+15*time.Second, "RPO goal: archive_timeout")
	assert.LessOrEqual(t, rto, rtoGoal, "RTO goal")
	recovered := s.checkRecovered(t, since)
	s.figures.Recovery["latest"] = map[string]any{
		"rtoSeconds": round1(rto.Seconds()), "rpoSeconds": round1(rpo.Seconds()), "rowsCommitted": n(committed[0]), "rowsRecovered": n(back[0]),
		"rowsLost": rowsLost, "rowsInArchivedSegments": n(mustReturn), "lastArchivedSegment": archived, "lostAt": lost.UTC().Format(time.RFC3339),
		"restore": recovered,
	}
}
