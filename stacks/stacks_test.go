package stacks_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

var update = flag.Bool("update", false, "rewrite Pulumi.yaml from stacks.Defaults")

func readStackFile(t testing.TB, stack string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "Pulumi."+stack+".yaml"))
	require.NoError(t, err)
	raw, err := stacks.ParseStackFile(data)
	require.NoError(t, err)
	return raw
}

func values(raw map[string]string) stacks.Values {
	return stacks.Values{Raw: raw, Secret: stacks.IsSecretKey}
}

// prodValues is Pulumi.prod.yaml plus what the operator sets per stack.
func prodValues(t testing.TB) map[string]string {
	raw := readStackFile(t, "prod")
	raw["tlsCertificate"], raw["tlsKey"] = testsupport.SelfSignedCert(t, "nbms.example.org")
	raw["backupS3Key"], raw["backupS3KeySecret"] = "AKIAEXAMPLEKEY", "example-secret-key/with+symbols"
	return raw
}

func stackError(t *testing.T, err error) *stacks.Error {
	t.Helper()
	var serr *stacks.Error
	require.ErrorAs(t, err, &serr)
	return serr
}

func TestProjectFileIsUpToDate(t *testing.T) {
	path := filepath.Join("..", stacks.ProjectPath)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(stacks.ProjectYAML()), 0o644))
	}
	committed, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, stacks.ProjectYAML(), string(committed), "run `go test ./stacks -run TestProjectFileIsUpToDate -update`")
	for _, want := range []string{"name: nbms\n", "runtime: go\n", "main: infra/\n", `requiredPulumiVersion: ">=3.258.0"`} {
		assert.Contains(t, string(committed), want)
	}
	blocks := schemaBlocks(string(committed))
	for _, key := range stacks.Keys() {
		if stacks.IsSecretKey(key) {
			assert.NotContains(t, blocks, key, "a secret key has no schema block: Pulumi would demand it on every stack")
			assert.Contains(t, string(committed), "  # "+key+" (secret, set with `pulumi config set --secret nbms:"+key+"`)", key)
			continue
		}
		block, ok := blocks[key]
		require.True(t, ok, "no schema for %s", key)
		assert.Contains(t, block, "    type: ", key)
		assert.Regexp(t, `    description: "[^"]{20,}`, block, key)
		assert.Contains(t, block, "    default: ", key)
	}
}

// schemaBlocks splits the config section of Pulumi.yaml into one block of
// lines per key.
func schemaBlocks(project string) map[string]string {
	blocks := map[string]string{}
	_, section, _ := strings.Cut(project, "\nconfig:\n")
	key := ""
	for _, line := range strings.Split(section, "\n") {
		if name, ok := strings.CutPrefix(line, "  "); ok && !strings.HasPrefix(name, " ") {
			key = strings.TrimSuffix(name, ":")
			continue
		}
		blocks[key] += line + "\n"
	}
	return blocks
}

func TestCommittedStacksAreValid(t *testing.T) {
	cases := []struct {
		stack   string
		raw     map[string]string
		profile string
		url     string
	}{
		{"prod", prodValues(t), "prod", "https://nbms.example.org"},
		{"dev", readStackFile(t, "dev"), "dev", "http://localhost:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.stack, func(t *testing.T) {
			c, err := stacks.Parse(tc.stack, values(tc.raw))
			require.NoError(t, err)
			assert.Equal(t, tc.profile, c.Profile)
			assert.Equal(t, tc.url, c.PublicURL())
			// The environment the app gets satisfies the app's own loader.
			env := c.AppSettings()
			env["SECRET_KEY"] = "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj"
			env["DATABASE_URL"] = "postgres://nbms:pw@db:5432/nbms"
			env["REDIS_URL"] = "redis://:pw@cache:6379/0"
			s, err := config.Parse(env)
			require.NoError(t, err)
			assert.Equal(t, config.Profile(tc.profile), s.Profile)
			assert.Equal(t, c.PublicHosts(), s.AllowedHosts)
			assert.True(t, s.MediaXAccelRedirect, "nginx, in front of every stack, sends the evidence files")
		})
	}
}

func TestProdStackFileAloneNamesTheOperatorsSettings(t *testing.T) {
	_, err := stacks.Parse("prod", values(readStackFile(t, "prod")))
	serr := stackError(t, err)
	assert.Equal(t, []string{"nbms:tlsCertificate", "nbms:tlsKey", "nbms:backupS3Key", "nbms:backupS3KeySecret"}, serr.Keys())
	assert.Contains(t, err.Error(), "pulumi config set --secret nbms:tlsKey")
	assert.Contains(t, err.Error(), "nbms:backupS3Key: required with backup.offHost: `pulumi config set --secret nbms:backupS3Key <value>`")
}

