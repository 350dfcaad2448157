package replication

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// prodParams matches the database containers' layout: the pgBackRest
// config and the secrets where the database image has them, the primary
// by its alias on the stack's internal network.
func prodParams() Params {
	return Params{
		Stanza:           "nbms",
		ConfigPath:       "/etc/pgbackrest/pgbackrest.conf",
		PrimaryHost:      "db",
		PrimaryPort:      5432,
		Role:             conventions.ReplicationRole,
		Slot:             conventions.StandbySlot,
		PassFile:         "/run/secrets/replication.pgpass",
		SSLMode:          "disable",
		StandbyNetwork:   netip.MustParsePrefix("172.30.0.0/24"),
		MaxSlotWALKeepMB: DefaultMaxSlotWALKeepMB,
	}
}

// goldenSalt and goldenPassword make the golden SQL deterministic; a real
// salt is random.
var goldenSalt = []byte("0123456789abcdef")

const goldenPassword = `example:pass\word`

func TestRenderGolden(t *testing.T) {
	p := prodParams()
	recovery, err := p.RecoverySettings()
	require.NoError(t, err)
	args, err := p.RestoreArgs(false)
	require.NoError(t, err)
	primary, err := p.PrimarySettings()
	require.NoError(t, err)
	hba, err := p.HBALine()
	require.NoError(t, err)
	verifier, err := SCRAMVerifier(goldenPassword, goldenSalt)
	require.NoError(t, err)
	sql, err := p.PrimarySQL(verifier)
	require.NoError(t, err)
	drop, err := p.DropSlotSQL()
	require.NoError(t, err)
	passFile, err := p.RenderPassFile(goldenPassword)
	require.NoError(t, err)

	for name, got := range map[string]string{
		"recovery.conf.golden":      pgbackrest.PostgresConf(recovery),
		"restore-args.golden":       strings.Join(args, "\n") + "\n",
		"primary.conf.golden":       pgbackrest.PostgresConf(primary),
		"pg_hba.golden":             hba,
		"primary.sql.golden":        sql + drop,
		"replication.pgpass.golden": passFile,
	} {
		path := filepath.Join("testdata", name)
		if *update {
			require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		}
		want, err := os.ReadFile(path)
		require.NoError(t, err, "run go test -update to create it")
		assert.Equal(t, string(want), got, "%s changed; review and run go test -update", name)
	}

	for name, text := range map[string]string{"recovery settings": pgbackrest.PostgresConf(recovery), "restore arguments": strings.Join(args, " "), "SQL": sql} {
		assert.NotContains(t, text, "example:pass", "%s hold no password", name)
	}
	assert.Equal(t, args[len(args)-1], "restore")
	assert.Contains(t, args, "--recovery-option=restore_command="+pgbackrest.ArchiveGetCommand(p.ConfigPath, p.Stanza))
}

