package config

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const strongKey = "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj"

// validProd is a complete, valid production environment.
func validProd() map[string]string {
	return map[string]string{
		"NBMS_ENV":             "prod",
		"SECRET_KEY":           strongKey,
		"DATABASE_URL":         "postgres://nbms:s3cr3t-db-pass@db:5432/nbms?sslmode=disable",
		"REDIS_URL":            "redis://:s3cr3t-redis-pass@redis:6379/0",
		"ALLOWED_HOSTS":        "nbms.example.org",
		"CSRF_TRUSTED_ORIGINS": "https://nbms.example.org",
		"CORS_ALLOWED_ORIGINS": "https://portal.example.org",
		"TRUSTED_PROXY_CIDRS":  "172.30.0.0/24",
	}
}

func with(env map[string]string, kv ...string) map[string]string {
	out := maps.Clone(env)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}

func contractError(t *testing.T, err error) *Error {
	t.Helper()
	var cerr *Error
	require.ErrorAs(t, err, &cerr)
	return cerr
}

func TestValidProductionEnvironmentLoads(t *testing.T) {
	s, err := Parse(validProd())
	require.NoError(t, err)
	assert.Equal(t, Prod, s.Profile)
	assert.True(t, s.Production())
	assert.Equal(t, ":8000", s.HTTPAddr)
	assert.Equal(t, 63072000, s.HSTSSeconds)
	assert.True(t, s.SSLRedirect)
	assert.True(t, s.SessionCookieSecure)
	assert.Equal(t, "__Host-nbms_session", s.SessionCookieName)
	assert.Equal(t, []string{"nbms.example.org"}, s.AllowedHosts)
	assert.Equal(t, "172.30.0.0/24", s.TrustedProxies[0].String())
	assert.Equal(t, 30*time.Minute, s.DBConnMaxAge)
	assert.Equal(t, 5*time.Second, s.MigrateLockTimeout)
	assert.Equal(t, 15*time.Minute, s.MigrateStatementTimeout)
	assert.Equal(t, 30*time.Minute, s.OneShotTimeout)
	assert.Equal(t, int64(1<<20), s.MaxRequestBodyBytes)
	assert.Equal(t, DefaultCSP, s.CSP)
	assert.True(t, s.MediaXAccelRedirect, "production has nginx in front: it sends the evidence bytes")
}

func TestDevProfileNeedsOnlyTheProfile(t *testing.T) {
	s, err := Parse(map[string]string{"NBMS_ENV": "dev"})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:8000", s.HTTPAddr)
	assert.False(t, s.SSLRedirect)
	assert.Equal(t, 0, s.HSTSSeconds)
	assert.NotEmpty(t, s.DatabaseURL)
	assert.False(t, s.MediaXAccelRedirect, "no nginx in front: the app sends evidence itself")
}

func TestProfileIsNeverDefaulted(t *testing.T) {
	_, err := Parse(map[string]string{})
	cerr := contractError(t, err)
	assert.Contains(t, cerr.Vars(), "NBMS_ENV")
	// With no profile, production rules apply so every demand shows at once.
	for _, name := range []string{"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} {
		assert.Contains(t, cerr.Vars(), name)
	}
}

// Every production-required variable, missing on its own, is named alone.
func TestEachProductionRequiredVariableMissingAlone(t *testing.T) {
	for _, v := range Vars() {
		if !v.RequiredIn(Prod) {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			for _, missing := range []string{"<unset>", "", "   "} {
				_, err := Parse(with(validProd(), v.Name, missing))
				cerr := contractError(t, err)
				assert.Equal(t, []string{v.Name}, cerr.Vars(), "value %q", missing)
				assert.Contains(t, cerr.Error(), v.Name)
			}
		})
	}
}