func TestOffHostRepository(t *testing.T) {
	c, err := stacks.Parse("prod", values(prodValues(t)))
	require.NoError(t, err)
	repo := c.Backup.OffHostRepo("/tmp/ca.pem", "/tmp/spool")
	assert.Equal(t, 443, repo.Port, "HTTPS's port unless set")
	assert.Equal(t, 4, repo.RetentionFull, "its own")
	assert.Equal(t, c.Backup.RetentionDiff, repo.RetentionDiff, "the local repository's unless set")
	assert.Empty(t, repo.CAFile, "no caCertificates: the system's CAs")
	assert.Equal(t, []string{"s3.eu-west-1.amazonaws.com", "nbms-example-backups.s3.eu-west-1.amazonaws.com"}, repo.Hosts(), "host-style: the bucket's own name too")
	assert.Equal(t, "172.16.237.2", c.BackupRelayAddress(), "after the gateway")
	assert.Equal(t, "172.16.237.16/28", c.BackupDynamicRange())
	assert.Empty(t, repo.Problems())

	// Keys without a repository are a mistake too.
	raw := prodValues(t)
	raw["backup"] = `{"fullCron": "30 1 * * 0"}`
	_, err = stacks.Parse("prod", values(raw))
	assert.Equal(t, []string{"nbms:backupS3Key", "nbms:backupS3KeySecret"}, stackError(t, err).Keys())
	assert.Contains(t, err.Error(), "is set, but nbms:backup.offHost is not")
	assert.NotContains(t, err.Error(), "example-secret-key", "a secret is never echoed")
}

// exampleOffHost is a valid backup.offHost.
const exampleOffHost = `{"endpoint": "s3.example.org", "region": "eu-west-1", "bucket": "nbms-backups", "path": "/nbms"}`

func TestOffHostRepositoryProblemsNameTheirKey(t *testing.T) {
	offHost := func(fields string) string {
		return `{"offHost": ` + strings.TrimSuffix(exampleOffHost, "}") + fields + `}}`
	}
	cases := []struct {
		key, value, wantKey, reason string
	}{
		{"backup", offHost(`, "endpoint": "https://s3.example.org"`), "nbms:backup.offHost.endpoint", "must be a host name"},
		{"backup", offHost(`, "endpoint": "192.0.2.10"`), "nbms:backup.offHost.endpoint", "certificate's names"},
		{"backup", offHost(`, "bucket": "NBMS_Backups"`), "nbms:backup.offHost.bucket", "lowercase"},
		{"backup", offHost(`, "region": ""`), "nbms:backup.offHost.region", "region name"},
		{"backup", offHost(`, "path": "nbms/../x"`), "nbms:backup.offHost.path", "clean absolute path"},
		{"backup", offHost(`, "port": 70000`), "nbms:backup.offHost.port", "not a port"},
		{"backup", offHost(`, "address": "s3.internal"`), "nbms:backup.offHost.address", "ipv4"},
		{"backup", offHost(`, "caCertificates": "not pem"`), "nbms:backup.offHost.caCertificates", "not PEM"},
		{"backup", offHost(`, "retentionFull": -1`), "nbms:backup.offHost.retentionFull", "min=0"},
		{"backup", offHost(`, "cipher": "none"`), "nbms:backup", "unknown field"},
		{"backupS3Key", "two words", "nbms:backupS3Key", "printable characters without spaces"},
		{"backupCipherPass", "short-passphrase", "nbms:backupCipherPass", "at least 20 printable characters"},
		{"backupCipherPass", "a passphrase with spaces in it", "nbms:backupCipherPass", "at least 20 printable characters"},
		{"recover", "yesterday", "nbms:recover", `want "latest" or an RFC 3339 time`},
		{"recover", "2026-12-07 14:05:00", "nbms:recover", `want "latest" or an RFC 3339 time`},
		{"recover", "latest", "nbms:recover", "give it as nbms:backupCipherPass"},
		{"backup", `{"archiveTimeout": "5s", "offHost": ` + exampleOffHost + `}`, "nbms:backup.archiveTimeout", "want whole seconds from 10s to 1h0m0s"},
		{"backup", `{"archiveTimeout": "90.5s", "offHost": ` + exampleOffHost + `}`, "nbms:backup.archiveTimeout", "want whole seconds"},
		{"backup", `{"archiveTimeout": "2h", "offHost": ` + exampleOffHost + `}`, "nbms:backup.archiveTimeout", "want whole seconds"},
		{"backup", `{"archiveTimeout": "soon", "offHost": ` + exampleOffHost + `}`, "nbms:backup.archiveTimeout", "positive duration"},
		{"backupSubnet", "172.16.237.0/29", "nbms:backupSubnet", "needs at least a /28"},
		{"backupSubnet", "172.16.239.0/27", "nbms:backupSubnet", "overlaps internalSubnet 172.16.239.0/24"},
		{"backupSubnet", "", "nbms:backupSubnet", "required"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			raw := prodValues(t)
			raw["backup"] = offHost("")
			raw[tc.key] = tc.value
			_, err := stacks.Parse("prod", values(raw))
			serr := stackError(t, err)
			assert.Equal(t, []string{tc.wantKey}, serr.Keys(), err.Error())
			assert.Contains(t, err.Error(), tc.reason)
		})
	}
}

