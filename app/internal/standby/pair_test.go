package standby_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/standby"
	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/infra/replication"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const stanza = "nbms"

// pair is a real primary and its warm standby, both PostgreSQL 15 run as
// the postgres OS user, made as production makes them: the primary
// archives WAL through pgBackRest 2.45 into repo1 (pgbackrest.Render,
// PostgresSettings) with replication's PrimarySettings, pg_hba line and
// SQL; the standby is restored from repo1's full backup by
// replication.RestoreArgs and runs with the primary's settings and its own
// pgbackrest.conf (the same file in production, where both containers
// have the same paths; here each has its data directory, port and
// socket).
type pair struct {
	t                *testing.T
	h                *testsupport.PGHost
	primary, standby *testsupport.PGCluster
	// primaryConf and standbyConf are their pgbackrest.conf files.
	primaryConf, standbyConf string
	params                   replication.Params
	superPassword            string
	// replicationPassword is the replication role's, verifier its SCRAM
	// verifier (what PrimarySQL was given).
	replicationPassword, verifier string
	// primaryConn and standbyConn are the status's connection strings:
	// postgres over TCP, its password in a password file.
	primaryConn, standbyConn string
	pool                     *pgxpool.Pool // the primary, as postgres
}

// newPair makes the pair; change, if any, changes the rendered
// replication.Params first.
func newPair(t *testing.T, change ...func(*replication.Params)) *pair {
	t.Helper()
	h := testsupport.NewPGHost(t, "nbms-standby-")
	p := &pair{t: t, h: h, primary: h.Cluster("primary"), standby: h.Cluster("standby"),
		superPassword: "postgres-" + testsupport.RandomWord(t)}
	repo := h.Dir("repo")
	conf := func(c *testsupport.PGCluster) string {
		rendered, err := pgbackrest.Render(pgbackrest.Params{
			Stanza: stanza, PGDataPath: c.Data, PGSocketPath: c.Sock, PGUser: "postgres", PGPort: c.Port,
			RepoPath: repo, LogPath: h.Dir(c.Name + "-pgbackrest-log"), LockPath: h.Dir(c.Name + "-pgbackrest-lock"),
			RetentionFull: 2, RetentionDiff: 6, ProcessMax: 2,
		})
		require.NoError(t, err)
		path := filepath.Join(h.Base, c.Name+"-pgbackrest.conf")
		h.WriteFile(path, rendered, 0o640)
		return path
	}
	p.primaryConf, p.standbyConf = conf(p.primary), conf(p.standby)
	p.params = replication.Params{
		Stanza: stanza, ConfigPath: p.standbyConf,
		PrimaryHost: "127.0.0.1", PrimaryPort: p.primary.Port,
		Role: conventions.ReplicationRole, Slot: conventions.StandbySlot,
		PassFile: filepath.Join(h.Dir("standby-secrets"), "replication.pgpass"), SSLMode: "disable",
		StandbyNetwork:   netip.MustParsePrefix("127.0.0.1/32"),
		MaxSlotWALKeepMB: replication.DefaultMaxSlotWALKeepMB,
	}
	for _, c := range change {
		c(&p.params)
	}

	// The primary: the database container's client authentication
	// (nbms-db-entrypoint) and the replication line.
	p.primary.InitDB(p.superPassword)
	hba, err := p.params.HBALine()
	require.NoError(t, err)
	h.WriteFile(filepath.Join(p.primary.Data, "pg_hba.conf"),
		"local all all peer\nlocal replication all peer\nhost all all all scram-sha-256\n"+hba, 0o600)
	primarySettings, err := p.params.PrimarySettings()
	require.NoError(t, err)
	p.primary.AppendConf(p.primary.ListenSettings() +
		pgbackrest.PostgresConf(pgbackrest.PostgresSettings(p.primaryConf, stanza, time.Minute)) +
		pgbackrest.PostgresConf(primarySettings))
	p.primary.Start()
	p.replicationPassword = "replication-" + testsupport.RandomWord(t)
	salt := make([]byte, 16)
	_, err = rand.Read(salt)
	require.NoError(t, err)
	p.verifier, err = replication.SCRAMVerifier(p.replicationPassword, salt)
	require.NoError(t, err)
	p.preparePrimary(p.primary, p.params)
	p.primary.Psql("CREATE TABLE probe (id bigint PRIMARY KEY, xid bigint NOT NULL, payload text NOT NULL)")

	// Its first full backup, as the backup scheduler takes it.
	p.pgbackrest(p.primaryConf, "stanza-create")
	p.pgbackrest(p.primaryConf, "check")
	p.pgbackrest(p.primaryConf, "--type=full", "backup")

	// The standby: its password file, the restore, the primary's settings.
	passFile, err := p.params.RenderPassFile(p.replicationPassword)
	require.NoError(t, err)
	h.WriteFile(p.params.PassFile, passFile, 0o600)
	args, err := p.params.RestoreArgs(false)
	require.NoError(t, err)
	h.Run("pgbackrest", args...)
	p.standby.AppendConf(p.standby.ListenSettings() +
		pgbackrest.PostgresConf(pgbackrest.PostgresSettings(p.standbyConf, stanza, time.Minute)) +
		pgbackrest.PostgresConf(primarySettings))
	p.standby.Start()
	p.primary.WaitFor("SELECT state FROM pg_stat_replication WHERE application_name = '"+conventions.StandbySlot+"'", "streaming", 2*time.Minute)

	// The status's way in: postgres over TCP, the password from a file.
	monitorPass := filepath.Join(h.Base, "monitor.pgpass")
	h.WriteFile(monitorPass, "127.0.0.1:*:*:postgres:"+p.superPassword+"\n", 0o600)
	p.primaryConn, p.standbyConn = connString(p.primary, "postgres", monitorPass), connString(p.standby, "postgres", monitorPass)
	p.pool, err = pgxpool.New(context.Background(), p.primary.URL("postgres", p.superPassword))
	require.NoError(t, err)
	t.Cleanup(p.pool.Close)
	return p
}