func TestEachProductionVariableInvalidAlone(t *testing.T) {
	cases := []struct {
		name, value, reason string
	}{
		{"NBMS_ENV", "production", "oneof"},
		{"SECRET_KEY", "too-short-secret", "at least 50"},
		{"SECRET_KEY", strings.Repeat("ab", 40), "distinct characters"},
		{"SECRET_KEY", "django-insecure-" + strongKey, "placeholder"},
		{"SECRET_KEY", devSecretKey, "placeholder"},
		{"SECRET_KEY_PREVIOUS", "old-short", "entry 1"},
		{"SECRET_KEY_PREVIOUS", strongKey, "equals SECRET_KEY"},
		{"DATABASE_URL", "mysql://u:p@h/db", "scheme"},
		{"DATABASE_URL", "postgres://u:p@/db", "no host"},
		{"REDIS_URL", "http://cache:6379", "scheme"},
		{"ALLOWED_HOSTS", "*", "wildcard"},
		{"ALLOWED_HOSTS", "https://nbms.example.org", "not a host name"},
		{"ALLOWED_HOSTS", ",", "at least one host"},
		{"CSRF_TRUSTED_ORIGINS", "http://nbms.example.org", "https"},
		{"CSRF_TRUSTED_ORIGINS", "https://nbms.example.org/path", "nothing after"},
		{"CORS_ALLOWED_ORIGINS", "*", "wildcard"},
		{"CORS_ALLOWED_ORIGINS", "null", "null"},
		{"CORS_ALLOWED_ORIGINS", "https://*.example.org", "wildcard"},
		{"CORS_ALLOWED_ORIGINS", "http://portal.example.org", "https"},
		{"CORS_ALLOWED_HEADERS", "*", `"*" is not allowed`},
		{"CORS_ALLOWED_HEADERS", "Content-Type,*", `"*" is not allowed`},
		{"CORS_ALLOWED_HEADERS", "Content Type", "is not a header name"},
		{"CORS_ALLOWED_HEADERS", "X-A:b", "is not a header name"},
		{"CORS_PREFLIGHT_MAX_AGE", "3h", "lte=2h"},
		{"CORS_PREFLIGHT_MAX_AGE", "soon", "not a duration"},
		{"TRUSTED_PROXY_CIDRS", "0.0.0.0/0", "every address"},
		{"TRUSTED_PROXY_CIDRS", "not-a-network", "not an IP network"},
		{"TRUSTED_PROXY_CIDRS", "", "reverse proxy"},
		{"SECURE_HSTS_SECONDS", "3600", "at least 31536000"},
		{"SECURE_HSTS_SECONDS", "one-year", "whole number"},
		{"SECURE_HSTS_INCLUDE_SUBDOMAINS", "false", "true in production"},
		{"SECURE_SSL_REDIRECT", "false", "true in production"},
		{"SECURE_SSL_REDIRECT", "maybe", "boolean"},
		{"SECURE_CSP_REPORT_ONLY", "true", "blocks nothing"},
		{"SECURE_CSP", "default-src 'none'; default-src *", "twice"},
		{"SECURE_REFERRER_POLICY", "no-referer", "Referrer-Policy token"},
		{"SECURE_CROSS_ORIGIN_OPENER_POLICY", "allow-all", "oneof"},
		{"SESSION_COOKIE_SECURE", "false", "true"},
		{"SESSION_COOKIE_NAME", "nbms_session", "__Host-"},
		{"SESSION_COOKIE_NAME", "__Host-a;Domain=evil", "not allowed in a cookie name"},
		{"SESSION_COOKIE_SAMESITE", "None", "oneof"},
		{"SESSION_IDLE_TIMEOUT", "48h", "lte=24h"},
		{"SESSION_IDLE_TIMEOUT", "20h", "SESSION_LIFETIME"},
		{"MAX_UPLOAD_BYTES", "1024", "below MAX_REQUEST_BODY_BYTES"},
		{"MAX_REQUEST_BODY_BYTES", "0", "gt=0"},
		{"DB_MAX_CONNS", "0", "gte=1"},
		{"DB_MIN_CONNS", "50", "above DB_MAX_CONNS"},
		{"DB_CONN_MAX_AGE", "0s", "gt=0"},
		{"DB_CONN_MAX_AGE", "forever", "duration"},
		{"MIGRATE_LOCK_TIMEOUT", "0s", "gte=1ms"},
		{"MIGRATE_LOCK_TIMEOUT", "500us", "gte=1ms"},
		{"MIGRATE_LOCK_TIMEOUT", "2m", "lte=1m"},
		{"MIGRATE_LOCK_TIMEOUT", "5", "not a duration"},
		{"MIGRATE_STATEMENT_TIMEOUT", "0", "gte=1s"},
		{"MIGRATE_STATEMENT_TIMEOUT", "25h", "lte=24h"},
		{"ONESHOT_TIMEOUT", "0s", "gte=1s"},
		{"ONESHOT_TIMEOUT", "999ms", "gte=1s"},
		{"ONESHOT_TIMEOUT", "-1m", "gte=1s"},
		{"ONESHOT_TIMEOUT", "25h", "lte=24h"},
		{"ONESHOT_TIMEOUT", "30", "not a duration"},
		{"ONESHOT_TIMEOUT", "forever", "not a duration"},
		{"LOG_LEVEL", "debug", "not allowed in production"},
		{"LOG_LEVEL", "verbose", "oneof"},
		{"SENTRY_DSN", "not a dsn", "Sentry DSN"},
		{"HTTP_ADDR", "eight thousand", "not host:port"},
		{"HTTP_ADDR", ":99999", "invalid port"},
		{"SECURE_CSP_REPORT_PATH", "csp-report", "startswith"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			_, err := Parse(with(validProd(), tc.name, tc.value))
			cerr := contractError(t, err)
			assert.Equal(t, []string{tc.name}, cerr.Vars(), cerr.Error())
			assert.Contains(t, cerr.Error(), tc.reason)
		})
	}
}