func TestRecovery(t *testing.T) {
	const pass = "0123456789abcdefghijABCDEFGHIJ0123456789abcdefghijABCDEFGHIJ0123"
	for _, target := range []string{"latest", "2026-12-07T14:05:00Z", "2026-12-07T15:05:00.123456+01:00"} {
		raw := prodValues(t)
		raw["recover"], raw["backupCipherPass"] = target, pass
		c, err := stacks.Parse("prod", values(raw))
		require.NoError(t, err, target)
		assert.Equal(t, target, c.Recover)
		assert.True(t, c.BackupCipherPass.IsSet())
	}
	// Without an off-host repository there is nothing to recover from,
	// and no passphrase to give.
	raw := prodValues(t)
	raw["backup"] = `{"fullCron": "30 1 * * 0"}`
	delete(raw, "backupS3Key")
	delete(raw, "backupS3KeySecret")
	raw["recover"], raw["backupCipherPass"] = "latest", pass
	_, err := stacks.Parse("prod", values(raw))
	assert.Equal(t, []string{"nbms:backupCipherPass", "nbms:recover"}, stackError(t, err).Keys())
	assert.Contains(t, err.Error(), "nbms:recover: recovers from the off-host repository, and nbms:backup.offHost names none")
	assert.NotContains(t, err.Error(), pass, "a secret is never echoed")
	// The passphrase is secret config only.
	raw = prodValues(t)
	raw["backupCipherPass"] = pass
	_, err = stacks.Parse("prod", stacks.Values{Raw: raw, Secret: func(key string) bool { return key != "backupCipherPass" && stacks.IsSecretKey(key) }})
	assert.Equal(t, []string{"nbms:backupCipherPass"}, stackError(t, err).Keys())
	assert.NotContains(t, err.Error(), pass)
}

func TestDevStackOverridesOnlyWhatItNames(t *testing.T) {
	c, err := stacks.Parse("dev", values(readStackFile(t, "dev")))
	require.NoError(t, err)
	assert.Equal(t, 512, c.Limits[stacks.RoleDB].MemoryMB, "overridden")
	assert.Equal(t, stacks.Defaults().Limits[stacks.RoleDB].Nproc, c.Limits[stacks.RoleDB].Nproc, "rest of the role kept")
	assert.Equal(t, stacks.Defaults().Limits[stacks.RoleApp], c.Limits[stacks.RoleApp], "other roles kept")
	assert.Equal(t, "127.0.0.1", c.BindAddress)
	assert.False(t, c.TLS())
}