// preparePrimary runs params' PrimarySQL on c, as the deployed primary's
// start would: the replication role and the slot.
func (p *pair) preparePrimary(c *testsupport.PGCluster, params replication.Params) {
	p.t.Helper()
	sql, err := params.PrimarySQL(p.verifier)
	require.NoError(p.t, err)
	sqlFile := filepath.Join(p.h.Base, c.Name+"-primary.sql")
	p.h.WriteFile(sqlFile, sql, 0o600)
	p.h.Run(testsupport.PGBin+"/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
		"-h", c.Sock, "-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres", "-f", sqlFile)
}

// connString is a status connection string to c as user, the password
// from passFile.
func connString(c *testsupport.PGCluster, user, passFile string) string {
	return "host=127.0.0.1 port=" + strconv.Itoa(c.Port) + " dbname=postgres user=" + user + " sslmode=disable passfile=" + passFile
}

func (p *pair) pgbackrest(config string, args ...string) string {
	p.t.Helper()
	return p.h.Run("pgbackrest", append([]string{"--config=" + config, "--stanza=" + stanza}, args...)...)
}

// options are the status's options for both sides, with the defaults.
func (p *pair) options() standby.Options {
	return standby.Options{
		Primary: p.primaryConn, Standby: p.standbyConn, Slot: conventions.StandbySlot,
		MaxLagBytes: standby.DefaultMaxLagBytes, MaxLag: standby.DefaultMaxLag, Timeout: standby.DefaultTimeout,
	}
}

func (p *pair) status(o standby.Options) standby.Report {
	p.t.Helper()
	r, err := standby.Status(context.Background(), o)
	require.NoError(p.t, err)
	return r
}

// check is the named check of r; the test fails without it.
func check(t *testing.T, r standby.Report, name string) standby.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	out, _ := json.MarshalIndent(r, "", "  ")
	t.Fatalf("no check %q in the report:\n%s", name, out)
	return standby.Check{}
}

// writer commits one row of probe at a steady rate, each in its own
// transaction, recording the rows whose commit the server acknowledged
// (with their transaction ids) and the ones whose commit returned an
// error (in doubt: the commit may have happened).
type writer struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked map[int64]uint32 // id -> xid
	// ackedAt are the acknowledgement times, in order.
	ackedAt []time.Time
	inDoubt map[int64]bool
}

// startWriter writes a row every interval through conn until stopWriting.
func startWriter(t *testing.T, url string, interval time.Duration) *writer {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), acked: map[int64]uint32{}, inDoubt: map[int64]bool{}}
	payload := make([]byte, 1024)
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for id := int64(1); ; id++ {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			_, _ = rand.Read(payload)
			var xid int64
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := conn.QueryRow(ctx, "INSERT INTO probe (id, xid, payload) VALUES ($1, pg_current_xact_id()::text::bigint, $2) RETURNING xid",
				id, hex.EncodeToString(payload)).Scan(&xid)
			cancel()
			w.mu.Lock()
			if err == nil {
				w.acked[id] = uint32(xid)
				w.ackedAt = append(w.ackedAt, time.Now())
			} else {
				w.inDoubt[id] = true
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) stopWriting() {
	close(w.stop)
	<-w.done
}

// ackedCount is how many commits were acknowledged so far.
func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}
