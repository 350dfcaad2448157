package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeSecret writes a secret file as the secrets volume holds it.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o400))
	return path
}

// Every secret of the contract can come from a file named by NAME_FILE, so
// that it never has to be in the container's environment.
func TestSecretsLoadFromFiles(t *testing.T) {
	env := validProd()
	want := map[string]string{}
	for _, v := range Vars() {
		if !v.Secret || env[v.Name] == "" {
			continue
		}
		want[v.Name] = env[v.Name]
		env[v.Name+FileSuffix] = writeSecret(t, v.Name, env[v.Name]+"\n")
		delete(env, v.Name)
	}
	require.Len(t, want, 3, "SECRET_KEY, DATABASE_URL, REDIS_URL")
	s, err := LoadFrom(lookupIn(env))
	require.NoError(t, err)
	assert.Equal(t, want["SECRET_KEY"], s.SecretKey, "the file's content, its trailing newline dropped")
	assert.Equal(t, want["DATABASE_URL"], s.DatabaseURL)
	assert.Equal(t, want["REDIS_URL"], s.RedisURL)
}

func TestSecretFileProblemsNameTheVariableAndNeverTheValue(t *testing.T) {
	weak := "short-and-weak-key"
	cases := []struct {
		name    string
		env     map[string]string
		wantVar string
		reason  string
	}{
		{"both forms", with(validProd(), "SECRET_KEY_FILE", writeSecret(t, "k", strongKey)), "SECRET_KEY", "set either SECRET_KEY or SECRET_KEY_FILE, not both"},
		{"missing file", with(validProd(), "SECRET_KEY", "<unset>", "SECRET_KEY_FILE", "/run/secrets/nope"), "SECRET_KEY_FILE", "cannot read /run/secrets/nope: file does not exist"},
		{"empty file", with(validProd(), "SECRET_KEY", "<unset>", "SECRET_KEY_FILE", writeSecret(t, "empty", "\n")), "SECRET_KEY_FILE", " is empty"},
		{"a file's value is validated like the variable's", with(validProd(), "SECRET_KEY", "<unset>", "SECRET_KEY_FILE", writeSecret(t, "weak", weak)), "SECRET_KEY", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadFrom(lookupIn(tc.env))
			cerr := contractError(t, err)
			assert.Equal(t, []string{tc.wantVar}, cerr.Vars())
			assert.Contains(t, cerr.Error(), tc.reason)
			assert.NotContains(t, cerr.Error(), weak)
			assert.NotContains(t, cerr.Error(), strongKey)
		})
	}
}

// The policy pack reads a container's declared environment and cannot read
// its files: a secret given as a file counts as set, nothing else is
// relaxed.
func TestParseCountsASecretFileAsSet(t *testing.T) {
	env := with(validProd(), "SECRET_KEY", "<unset>", "SECRET_KEY_FILE", "/run/secrets/SECRET_KEY",
		"DATABASE_URL", "<unset>", "DATABASE_URL_FILE", "/run/secrets/DATABASE_URL")
	s, err := Parse(env)
	require.NoError(t, err)
	assert.Empty(t, s.SecretKey, "not read")
	_, err = Parse(with(env, "SECRET_KEY_FILE", "<unset>"))
	assert.Equal(t, []string{"SECRET_KEY"}, contractError(t, err).Vars(), "still required")
	_, err = Parse(with(env, "ALLOWED_HOSTS", "*"))
	assert.Equal(t, []string{"ALLOWED_HOSTS"}, contractError(t, err).Vars(), "the other rules still apply")
}