func TestMigrationTimeoutsAreTunable(t *testing.T) {
	s, err := Parse(with(validProd(), "MIGRATE_LOCK_TIMEOUT", "200ms", "MIGRATE_STATEMENT_TIMEOUT", "2h"))
	require.NoError(t, err)
	assert.Equal(t, 200*time.Millisecond, s.MigrateLockTimeout)
	assert.Equal(t, 2*time.Hour, s.MigrateStatementTimeout)
}

func TestOneShotTimeoutIsTunable(t *testing.T) {
	for value, want := range map[string]time.Duration{"1s": time.Second, "2h": 2 * time.Hour, "24h": 24 * time.Hour, " 45m ": 45 * time.Minute} {
		s, err := Parse(with(validProd(), "ONESHOT_TIMEOUT", value))
		require.NoError(t, err, value)
		assert.Equal(t, want, s.OneShotTimeout, value)
	}
	s, err := Parse(map[string]string{EnvProfile: "dev"})
	require.NoError(t, err)
	assert.Equal(t, 30*time.Minute, s.OneShotTimeout, "the same default in every profile")

	v, ok := Lookup("ONESHOT_TIMEOUT")
	require.True(t, ok)
	assert.True(t, v.StackTunable(), "the operator tunes it from the stack; the program does not set it")
	assert.Equal(t, StackEnvKey+".ONESHOT_TIMEOUT", v.StackKey())
	assert.NoError(t, v.Validate("1h", Prod))
	assert.ErrorContains(t, v.Validate("48h", Prod), `does not satisfy "gte=1s,lte=24h"`)
}

