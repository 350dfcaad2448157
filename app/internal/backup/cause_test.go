package backup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
)

// TestCause classifies what pgBackRest 2.45 printed on stderr when each
// failure was provoked for real against versitygw (by hand, with
// --io-timeout=1; testdata/errors; restore_*.txt: `pgbackrest --repo=2
// restore` from newOffHost's repo2, broken as TestOffHostFailuresAreNamed
// breaks it).
func TestCause(t *testing.T) {
	tests := map[string]string{
		"refused.txt":                 "repository unreachable",
		"dns.txt":                     "repository unreachable",
		"no_answer.txt":               "repository unreachable",
		"relay_closed.txt":            "repository unreachable",
		"relay_closed_eof.txt":        "repository unreachable",
		"wrong_secret_key.txt":        "credentials refused",
		"unknown_access_key.txt":      "stanza not found: wrong bucket, path or access key",
		"wrong_bucket.txt":            "stanza not found: wrong bucket, path or access key",
		"wrong_cipher_pass.txt":       "wrong cipher passphrase",
		"wrong_cipher_pass_flush.txt": "wrong cipher passphrase",
		"cert_expired.txt":            "certificate not trusted or expired",
		"cert_other_ca.txt":           "certificate not trusted or expired",
		"cert_other_ca_leaf_only.txt": "certificate not trusted or expired",
		"cert_wrong_name.txt":         "certificate names another host",
		"storage_full.txt":            "repository storage full",
		"wal_not_archived.txt":        "WAL not reaching the repository",
		// A restore names each repository's failure in a warning, then
		// fails with [075] no backup set found to restore.
		"restore_wrong_cipher_pass.txt":  "wrong cipher passphrase",
		"restore_unknown_access_key.txt": "stanza not found: wrong bucket, path or access key",
		"restore_cert_expired.txt":       "certificate not trusted or expired",
		"restore_relay_closed.txt":       "repository unreachable",
		"restore_refused.txt":            "repository unreachable",
		"restore_wrong_secret_key.txt":   "credentials refused",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "errors", "*.txt"))
	require.NoError(t, err)
	require.Len(t, files, len(tests), "every recorded error is classified here")
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			stderr, err := os.ReadFile(filepath.Join("testdata", "errors", name))
			require.NoError(t, err)
			assert.Equal(t, want, backup.Classify(string(stderr)))
		})
	}

	t.Run("a warning is one repository's", func(t *testing.T) {
		warnings := func(repo2Name, repo1Name string) string {
			return "WARN: repo2: [" + repo2Name + "] unable to read 'x':\n      " + repo2Name + ": garbled\n" +
				"WARN: repo1: [" + repo1Name + "] unable to load info file 'y':\n      " + repo1Name + ": key/value found outside of section at line 1\n" +
				"ERROR: [075]: no backup set found to restore\n"
		}
		assert.Equal(t, "wrong cipher passphrase", backup.Classify(warnings("OtherError", "FormatError")), "repo1's, from its own lines")
		assert.Empty(t, backup.Classify(warnings("FormatError", "OtherError")),
			"repo2's [FormatError] does not take repo1's text, and a name without a code matches no row with one")
	})

	t.Run("unknown", func(t *testing.T) {
		assert.Empty(t, backup.Classify("ERROR: [050]: unable to acquire lock on file '/tmp/nbms/lock/nbms-backup.lock': Resource temporarily unavailable\n       HINT: is another pgBackRest process running?\n"))
		assert.Empty(t, backup.Classify(""), "no ERROR line")
		assert.Empty(t, backup.Cause(errors.New("backup: not from pgbackrest")))
	})

	t.Run("from a failed command", func(t *testing.T) {
		// A real pgbackrest run: Cause reads its whole stderr, which the
		// error's message only ends.
		err := backup.PgBackRest{ConfigPath: filepath.Join(t.TempDir(), "missing.conf"), Stanza: "nbms"}.StanzaCreate(context.Background())
		require.Error(t, err)
		assert.Empty(t, backup.Cause(err), "[055] for the config file is not the stanza's info file")
	})
}