// Each bad value is reported against its own key, with the rule's reason.
func TestEachBadValueNamesItsKey(t *testing.T) {
	cases := []struct {
		key, value string
		wantKey    string
		reason     string
	}{
		{"corsOrigins", `["*"]`, "nbms:corsOrigins[0]", `wildcard origin "*" is not allowed`},
		{"corsOrigins", `["https://a.example.org", "null"]`, "nbms:corsOrigins[1]", `origin "null" is not allowed`},
		{"corsOrigins", `["http://portal.example.org"]`, "nbms:corsOrigins[0]", "https in production"},
		{"csrfTrustedOrigins", `["https://nbms.example.org/"]`, "nbms:csrfTrustedOrigins[0]", "nothing after"},
		{"allowedHosts", `["*.example.org"]`, "nbms:allowedHosts[0]", "wildcards are not allowed"},
		{"allowedHosts", `["nbms.example.org", "https://nbms.example.org"]`, "nbms:allowedHosts[1]", "not a host name"},
		{"allowedHosts", `["a.example.org,b.example.org"]`, "nbms:allowedHosts[0]", "comma"},
		{"domain", "not a host!", "nbms:domain", "hostname_rfc1123"},
		{"profile", "production", "nbms:profile", "oneof"},
		{"bindAddress", "localhost", "nbms:bindAddress", "ip"},
		{"bindAddress", "0.0.0.0", "nbms:bindAddress", "every host address"},
		{"bindAddress", "::", "nbms:bindAddress", "CIS 5.14"},
		{"httpsPort", "80", "nbms:httpsPort", "must differ"},
		{"httpPort", "70000", "nbms:httpPort", "max=65535"},
		{"httpPort", "eighty", "nbms:httpPort", "cannot decode"},
		{"tlsMode", "off", "nbms:tlsMode", "must be provided in production"},
		{"edgeSubnet", "0.0.0.0", "nbms:edgeSubnet", "cidrv4"},
		{"internalSubnet", "172.16.238.128/25", "nbms:internalSubnet", "overlaps edgeSubnet 172.16.238.0/24"},
		{"internalSubnet", "", "nbms:internalSubnet", "required"},
		{"edgeSubnet", "172.16.238.0/27", "nbms:edgeSubnet", "needs at least a /26"},
		{"images", `{"base": "debian:latest"}`, "nbms:images.base", "name:tag@sha256"},
		{"images", `{"base": "debian:latest@sha256:` + strings.Repeat("a", 64) + `"}`, "nbms:images.base", "latest"},
		{"images", `{"base": "nbms-base:bookworm"}`, "nbms:images.base", "local image ID sha256:"},
		{"images", `{"base": ""}`, "nbms:images.base", "required"},
		{"images", `{"nginx": "x"}`, "nbms:images", "unknown field"},
		{"images", `{"appVersion": "1.4 rc; rm -rf /"}`, "nbms:images.appVersion", "version label"},
		{"buildCaCertificates", "not pem", "nbms:buildCaCertificates", "not PEM"},
		{"buildCaCertificates", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "nbms:buildCaCertificates", "PRIVATE KEY, not a CERTIFICATE"},
		{"limits", `{"app": {"memoryMb": 8}}`, "nbms:limits.app.memoryMb", "min=32"},
		{"limits", `{"app": {"cpus": 0}}`, "nbms:limits.app.cpus", "gt=0"},
		{"secretGenerations", `{"secretKey": -1}`, "nbms:secretGenerations.secretKey", "min=0"},
		{"limits", `{"worker": {"memoryMb": 64, "cpus": 1, "nproc": 64}}`, "nbms:limits.worker", "unknown role"},
		{"backup", `{"fullCron": "every sunday", "offHost": ` + exampleOffHost + `}`, "nbms:backup.fullCron", "cron"},
		{"backup", `{"retentionFull": 0, "offHost": ` + exampleOffHost + `}`, "nbms:backup.retentionFull", "min=1"},
		{"logs", `{"maxSize": "10MB"}`, "nbms:logs.maxSize", "like 10m"},
		{"logs", `{"maxFile": 0}`, "nbms:logs.maxFile", "min=1"},
		{"app", `{"hstsSeconds": 3600}`, "nbms:app.hstsSeconds", "at least 31536000"},
		{"app", `{"logLevel": "debug"}`, "nbms:app.logLevel", "not allowed in production"},
		{"app", `{"maxUploadBytes": 1024}`, "nbms:app.maxUploadBytes", "below app.maxRequestBodyBytes"},
		{"probe", `{"timeout": "soon"}`, "nbms:probe.timeout", "positive duration"},
		{"colour", "blue", "nbms:colour", "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			raw := prodValues(t)
			raw[tc.key] = tc.value
			_, err := stacks.Parse("prod", values(raw))
			serr := stackError(t, err)
			assert.Equal(t, []string{tc.wantKey}, serr.Keys(), err.Error())
			assert.Contains(t, err.Error(), tc.reason)
		})
	}
}

// Docker's dynamic range, where every app release and nginx get their
// edge addresses, is the subnet's upper half.
func TestEdgeDynamicRange(t *testing.T) {
	for _, tc := range []struct{ subnet, dynamic string }{
		{"172.16.238.0/24", "172.16.238.128/25"},
		{"10.20.0.0/16", "10.20.128.0/17"},
		{"192.0.2.64/26", "192.0.2.96/27"},
	} {
		raw := prodValues(t)
		raw["edgeSubnet"] = tc.subnet
		cfg, err := stacks.Parse("prod", values(raw))
		require.NoError(t, err, tc.subnet)
		assert.Equal(t, tc.dynamic, cfg.EdgeDynamicRange(), tc.subnet)
		edge := netip.MustParsePrefix(tc.subnet).Masked()
		dynamic := netip.MustParsePrefix(cfg.EdgeDynamicRange())
		assert.True(t, edge.Contains(dynamic.Addr()) && dynamic.Bits() == edge.Bits()+1, tc.subnet)
	}
}