func TestAllProblemsReportedInOneMessage(t *testing.T) {
	env := map[string]string{
		"NBMS_ENV":             "prod",
		"CORS_ALLOWED_ORIGINS": "*",
		"SECURE_HSTS_SECONDS":  "10",
		"LOG_LEVEL":            "debug",
	}
	_, err := Parse(env)
	cerr := contractError(t, err)
	want := []string{"SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "CORS_ALLOWED_ORIGINS", "DATABASE_URL", "REDIS_URL", "SECURE_HSTS_SECONDS", "LOG_LEVEL"}
	for _, name := range want {
		assert.Contains(t, cerr.Vars(), name)
	}
	msg := cerr.Error()
	assert.Equal(t, 1+len(cerr.Problems), strings.Count(msg, "\n")+1, "one header line plus one line per problem")
	assert.True(t, strings.HasPrefix(msg, "invalid configuration (profile prod): "))
}

func TestSecretValuesAreNeverEchoed(t *testing.T) {
	secrets := map[string]string{
		"SECRET_KEY":          "hunter2-hunter2-weak",
		"SECRET_KEY_PREVIOUS": "old-leaked-key-value",
		"DATABASE_URL":        "mysql://admin:pg-pass-leak@db/nbms",
		"REDIS_URL":           "memcache://:redis-pass-leak@cache",
		"SENTRY_DSN":          "dsn-secret-leak-value",
	}
	env := validProd()
	maps.Copy(env, secrets)
	_, err := Parse(env)
	cerr := contractError(t, err)
	for name, value := range secrets {
		assert.Contains(t, cerr.Vars(), name)
		assert.NotContains(t, cerr.Error(), value)
	}
	for _, leak := range []string{"pg-pass-leak", "redis-pass-leak"} {
		assert.NotContains(t, cerr.Error(), leak)
	}
}

func TestNonSecretValuesAreQuotedToHelpTheOperator(t *testing.T) {
	_, err := Parse(with(validProd(), "LOG_LEVEL", "loud"))
	assert.Contains(t, err.Error(), `"loud"`)
}

func TestSecretValuesCollectsURLPasswords(t *testing.T) {
	s, err := Parse(with(validProd(), "SENTRY_DSN", "https://dsnpublickey@sentry.example.org/42"))
	require.NoError(t, err)
	got := s.SecretValues()
	for _, want := range []string{strongKey, "s3cr3t-db-pass", "s3cr3t-redis-pass", "dsnpublickey"} {
		assert.Contains(t, got, want)
	}
}

func TestEveryVariableIsBoundAndDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range Vars() {
		assert.False(t, seen[v.Name], "%s declared twice", v.Name)
		seen[v.Name] = true
		assert.NotEmpty(t, v.Doc, v.Name)
		assert.NotEmpty(t, v.Group, v.Name)
		require.NotNil(t, v.field, v.Name)
		if v.Secret {
			assert.Nil(t, v.ProdDefault, "%s: a secret must not have a production default", v.Name)
			assert.Empty(t, v.Default, "%s: a secret must not have a production default", v.Name)
		}
	}
	for _, c := range DeployChecks() {
		for _, name := range c.Vars {
			assert.True(t, seen[name], "%s names undeclared %s", c.ID, name)
		}
	}
}

func TestEveryDefaultIsValidInItsProfile(t *testing.T) {
	// dev and test need nothing but the profile; prod needs its required set.
	for _, p := range []Profile{Dev, Test} {
		_, err := Parse(map[string]string{"NBMS_ENV": string(p)})
		assert.NoError(t, err, p)
	}
	_, err := Parse(validProd())
	assert.NoError(t, err)
}

func TestDotenvIsReadInDevAndRealEnvironmentWins(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	require.NoError(t, os.WriteFile(path, []byte("LOG_LEVEL=warn\nDB_MAX_CONNS=3\nNBMS_ENV=prod\n"), 0o600))
	real := map[string]string{"NBMS_ENV": "dev", "NBMS_DOTENV_PATH": path, "DB_MAX_CONNS": "7"}
	s, err := LoadFrom(lookupIn(real))
	require.NoError(t, err)
	assert.True(t, s.ReadDotenv)
	assert.Equal(t, "warn", s.LogLevel, "value from .env")
	assert.Equal(t, 7, s.DBMaxConns, "the real environment wins")
	assert.Equal(t, Dev, s.Profile, "the .env file cannot change the profile")
}

func TestDotenvIsIgnoredInProductionUnlessAsked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	require.NoError(t, os.WriteFile(path, []byte("SECURE_HSTS_SECONDS=10\n"), 0o600))
	real := with(validProd(), "NBMS_DOTENV_PATH", path)
	s, err := LoadFrom(lookupIn(real))
	require.NoError(t, err)
	assert.False(t, s.ReadDotenv)
	assert.Equal(t, 63072000, s.HSTSSeconds)

	real["NBMS_READ_DOTENV"] = "true"
	_, err = LoadFrom(lookupIn(real))
	cerr := contractError(t, err)
	assert.Equal(t, []string{"SECURE_HSTS_SECONDS"}, cerr.Vars(), "asked for: the file is read")
}

