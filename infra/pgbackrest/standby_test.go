package pgbackrest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArchiveGetCommand(t *testing.T) {
	assert.Equal(t, `pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=nbms archive-get %f "%p"`,
		ArchiveGetCommand(prodConfigPath, "nbms"))
	assert.Equal(t, `pgbackrest '--config=/etc/it'\''s 100%% conf' --stanza=nbms archive-get %f "%p"`,
		ArchiveGetCommand("/etc/it's 100% conf", "nbms"), "quoted as ArchiveCommand is")
	assert.NotContains(t, ArchiveGetCommand(prodConfigPath, "nbms"), "--repo", "archive-get looks in every repository")

	// Run as PostgreSQL runs restore_command: %f, %p and %% replaced, then
	// /bin/sh -c; a stand-in pgbackrest prints its arguments.
	command := substitutePercent(ArchiveGetCommand("/tmp/it's 100% conf", "nbms"), "pg_wal/RECOVERYXLOG")
	out, err := exec.Command("/bin/sh", "-c", `pgbackrest() { for a in "$@"; do printf '%s\0' "$a"; done; }; `+command).Output()
	require.NoError(t, err)
	assert.Equal(t, []string{"--config=/tmp/it's 100% conf", "--stanza=nbms", "archive-get", "RECOVERYXLOG", "pg_wal/RECOVERYXLOG"},
		strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"))
}

func TestStandbyRestoreArgs(t *testing.T) {
	args, err := StandbyRestoreArgs(prodConfigPath, "nbms", map[string]string{
		"primary_slot_name": "nbms_standby",
		"primary_conninfo":  "host=db port=5432 user=nbms_replicator",
	}, false)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"--config=/etc/pgbackrest/pgbackrest.conf", "--stanza=nbms", "--repo=1", "--type=standby",
		"--recovery-option=primary_conninfo=host=db port=5432 user=nbms_replicator",
		"--recovery-option=primary_slot_name=nbms_standby",
		"restore",
	}, args, "sorted recovery options, one argument each: the value's spaces need no shell")

	args, err = StandbyRestoreArgs(prodConfigPath, "nbms", nil, true)
	require.NoError(t, err)
	assert.Equal(t, []string{"--config=/etc/pgbackrest/pgbackrest.conf", "--stanza=nbms", "--repo=1", "--type=standby", "--delta", "restore"}, args)

	_, err = StandbyRestoreArgs("", "nbms prod", map[string]string{
		"primary_conninfo":  "password='x' host=db",
		"Bad-Key":           "x",
		"restore_command":   `cp /a\b %p`,
		"primary_slot_name": "a\nrestore_command = 'rm -rf /'",
	}, false)
	require.Error(t, err)
	for _, want := range []string{
		`stanza "nbms prod"`, "no config path", `"Bad-Key" is not a PostgreSQL setting name`,
		"the value of primary_conninfo has a quote", "the value of restore_command has a quote, a backslash",
		"the value of primary_slot_name has a quote, a backslash or a control character",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "password='x'", "a refused value is never quoted: it may hold a secret")
}