func TestOneErrorNamesEveryBadKey(t *testing.T) {
	raw := prodValues(t)
	raw["corsOrigins"] = `["*", "https://ok.example.org", "null"]`
	raw["allowedHosts"] = `["*"]`
	raw["images"] = `{"base": "debian:bookworm"}`
	raw["limits"] = `{"db": {"nproc": 1}}`
	raw["backup"] = strings.Replace(raw["backup"], `"diffCron": "30 1 * * 1-6"`, `"diffCron": "x"`, 1)
	raw["app"] = `{"hstsSeconds": 1}`
	_, err := stacks.Parse("prod", values(raw))
	serr := stackError(t, err)
	want := []string{
		"nbms:allowedHosts[0]", "nbms:corsOrigins[0]", "nbms:corsOrigins[2]", "nbms:images.base",
		"nbms:limits.db.nproc", "nbms:backup.diffCron", "nbms:app.hstsSeconds",
	}
	assert.ElementsMatch(t, want, serr.Keys())
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, `invalid stack configuration for stack "prod": `), msg)
	assert.Contains(t, msg, `nbms:corsOrigins[0]: wildcard origin "*" is not allowed`)
	assert.Equal(t, len(serr.Problems)+1, strings.Count(msg, "\n")+1, "a header line plus one line per problem")
}

func TestSecretsMustBeSecretAndAreNeverEchoed(t *testing.T) {
	raw := prodValues(t)
	key := raw["tlsKey"]
	raw["sentryDsn"] = "not-a-dsn-but-secret-value"
	// Plaintext secret: named, refused, and not echoed.
	_, err := stacks.Parse("prod", stacks.Values{Raw: raw, Secret: func(string) bool { return false }})
	serr := stackError(t, err)
	assert.Equal(t, []string{"nbms:backupS3Key", "nbms:backupS3KeySecret", "nbms:sentryDsn", "nbms:tlsKey"}, serr.Keys())
	assert.NotContains(t, err.Error(), raw["backupS3KeySecret"])
	assert.Contains(t, err.Error(), "pulumi config set --secret nbms:tlsKey")
	// Secret but invalid: named, and not echoed either.
	_, err = stacks.Parse("prod", values(raw))
	serr = stackError(t, err)
	assert.Equal(t, []string{"nbms:sentryDsn"}, serr.Keys())
	for _, secret := range []string{"not-a-dsn-but-secret-value", strings.Split(key, "\n")[1]} {
		assert.NotContains(t, err.Error(), secret)
	}
	// A key that does not match the certificate.
	_, otherKey := testsupport.SelfSignedCert(t, "nbms.example.org")
	raw["tlsKey"], raw["sentryDsn"] = otherKey, "https://public@sentry.example.org/42"
	_, err = stacks.Parse("prod", values(raw))
	serr = stackError(t, err)
	assert.Equal(t, []string{"nbms:tlsKey"}, serr.Keys())
	assert.NotContains(t, err.Error(), strings.Split(otherKey, "\n")[1])
}

func TestCertificateMustCoverEveryHost(t *testing.T) {
	raw := prodValues(t)
	raw["allowedHosts"] = `["nbms.example.org", "www.example.org"]`
	_, err := stacks.Parse("prod", values(raw))
	serr := stackError(t, err)
	assert.Equal(t, []string{"nbms:tlsCertificate"}, serr.Keys())
	assert.Contains(t, err.Error(), `does not cover "www.example.org"`)
}

func TestSecretNeverPrints(t *testing.T) {
	c, err := stacks.Parse("prod", values(prodValues(t)))
	require.NoError(t, err)
	out, err := json.Marshal(c)
	require.NoError(t, err)
	dump := fmt.Sprintf("%v %+v %s", c, c, out)
	assert.NotContains(t, dump, "PRIVATE KEY")
	assert.Contains(t, string(out), `"tlsKey":"[secret]"`)
}

func TestStackNameIsChecked(t *testing.T) {
	_, err := stacks.Parse("Prod Stack", values(prodValues(t)))
	serr := stackError(t, err)
	assert.Equal(t, []string{"stack"}, serr.Keys())
}