func TestDotenvProblemsAreReported(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.env")
	require.NoError(t, os.WriteFile(bad, []byte("SECRET_KEY='unterminated-secret-value\n"), 0o600))
	_, err := LoadFrom(lookupIn(map[string]string{"NBMS_ENV": "dev", "NBMS_DOTENV_PATH": bad}))
	cerr := contractError(t, err)
	assert.Equal(t, []string{"NBMS_DOTENV_PATH"}, cerr.Vars())
	assert.NotContains(t, err.Error(), "unterminated-secret-value")

	_, err = LoadFrom(lookupIn(map[string]string{"NBMS_ENV": "test", "NBMS_READ_DOTENV": "true", "NBMS_DOTENV_PATH": filepath.Join(dir, "missing.env")}))
	assert.Contains(t, err.Error(), "does not exist", "an explicitly requested file must exist")

	_, err = LoadFrom(lookupIn(map[string]string{"NBMS_ENV": "dev", "NBMS_DOTENV_PATH": filepath.Join(dir, "missing.env")}))
	assert.NoError(t, err, "dev's implicit .env is optional")
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestCheckOrigin(t *testing.T) {
	ok := []struct {
		origin string
		prod   bool
	}{
		{"https://nbms.example.org", true},
		{"https://nbms.example.org:8443", true},
		{"https://[2001:db8::1]", true},
		{"http://localhost:8000", false},
	}
	for _, tc := range ok {
		assert.NoError(t, CheckOrigin(tc.origin, tc.prod), tc.origin)
	}
	bad := []struct {
		origin string
		prod   bool
	}{
		{"*", false}, {"null", false}, {"NULL", false}, {"", false},
		{"https://*.example.org", false}, {"https://nbms.example.org/", false},
		{"https://nbms.example.org/path", false}, {"https://nbms.example.org?x=1", false},
		{"https://nbms.example.org#f", false}, {"https://user@nbms.example.org", false},
		{"ftp://nbms.example.org", false}, {"nbms.example.org", false},
		{"https://", false}, {"https://NBMS.example.org", false},
		{"https://nbms.example.org:0", false}, {"https://nbms.example.org:99999", false},
		{"https://nbms.example.org ", false}, {"http://nbms.example.org", true},
		{"https://nbms.example.org?", false}, {"https://nbms.example.org#", false},
	}
	for _, tc := range bad {
		assert.Error(t, CheckOrigin(tc.origin, tc.prod), tc.origin)
	}
	assert.Error(t, CheckOrigins([]string{"https://a.example.org", "*"}, true))
}

func TestReferenceIsUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", ReferencePath)
	committed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is missing; run `make docs`", ReferencePath)
	}
	require.NoError(t, err)
	if string(committed) != Reference() {
		t.Fatalf("%s is stale; run `make docs` and commit the result", ReferencePath)
	}
	for _, v := range Vars() {
		assert.Contains(t, string(committed), "`"+v.Name+"`")
	}
}

// FuzzParse: any environment loads or fails with an *Error; it never panics
// and never echoes a secret variable's value.
func FuzzParse(f *testing.F) {
	f.Add("prod", strongKey, "postgres://u:p@h/db", "https://a.example.org", "a.example.org", "10.0.0.0/8", "63072000")
	f.Add("dev", "", "", "*", "*", "0.0.0.0/0", "-1")
	f.Add("", "x", "::::", "null", "", "fe80::1%eth0", "1e9")
	f.Fuzz(func(t *testing.T, profile, secret, dbURL, origin, host, cidr, hsts string) {
		env := map[string]string{
			"NBMS_ENV": profile, "SECRET_KEY": secret, "DATABASE_URL": dbURL,
			"CORS_ALLOWED_ORIGINS": origin, "ALLOWED_HOSTS": host,
			"TRUSTED_PROXY_CIDRS": cidr, "SECURE_HSTS_SECONDS": hsts,
		}
		s, err := Parse(env)
		require.NotNil(t, s)
		if err == nil {
			return
		}
		var cerr *Error
		require.ErrorAs(t, err, &cerr)
		require.NotEmpty(t, cerr.Problems)
		msg := err.Error()
		for _, v := range []string{secret, dbURL} {
			if len(strings.TrimSpace(v)) >= 8 && !strings.Contains(origin+host+cidr+hsts+profile, strings.TrimSpace(v)) {
				require.NotContains(t, msg, strings.TrimSpace(v))
			}
		}
	})
}