func TestTLSModesMakeTheLineHostSSL(t *testing.T) {
	for mode, want := range map[string]string{
		"disable": "host ", "prefer": "host ", "require": "hostssl ", "verify-ca": "hostssl ", "verify-full": "hostssl ",
	} {
		p := prodParams()
		p.SSLMode = mode
		line, err := p.HBALine()
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(line, want), "%s: %s", mode, line)
		recovery, err := p.RecoverySettings()
		require.NoError(t, err)
		assert.Contains(t, recovery["primary_conninfo"], " sslmode="+mode)
	}
	p := prodParams()
	p.StandbyNetwork = netip.MustParsePrefix("fd00:1::/64")
	line, err := p.HBALine()
	require.NoError(t, err)
	assert.Equal(t, "host replication nbms_replicator fd00:1::/64 scram-sha-256\n", line)
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Params)
		want   []string
	}{
		{"production params", func(*Params) {}, nil},
		{"an address as the primary", func(p *Params) { p.PrimaryHost = "10.1.2.3" }, nil},
		{"one address as the standby's", func(p *Params) { p.StandbyNetwork = netip.MustParsePrefix("10.1.2.4/32") }, nil},
		{"every problem at once", func(p *Params) { *p = Params{} }, []string{
			"Stanza:", "ConfigPath:", "PrimaryHost:", "PrimaryPort:", "Role:", "Slot:", "PassFile:", "SSLMode:",
			"StandbyNetwork: no network", "MaxSlotWALKeepMB: must be at least 64",
		}},
		{"config path with a space", func(p *Params) { p.ConfigPath = "/etc/pg backrest.conf" }, []string{"ConfigPath:"}},
		{"primary host with a space", func(p *Params) { p.PrimaryHost = "db password=x" }, []string{"PrimaryHost:"}},
		{"role in capitals", func(p *Params) { p.Role = "Replicator" }, []string{"Role:"}},
		{"slot with a quote", func(p *Params) { p.Slot = "s'; DROP ROLE postgres; --" }, []string{"Slot:"}},
		{"relative password file", func(p *Params) { p.PassFile = "replication.pgpass" }, []string{"PassFile:"}},
		{"unknown sslmode", func(p *Params) { p.SSLMode = "on" }, []string{`SSLMode: "on" is not one of libpq's sslmodes`}},
		{"every address", func(p *Params) { p.StandbyNetwork = netip.MustParsePrefix("0.0.0.0/0") }, []string{"StandbyNetwork: 0.0.0.0/0 is every address"}},
		{"host bits", func(p *Params) { p.StandbyNetwork = netip.MustParsePrefix("172.30.0.7/24") }, []string{"write 172.30.0.0/24 (a network) or 172.30.0.7/32 (one address)"}},
		{"no bound on the slot", func(p *Params) { p.MaxSlotWALKeepMB = -1 }, []string{"MaxSlotWALKeepMB: must be at least 64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.change
			params := prodParams()
			p(&params)
			err := params.Validate()
			_, recoveryErr := params.RecoverySettings()
			_, argsErr := params.RestoreArgs(false)
			_, hbaErr := params.HBALine()
			_, sqlErr := params.PrimarySQL("SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy")
			_, passErr := params.RenderPassFile("secret")
			_, settingsErr := params.PrimarySettings()
			_, dropErr := params.DropSlotSQL()
			if tc.want == nil {
				require.NoError(t, err)
				for _, e := range []error{recoveryErr, argsErr, hbaErr, sqlErr, passErr, settingsErr, dropErr} {
					require.NoError(t, e)
				}
				return
			}
			require.Error(t, err)
			for _, e := range []error{recoveryErr, argsErr, hbaErr, sqlErr, passErr, settingsErr, dropErr} {
				assert.Equal(t, err, e, "every renderer refuses what Validate refuses")
			}
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestSecretsAreNeverQuoted(t *testing.T) {
	p := prodParams()
	_, err := p.PrimarySQL("my plain password")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "plain")

	for _, bad := range []string{"", "two words", "tab\there", "new\nline", "ünïcode"} {
		_, err := p.RenderPassFile(bad)
		require.Error(t, err, "%q", bad)
		_, verr := SCRAMVerifier(bad, goldenSalt)
		require.Error(t, verr, "%q", bad)
		assert.False(t, ValidPassword(bad))
		if bad != "" {
			assert.NotContains(t, err.Error()+verr.Error(), bad)
		}
	}
	_, err = SCRAMVerifier("secret", []byte("short"))
	assert.EqualError(t, err, "replication: the SCRAM salt must be at least 16 random bytes, got 5")
}

func TestSCRAMVerifier(t *testing.T) {
	v1, err := SCRAMVerifier(goldenPassword, goldenSalt)
	require.NoError(t, err)
	v2, err := SCRAMVerifier(goldenPassword, goldenSalt)
	require.NoError(t, err)
	assert.Equal(t, v1, v2, "deterministic for one salt")
	other, err := SCRAMVerifier(goldenPassword, []byte("fedcba9876543210"))
	require.NoError(t, err)
	assert.NotEqual(t, v1, other)
	assert.Regexp(t, verifierRE, v1)
	assert.True(t, strings.HasPrefix(v1, "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"), v1)
	assert.NotContains(t, v1, "example")
}