func TestParseStackFileRefusesEncryptedValues(t *testing.T) {
	_, err := stacks.ParseStackFile([]byte("config:\n  nbms:tlsKey: secure: v1:abc\n"))
	assert.ErrorContains(t, err, "carry no secret")
	raw, err := stacks.ParseStackFile([]byte("# c\nconfig:\n  docker:host: unix:///x\n  nbms:tlsMode: \"off\"\n  nbms:httpPort: 8080\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"tlsMode": "off", "httpPort": "8080"}, raw)
}

func TestCheckCACertificates(t *testing.T) {
	ca := testsupport.NewCA(t, "egress CA")
	other := testsupport.NewCA(t, "artifact CA")
	leaf, key := ca.Issue(t, "nbms.example.org")
	assert.NoError(t, stacks.CheckCACertificates(""))
	assert.NoError(t, stacks.CheckCACertificates(ca.PEM))
	assert.NoError(t, stacks.CheckCACertificates(ca.PEM+"\n"+other.PEM+"\n"), "several, as cat *.crt gives them")
	assert.ErrorContains(t, stacks.CheckCACertificates(leaf), "certificate 1 (CN=nbms.example.org) is not a CA certificate")
	err := stacks.CheckCACertificates(ca.PEM + key)
	assert.ErrorContains(t, err, "block 2 is a PRIVATE KEY, not a CERTIFICATE")
	assert.NotContains(t, err.Error(), strings.TrimSpace(strings.Split(key, "\n")[1]), "no key material in the message")
	assert.ErrorContains(t, stacks.CheckCACertificates(ca.PEM+"junk"), "block 2 is not PEM")
}

func TestCheckImageRef(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("0123456789abcdef", 4)
	id := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	for _, ok := range []string{"debian:bookworm-slim" + digest, "registry.example.org:5000/team/debian:12.8" + digest, id, stacks.DefaultBaseImage} {
		assert.NoError(t, stacks.CheckImageRef(ok), ok)
	}
	for _, bad := range []string{
		"debian", "debian:bookworm", "debian" + digest, "debian:latest" + digest, "debian:LATEST" + digest, "debian:12@sha256:abc",
		// An image ID is 64 lower-case hex digits, nothing before or after.
		"sha256:" + strings.Repeat("A", 64), id[:70], id + ":x", "sha256:" + id,
	} {
		assert.Error(t, stacks.CheckImageRef(bad), bad)
	}
}

// FuzzParse: any raw values give a config or an *Error; Parse never panics
// and never echoes the secret values.
func FuzzParse(f *testing.F) {
	f.Add("prod", `["*"]`, `{"app": {"memoryMb": 1}}`, "80", "secret-key-material", `{"RATE_LIMIT_PUBLIC_API": "600/m"}`)
	f.Add("dev", `[]`, `{}`, "x", "", `{"DB_MIN_CONNS": 2, "RATE_LIMIT_ENABLED": false}`)
	f.Add("", `{`, `[]`, "-1", "\x00", `{"SECRET_KEY": {"x": null}}`)
	f.Fuzz(func(t *testing.T, profile, origins, limits, port, key, appEnv string) {
		raw := map[string]string{"profile": profile, "corsOrigins": origins, "limits": limits, "httpPort": port, "tlsKey": key, "domain": "nbms.example.org", "appEnv": appEnv}
		c, err := stacks.Parse("fuzz", values(maps.Clone(raw)))
		require.NotNil(t, c)
		if err == nil {
			return
		}
		var serr *stacks.Error
		require.ErrorAs(t, err, &serr)
		require.NotEmpty(t, serr.Problems)
		if k := strings.TrimSpace(key); len(k) >= 8 && !strings.Contains(profile+origins+limits+port+appEnv, k) {
			require.NotContains(t, err.Error(), k)
		}
	})
}

// A schedule the stack accepts is one the deployed scheduler runs: the
// forms validator's own "cron" tag allows but `nbms backup-schedule`
// refuses are refused here too.
func TestBackupSchedulesFollowTheSchedulersParser(t *testing.T) {
	for _, spec := range []string{"@daily", "@every 1h", "0 0 2 * * *"} {
		raw := prodValues(t)
		raw["backup"] = `{"fullCron": "` + spec + `"}`
		_, err := stacks.Parse("prod", values(raw))
		require.Error(t, err, spec)
		assert.Contains(t, err.Error(), "backup.fullCron", spec)
	}
}

// nbms:appEnv tunes the contract's stack-tunable variables by name; the
// values reach the app's environment as text (numbers and booleans too:
// `pulumi config set --path` stores "600" and "true" as such).
func TestAppEnvTunesTheApp(t *testing.T) {
	raw := prodValues(t)
	raw["appEnv"] = `{"RATE_LIMIT_PUBLIC_API": "600/1m", "SESSION_LIFETIME": "8h", "DB_MIN_CONNS": 2, "RATE_LIMIT_ENABLED": true, "SECURE_CSP": "default-src 'none'; frame-ancestors 'none'"}`
	c, err := stacks.Parse("prod", values(raw))
	require.NoError(t, err)
	env := c.AppSettings()
	assert.Equal(t, "600/1m", env["RATE_LIMIT_PUBLIC_API"])
	assert.Equal(t, "8h", env["SESSION_LIFETIME"])
	assert.Equal(t, "2", env["DB_MIN_CONNS"])
	assert.Equal(t, "true", env["RATE_LIMIT_ENABLED"])
	s, err := c.AppConfig()
	require.NoError(t, err)
	assert.Equal(t, config.Rate{Count: 600, Period: time.Minute}, s.RateLimitPublicAPI)
	assert.Equal(t, 8*time.Hour, s.SessionLifetime)
	assert.Equal(t, 2, s.DBMinConns)
	assert.Equal(t, "default-src 'none'; frame-ancestors 'none'", s.CSP, "and so the edge's security headers too")

	// Unset, the contract's defaults apply, and the program's own values
	// are all there is.
	c, err = stacks.Parse("prod", values(prodValues(t)))
	require.NoError(t, err)
	assert.NotContains(t, c.AppSettings(), "RATE_LIMIT_PUBLIC_API")
}

// Each nbms:appEnv problem is named by its own key, with the reason: the
// contract's, or why the stack may not set that name.
func TestAppEnvProblemsNameTheirKey(t *testing.T) {
	cases := []struct {
		name, appEnv string
		wantKeys     []string
		reason       string
	}{
		{"unknown name", `{"RATE_LIMIT_PUBLIK_API": "600/1m"}`, []string{"nbms:appEnv.RATE_LIMIT_PUBLIK_API"}, "is not a variable of the env contract"},
		{"lower-case name", `{"rate_limit_public_api": "600/1m"}`, []string{"nbms:appEnv.rate_limit_public_api"}, "did you mean RATE_LIMIT_PUBLIC_API?"},
		{"a typed key's variable", `{"LOG_LEVEL": "warn"}`, []string{"nbms:appEnv.LOG_LEVEL"}, "is set by the typed key nbms:app.logLevel; set that key instead"},
		{"a variable the program derives from a typed key", `{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}`, []string{"nbms:appEnv.TRUSTED_PROXY_CIDRS"}, "typed key nbms:edgeSubnet"},
		{"a secret with a typed key", `{"SENTRY_DSN": "https://leaked-dsn-key@sentry.example.org/1"}`, []string{"nbms:appEnv.SENTRY_DSN"}, "pulumi config set --secret nbms:sentryDsn"},
		{"the program's variable", `{"HTTP_ADDR": ":9000"}`, []string{"nbms:appEnv.HTTP_ADDR"}, "is set by the program"},
		{"the program's secret", `{"DATABASE_URL": "postgres://nbms:leaked-db-password@elsewhere/nbms"}`, []string{"nbms:appEnv.DATABASE_URL"}, "is set by the program"},
		{"a secret without a key", `{"SECRET_KEY_PREVIOUS": "leaked-previous-key"}`, []string{"nbms:appEnv.SECRET_KEY_PREVIOUS"}, "is a secret variable; nbms:appEnv holds plain values only"},
		{"a value the contract refuses", `{"RATE_LIMIT_PUBLIC_API": "600/m"}`, []string{"nbms:appEnv.RATE_LIMIT_PUBLIC_API"}, `"600/m" is not a rate: period "m" must be a duration from 1s to 24h`},
		{"a value outside the contract's bounds", `{"SESSION_LIFETIME": "800h"}`, []string{"nbms:appEnv.SESSION_LIFETIME"}, `"800h" does not satisfy "gt=0,lte=720h"`},
		{"a whole number", `{"DB_MIN_CONNS": "two"}`, []string{"nbms:appEnv.DB_MIN_CONNS"}, "is not a whole number"},
		{"a production rule", `{"RATE_LIMIT_ENABLED": false}`, []string{"nbms:appEnv.RATE_LIMIT_ENABLED"}, "[NBMS-C008]"},
		{"a rule across variables", `{"DB_MIN_CONNS": 20}`, []string{"nbms:appEnv.DB_MIN_CONNS"}, "[NBMS-C006]"},
		{"an empty value", `{"SENTRY_RELEASE": ""}`, []string{"nbms:appEnv.SENTRY_RELEASE"}, "remove the entry to keep the contract's default"},
		{"an object value", `{"RATE_LIMIT_PUBLIC_API": {"count": 600}, "SESSION_LIFETIME": "800h"}`, []string{"nbms:appEnv.RATE_LIMIT_PUBLIC_API", "nbms:appEnv.SESSION_LIFETIME"}, "must be a string, a number or a boolean"},
		{"not an object", `["RATE_LIMIT_PUBLIC_API=600/1m"]`, []string{"nbms:appEnv"}, "must be an object of NAME: value"},
		{"every bad entry at once", `{"LOG_LEVEL": "warn", "HTTP_ADDR": ":1", "NOPE": "1", "SESSION_IDLE_TIMEOUT": "0s"}`,
			[]string{"nbms:appEnv.HTTP_ADDR", "nbms:appEnv.LOG_LEVEL", "nbms:appEnv.NOPE", "nbms:appEnv.SESSION_IDLE_TIMEOUT"}, "set that key instead"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := prodValues(t)
			raw["appEnv"] = tc.appEnv
			_, err := stacks.Parse("prod", values(raw))
			serr := stackError(t, err)
			assert.Equal(t, tc.wantKeys, serr.Keys(), err.Error())
			assert.Contains(t, err.Error(), tc.reason)
			for _, secret := range []string{"leaked-dsn-key", "leaked-db-password", "leaked-previous-key"} {
				assert.NotContains(t, err.Error(), secret, "a secret put here by mistake is not echoed")
			}
		})
	}
}

// An appEnv problem is reported with the stack's other problems, in one
// round.
func TestAppEnvProblemsComeWithTheOthers(t *testing.T) {
	raw := prodValues(t)
	raw["corsOrigins"] = `["*"]`
	raw["appEnv"] = `{"RATE_LIMIT_PUBLIC_API": "lots"}`
	_, err := stacks.Parse("prod", values(raw))
	serr := stackError(t, err)
	assert.ElementsMatch(t, []string{"nbms:corsOrigins[0]", "nbms:appEnv.RATE_LIMIT_PUBLIC_API"}, serr.Keys())
}

// nbms:appEnv is plain: set as a secret, its values would still land in the
// container's plain environment, so it is refused.
func TestAppEnvIsNeverASecret(t *testing.T) {
	raw := prodValues(t)
	raw["appEnv"] = `{"RATE_LIMIT_PUBLIC_API": "600/1m"}`
	_, err := stacks.Parse("prod", stacks.Values{Raw: raw, Secret: func(k string) bool { return stacks.IsSecretKey(k) || k == "appEnv" }})
	serr := stackError(t, err)
	assert.Equal(t, []string{"nbms:appEnv"}, serr.Keys())
	assert.Contains(t, err.Error(), "is set as a secret")
}

// The contract's Stack field and this package agree: its typed keys exist
// here, its tuning key is Config.AppEnv's, and no variable the program sets
// (for any profile or TLS mode) is one an operator may also tune by name.
// A variable the program starts to set must be given its key or
// config.ProgramOwned in app/config, or this test fails.
func TestContractStackKeysMatchTheStack(t *testing.T) {
	field, ok := reflect.TypeOf(stacks.Config{}).FieldByName("AppEnv")
	require.True(t, ok)
	assert.Equal(t, config.StackEnvKey, stacks.Namespace+":"+strings.Split(field.Tag.Get("json"), ",")[0])

	for _, v := range config.Vars() {
		if v.Stack == "" || v.Stack == config.ProgramOwned {
			continue
		}
		path, ok := strings.CutPrefix(v.Stack, stacks.Namespace+":")
		require.True(t, ok, "%s: %s", v.Name, v.Stack)
		assert.True(t, hasKey(reflect.TypeOf(stacks.Config{}), strings.Split(path, ".")), "%s: %s is not a stack key", v.Name, v.Stack)
	}

	dev := readStackFile(t, "dev")
	dev["corsOrigins"] = `["http://localhost:3000"]`
	for name, raw := range map[string]map[string]string{"prod": prodValues(t), "dev": dev} {
		c, err := stacks.Parse(name, values(raw))
		require.NoError(t, err, name)
		for envName := range c.AppSettings() {
			v, ok := config.Lookup(envName)
			require.True(t, ok, envName)
			assert.False(t, v.StackTunable(), "%s: the program sets %s, so app/config must name its typed key or config.ProgramOwned", name, envName)
		}
	}
}

func hasKey(t reflect.Type, path []string) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		if strings.Split(f.Tag.Get("json"), ",")[0] != path[0] {
			continue
		}
		if len(path) == 1 {
			return true
		}
		return f.Type.Kind() == reflect.Struct && hasKey(f.Type, path[1:])
	}
	return false
}