// FuzzCheckOrigin: an accepted origin is always an exact scheme://host[:port]
// that round-trips, never a wildcard or null.
func FuzzCheckOrigin(f *testing.F) {
	for _, s := range []string{"https://a.example.org", "*", "null", "https://*.a.org", "http://[::1]:80", "https://a.org:443/x"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, origin string, prod bool) {
		if CheckOrigin(origin, prod) != nil {
			return
		}
		require.NotContains(t, origin, "*")
		require.NotEqual(t, "null", strings.ToLower(origin))
		require.True(t, strings.HasPrefix(origin, "https://") || (!prod && strings.HasPrefix(origin, "http://")), origin)
		rest := origin[strings.Index(origin, "://")+3:]
		require.NotContains(t, rest, "/")
		require.NotContains(t, rest, "?")
		require.NotContains(t, rest, "#")
		require.NotContains(t, rest, "@")
	})
}

func TestRates(t *testing.T) {
	s, err := Parse(with(validProd(), "RATE_LIMIT_LOGIN_IP", "3/30s"))
	require.NoError(t, err)
	assert.Equal(t, Rate{Count: 3, Period: 30 * time.Second}, s.RateLimitLoginIP)
	assert.Equal(t, Rate{Count: 120, Period: time.Minute}, s.RateLimitPublicAPI)
	assert.Equal(t, "3/30s", s.RateLimitLoginIP.String())
	for _, bad := range []string{"10", "0/1m", "-1/1m", "ten/1m", "10/fortnight", "10/500ms", "10/48h"} {
		_, err := Parse(with(validProd(), "RATE_LIMIT_PUBLIC_API", bad))
		cerr := contractError(t, err)
		assert.Equal(t, []string{"RATE_LIMIT_PUBLIC_API"}, cerr.Vars(), bad)
	}
	_, err = Parse(with(validProd(), "RATE_LIMIT_ENABLED", "false"))
	assert.Contains(t, err.Error(), "NBMS-C008")
	_, err = Parse(map[string]string{"NBMS_ENV": "dev", "RATE_LIMIT_ENABLED": "false"})
	assert.NoError(t, err, "allowed outside production")
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{name: "CIDRs and bare IPs", in: []string{"10.0.0.0/8", "10.1.2.3", "::1", " fd00::/8 "}, want: []string{"10.0.0.0/8", "10.1.2.3/32", "::1/128", "fd00::/8"}},
		{name: "blank entries skipped", in: []string{"", "  ", "192.168.0.0/16"}, want: []string{"192.168.0.0/16"}},
		{name: "host bits cleared", in: []string{"10.1.2.3/8"}, want: []string{"10.0.0.0/8"}},
		{name: "IPv4-mapped converted", in: []string{"::ffff:10.0.0.0/104", "::ffff:10.1.2.3"}, want: []string{"10.0.0.0/8", "10.1.2.3/32"}},
		{name: "nil list", in: nil, want: []string{}},
		{name: "not an address", in: []string{"10.0.0.0/8", "proxy.internal"}, wantErr: `"proxy.internal"`},
		{name: "bad prefix length", in: []string{"10.0.0.0/33"}, wantErr: `"10.0.0.0/33"`},
		{name: "zone refused", in: []string{"fe80::1%eth0"}, wantErr: `"fe80::1%eth0"`},
		{name: "IPv4 trust-all refused", in: []string{"0.0.0.0/0"}, wantErr: `"0.0.0.0/0"`},
		{name: "IPv6 trust-all refused", in: []string{"::/0"}, wantErr: `"::/0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTrustedProxies(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			strs := make([]string, 0, len(got))
			for _, p := range got {
				strs = append(strs, p.String())
			}
			assert.Equal(t, tt.want, strs)
		})
	}
}

// Settings that each load but that the server would refuse together are
// refused when they load, so predeploy-check and start-up agree.
func TestHeaderSettingsTheServerWouldRefuse(t *testing.T) {
	for _, env := range []map[string]string{
		with(validProd(), "SECURE_CSP", DefaultCSP+"; report-uri /elsewhere"),
		with(validProd(), "SECURE_HSTS_PRELOAD", "true", "SECURE_HSTS_SECONDS", "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "true", "SECURE_CSP_REPORT_PATH", "/a b"),
		{"NBMS_ENV": "dev", "SECURE_HSTS_SECONDS": "100", "SECURE_HSTS_PRELOAD": "true"},
	} {
		_, err := Parse(env)
		cerr := contractError(t, err)
		require.NotEmpty(t, cerr.Problems)
		found := false
		for _, p := range cerr.Problems {
			found = found || p.Check == "NBMS-C009" || p.Var == "SECURE_CSP_REPORT_PATH"
		}
		assert.True(t, found, cerr.Error())
	}
}

// Every variable says how a stack sets it: by name under StackEnvKey (the
// zero value, so a new variable needs no second edit), through a typed
// stack key, or not at all (the program's). Secrets are never tunable by
// name, and the variables the program decides from its own wiring are
// not tunable either.
func TestEveryVariableSaysHowAStackSetsIt(t *testing.T) {
	typedKey := regexp.MustCompile(`^nbms:[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)?$`)
	for _, v := range Vars() {
		switch {
		case v.Stack == "":
			if v.Secret {
				assert.Empty(t, v.StackKey(), "%s: a secret has no key by name", v.Name)
				assert.False(t, v.StackTunable(), v.Name)
			} else {
				assert.Equal(t, StackEnvKey+"."+v.Name, v.StackKey(), v.Name)
				assert.True(t, v.StackTunable(), v.Name)
			}
		case v.Stack == ProgramOwned:
			assert.Empty(t, v.StackKey(), v.Name)
			assert.False(t, v.StackTunable(), v.Name)
		default:
			assert.Regexp(t, typedKey, v.Stack, "%s: a typed key is nbms:key or nbms:object.field", v.Name)
			assert.NotEqual(t, StackEnvKey, v.Stack, v.Name)
			assert.Equal(t, v.Stack, v.StackKey(), v.Name)
			assert.False(t, v.StackTunable(), v.Name)
		}
	}
	for _, name := range []string{EnvProfile, EnvReadDotenv, EnvDotenvPath, "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "HTTP_ADDR", "STATIC_ROOT", "MEDIA_ROOT", "TRUSTED_PROXY_CIDRS"} {
		v, _ := Lookup(name)
		assert.False(t, v.StackTunable(), "%s is the program's, not the operator's", name)
	}
	for _, name := range []string{"RATE_LIMIT_PUBLIC_API", "SESSION_LIFETIME", "HTTP_WRITE_TIMEOUT", "DB_MIN_CONNS", "SECURE_CSP"} {
		v, _ := Lookup(name)
		assert.True(t, v.StackTunable(), name)
	}
}

// Validate is the contract's own rule for one variable, as loading applies it.
func TestValidateOneVariable(t *testing.T) {
	v := func(name string) Var {
		out, ok := Lookup(name)
		require.True(t, ok, name)
		return out
	}
	assert.NoError(t, v("RATE_LIMIT_PUBLIC_API").Validate("600/1m", Prod))
	assert.NoError(t, v("RATE_LIMIT_PUBLIC_API").Validate(" 600/1m ", Prod), "trimmed, as loading does")
	assert.ErrorContains(t, v("RATE_LIMIT_PUBLIC_API").Validate("600/m", Prod), `"600/m" is not a rate: period "m" must be a duration from 1s to 24h`)
	assert.ErrorContains(t, v("SESSION_LIFETIME").Validate("800h", Prod), `does not satisfy "gt=0,lte=720h"`)
	assert.ErrorContains(t, v("DB_MIN_CONNS").Validate("two", Dev), "not a whole number")
	assert.ErrorContains(t, v("CSRF_TRUSTED_ORIGINS").Validate("http://portal.example.org", Prod), "https")
	assert.NoError(t, v("CSRF_TRUSTED_ORIGINS").Validate("http://portal.example.org", Dev), "the production rule applies in prod only")
	assert.NoError(t, v("SESSION_COOKIE_NAME").Validate("sid", Prod), "the __Host- rule is a deploy check (NBMS-C001), over the whole settings")
	assert.NoError(t, v("SENTRY_RELEASE").Validate("", Prod), "empty is unset: the default applies")
	assert.ErrorContains(t, v("ALLOWED_HOSTS").Validate("", Prod), "required in prod")
	err := v("SECRET_KEY").Validate("short-secret-value", Prod)
	if err != nil {
		assert.NotContains(t, err.Error(), "short-secret-value")
	}
}
