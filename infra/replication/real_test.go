package replication

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// TestRealPrimary runs the rendered primary side on a real PostgreSQL 15:
// the SQL (twice: it is idempotent) creates the role and the slot; the
// verifier is the one PostgreSQL itself makes for the same password and
// salt; the role logs in with SCRAM through the password file (psql,
// libpq) and through pgx; the pg_hba line lets it replicate from the
// standby's network only; DropSlotSQL removes the slot.
func TestRealPrimary(t *testing.T) {
	h := testsupport.NewPGHost(t, "nbms-replication-")
	primary := h.Cluster("primary")
	primary.InitDB("postgres-" + testsupport.RandomWord(t))

	// The standby's network is 127.0.0.1 alone; 127.0.0.2, another
	// loopback address of this machine, stands for every other host.
	p := prodParams()
	p.PrimaryHost, p.PrimaryPort = "127.0.0.1", primary.Port
	p.StandbyNetwork = netip.MustParsePrefix("127.0.0.1/32")
	p.PassFile = filepath.Join(h.Dir("secrets"), "replication.pgpass")
	hba, err := p.HBALine()
	require.NoError(t, err)
	// The database container's rules (nbms-db-entrypoint) with the line.
	h.WriteFile(filepath.Join(primary.Data, "pg_hba.conf"), "local all all peer\nlocal replication all peer\nhost all all all scram-sha-256\n"+hba, 0o600)
	settings, err := p.PrimarySettings()
	require.NoError(t, err)
	primary.AppendConf(primary.ListenSettings() + "wal_level = replica\n" + confLines(settings))
	primary.Start()

	// A password with the characters the password file escapes.
	password := `pw:` + testsupport.RandomWord(t) + `\x`
	salt := make([]byte, 16)
	_, err = rand.Read(salt)
	require.NoError(t, err)
	verifier, err := SCRAMVerifier(password, salt)
	require.NoError(t, err)
	sql, err := p.PrimarySQL(verifier)
	require.NoError(t, err)
	sqlFile := filepath.Join(h.Base, "primary.sql")
	h.WriteFile(sqlFile, sql, 0o600)
	for range 2 {
		h.Run(testsupport.PGBin+"/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
			"-h", primary.Sock, "-p", strconv.Itoa(primary.Port), "-U", "postgres", "-d", "postgres", "-f", sqlFile)
	}
	assert.Equal(t, "t|t|f|f|f|f", primary.Psql("SELECT rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = '"+p.Role+"'"))
	assert.Equal(t, verifier, primary.Psql("SELECT rolpassword FROM pg_authid WHERE rolname = '"+p.Role+"'"), "stored as given")
	assert.Equal(t, "physical|f|t", primary.Psql("SELECT slot_type, active, restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = '"+p.Slot+"'"),
		"one physical slot, keeping WAL from its creation (immediately_reserve)")
	assert.Equal(t, "1024|MB", primary.Psql("SELECT setting, unit FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"))

	// PostgreSQL's own verifier of the same password, with a salt of its
	// own: SCRAMVerifier with that salt must give the same string.
	primary.Psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_check PASSWORD '" + strings.ReplaceAll(password, "'", "''") + "'")
	theirs := primary.Psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_check'")
	theirSalt, err := base64.StdEncoding.DecodeString(strings.Split(strings.Split(theirs, ":")[1], "$")[0])
	require.NoError(t, err)
	ours, err := SCRAMVerifier(password, theirSalt)
	require.NoError(t, err)
	assert.Equal(t, theirs, ours)

	// libpq (psql) reads the password file the standby's primary_conninfo
	// names, for a physical replication connection. The walreceiver adds
	// replication=true and dbname=replication to primary_conninfo (the
	// latter so that the password file's "replication" matches); psql
	// needs them said.
	passFile, err := p.RenderPassFile(password)
	require.NoError(t, err)
	h.WriteFile(p.PassFile, passFile, 0o600)
	recovery, err := p.RecoverySettings()
	require.NoError(t, err)
	out := h.Run(testsupport.PGBin+"/psql", "-X", "-At", recovery["primary_conninfo"]+" replication=true dbname=replication", "-c", "IDENTIFY_SYSTEM")
	assert.Regexp(t, `^\d+\|1\|[0-9A-F]+/[0-9A-F]+\|$`, strings.TrimSpace(out), "a physical replication connection")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	replicate := func(localAddr, password string) error {
		cfg, err := pgconn.ParseConfig("host=127.0.0.1 port=" + strconv.Itoa(primary.Port) + " user=" + p.Role + " sslmode=disable replication=true")
		require.NoError(t, err)
		cfg.Password = password
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localAddr)}}
		cfg.DialFunc = dialer.DialContext
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
		return err
	}
	require.NoError(t, replicate("127.0.0.1", password), "from the standby's network, with the password")
	err = replicate("127.0.0.2", password)
	require.Error(t, err, "from any other address")
	assert.Contains(t, err.Error(), `no pg_hba.conf entry for replication connection from host "127.0.0.2", user "`+conventions.ReplicationRole+`"`)
	err = replicate("127.0.0.1", "wrong-"+password)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `password authentication failed for user "`+conventions.ReplicationRole+`"`)

	drop, err := p.DropSlotSQL()
	require.NoError(t, err)
	primary.Psql(drop)
	primary.Psql(drop) // nothing to drop: no error
	assert.Equal(t, "0", primary.Psql("SELECT count(*) FROM pg_replication_slots"))
}

// confLines renders settings as postgresql.conf lines, as
// pgbackrest.PostgresConf does (this package's tests import it as the
// standby's do).
func confLines(settings map[string]string) string {
	var b strings.Builder
	for name, value := range settings {
		b.WriteString(name + " = '" + value + "'\n")
	}
	return b.String()
}
