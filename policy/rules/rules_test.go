package rules_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/policy/internal/fixture"
	"github.com/nbms-deploy/nbms/policy/rules"
)

// stackWith returns the passing stack with one container's inputs changed.
func stackWith(role string, change func(c map[string]any)) []fixture.Res {
	rs := fixture.Good()
	for i, r := range rs {
		if r.URN == fixture.URN(rules.ContainerType, role) {
			c := fixture.Clone(r.Inputs)
			change(c)
			rs[i].Inputs = c
		}
	}
	return rs
}

func setLabel(c map[string]any, key, value string) {
	labels := c["labels"].([]any)
	for _, l := range labels {
		if l.(map[string]any)["label"] == key {
			l.(map[string]any)["value"] = value
			return
		}
	}
	c["labels"] = append(labels, map[string]any{"label": key, "value": value})
}

func dropLabel(c map[string]any, key string) {
	var kept []any
	for _, l := range c["labels"].([]any) {
		if l.(map[string]any)["label"] != key {
			kept = append(kept, l)
		}
	}
	c["labels"] = kept
}

func setEnv(c map[string]any, key, value string, secret bool) {
	var env []any
	for _, e := range fixture.AppEnv() {
		if !strings.HasPrefix(e.(string), key+"=") && !strings.HasPrefix(e.(string), key+"_FILE=") {
			env = append(env, e)
		}
	}
	if value != "" {
		env = append(env, key+"="+value)
	}
	if secret {
		c["envs"] = fixture.Secret(env)
	} else {
		c["envs"] = env
	}
}

func findingsOf(t *testing.T, rs []fixture.Res, policy string) []rules.Finding {
	t.Helper()
	rep := rules.Evaluate(fixture.Resources(rs), rules.Config{})
	var out []rules.Finding
	for _, f := range rep.Findings() {
		if f.Policy == policy {
			out = append(out, f)
		}
	}
	return out
}

func TestGoodStackPassesEveryPolicy(t *testing.T) {
	rep := rules.Evaluate(fixture.Resources(fixture.Good()), rules.Config{})
	assert.Empty(t, rep.Findings())
	assert.False(t, rep.MandatoryFailed())
	require.Len(t, rep.Policies, len(rules.All()))
	for _, p := range rep.Policies {
		assert.Equal(t, "pass", p.Status, p.Name)
	}
}

type policyCase struct {
	name   string
	stack  []fixture.Res
	kind   rules.FindingKind // "" means the policy passes
	expect string            // substring of the first finding's message
}

func runCases(t *testing.T, policy string, cases []policyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := findingsOf(t, tc.stack, policy)
			if tc.kind == "" {
				assert.Empty(t, fs)
				return
			}
			require.NotEmpty(t, fs, "expected a %s finding", tc.kind)
			assert.Equal(t, tc.kind, fs[0].Kind)
			assert.Contains(t, fs[0].Message, tc.expect)
			assert.NotEmpty(t, fs[0].URN)
			if tc.kind == rules.CannotEvaluate {
				assert.Equal(t, rules.Advisory, fs[0].Level)
			} else {
				assert.Equal(t, rules.Mandatory, fs[0].Level)
			}
			for _, f := range fs {
				for _, s := range fixture.SecretStrings {
					assert.NotContains(t, f.Message, s)
				}
			}
		})
	}
}

func TestEnvContract(t *testing.T) {
	runCases(t, "nbms-app-configure-env-contract", []policyCase{
		{"valid prod env, secrets as files", fixture.Good(), "", ""},
		{"missing DATABASE_URL", stackWith("app", func(c map[string]any) { setEnv(c, "DATABASE_URL", "", true) }), rules.Violation, "DATABASE_URL required in prod"},
		{"weak SECRET_KEY named, not echoed", stackWith("app", func(c map[string]any) { setEnv(c, "SECRET_KEY", "short-secret-value", true) }), rules.Violation, "SECRET_KEY [NBMS-W009]"},
		{"plaintext secret", stackWith("app", func(c map[string]any) { setEnv(c, "SECRET_KEY", fixture.SecretKey, false) }), rules.Violation, "SECRET_KEY is a secret variable but is set in the container's environment"},
		{"a secret-flagged value is still in docker inspect", stackWith("app", func(c map[string]any) { setEnv(c, "SECRET_KEY", fixture.SecretKey, true) }), rules.Violation, "set SECRET_KEY_FILE"},
		{"plaintext secret in migrate too", stackWith("migrate", func(c map[string]any) { c["envs"] = fixture.AppEnvWithValues() }), rules.Violation, "SECRET_KEY is a secret variable"},
		{"a password of another program in the environment", stackWith("db", func(c map[string]any) { c["envs"] = fixture.Secret([]any{"POSTGRES_PASSWORD=" + fixture.DBPassword}) }), rules.Violation, "POSTGRES_PASSWORD looks like a secret"},
		{"both forms", stackWith("app", func(c map[string]any) {
			c["envs"] = append(fixture.AppEnv(), fixture.Secret("REDIS_URL=redis://:"+fixture.RedisSecret+"@cache:6379/0"))
		}), rules.Violation, "REDIS_URL set either REDIS_URL or REDIS_URL_FILE, not both"},
		{"profile label disagrees", stackWith("app", func(c map[string]any) { setLabel(c, rules.LabelProfile, "dev") }), rules.Violation, "nbms.profile label"},
		{"HSTS below the floor", stackWith("app", func(c map[string]any) { setEnv(c, "SECURE_HSTS_SECONDS", "600", true) }), rules.Violation, "SECURE_HSTS_SECONDS [NBMS-W004]"},
		{"envs unknown in preview", stackWith("app", func(c map[string]any) { c["envs"] = fixture.Unknown() }), rules.CannotEvaluate, "value unknown during preview"},
		{"one entry unknown", stackWith("app", func(c map[string]any) { c["envs"] = append(fixture.AppEnv()[:1], fixture.Unknown()) }), rules.CannotEvaluate, "cannot evaluate envs"},
		{"envs only as ciphertext", stackWith("app", func(c map[string]any) { c["envs"] = fixture.Ciphertext() }), rules.CannotEvaluate, "ciphertext"},
	})
}

func TestEnvContractConfigRaisesHSTS(t *testing.T) {
	cfg, err := rules.ParseConfig([]byte(`{"nbms-app-configure-env-contract": {"minHstsSeconds": 94608000}}`))
	require.NoError(t, err)
	rep := rules.Evaluate(fixture.Resources(fixture.Good()), cfg)
	var msgs []string
	for _, f := range rep.Findings() {
		msgs = append(msgs, f.Message)
	}
	require.Len(t, msgs, 1)
	assert.Contains(t, msgs[0], "SECURE_HSTS_SECONDS is 63072000; this organisation requires at least 94608000")
}

func TestNoWildcardCORS(t *testing.T) {
	runCases(t, "nbms-app-disallow-wildcard-cors", []policyCase{
		{"exact https origins", fixture.Good(), "", ""},
		{"wildcard", stackWith("app", func(c map[string]any) { setEnv(c, "CORS_ALLOWED_ORIGINS", "*", false) }), rules.Violation, `wildcard origin "*"`},
		{"null", stackWith("app", func(c map[string]any) { setEnv(c, "CORS_ALLOWED_ORIGINS", "null", false) }), rules.Violation, `"null" is not allowed`},
		{"pattern", stackWith("app", func(c map[string]any) { setEnv(c, "CSRF_TRUSTED_ORIGINS", "https://*.example.org", false) }), rules.Violation, "contains a wildcard"},
		{"http in production", stackWith("app", func(c map[string]any) { setEnv(c, "CORS_ALLOWED_ORIGINS", "http://portal.example.org", false) }), rules.Violation, "must use https in production"},
		{"secret-flagged origin is not echoed", stackWith("app", func(c map[string]any) { setEnv(c, "CORS_ALLOWED_ORIGINS", "https://hidden.example.org/path", true) }), rules.Violation, "origin \"[secret]\""},
		{"unknown envs", stackWith("app", func(c map[string]any) { c["envs"] = fixture.Unknown() }), rules.CannotEvaluate, "CORS_ALLOWED_ORIGINS"},
	})
}

func TestContainerPolicies(t *testing.T) {
	type tc = policyCase
	cases := map[string][]tc{
		"nbms-container-require-labels": {
			{"labelled", fixture.Good(), "", ""},
			{"no role", stackWith("cache", func(c map[string]any) { dropLabel(c, rules.LabelRole) }), rules.Violation, "must carry the label nbms.role"},
			{"bad profile", stackWith("cache", func(c map[string]any) { setLabel(c, rules.LabelProfile, "staging") }), rules.Violation, "must be prod or dev"},
			{"labels unknown", stackWith("cache", func(c map[string]any) { c["labels"] = fixture.Unknown() }), rules.CannotEvaluate, "labels"},
		},
		"docker-container-disallow-privileged": {
			{"not privileged", fixture.Good(), "", ""},
			{"privileged", stackWith("app", func(c map[string]any) { c["privileged"] = true }), rules.Violation, "must not run privileged"},
			{"unknown", stackWith("app", func(c map[string]any) { c["privileged"] = fixture.Unknown() }), rules.CannotEvaluate, "privileged"},
		},
		"docker-container-restrict-capabilities": {
			{"drop ALL, reasoned adds", fixture.Good(), "", ""},
			{"no drops", stackWith("app", func(c map[string]any) { c["capabilities"] = map[string]any{"drops": []any{"NET_RAW"}} }), rules.Violation, "must drop ALL"},
			{"no capabilities block", stackWith("app", func(c map[string]any) { delete(c, "capabilities") }), rules.Violation, "must drop ALL"},
			{"add without reason", stackWith("db", func(c map[string]any) {
				c["capabilities"] = map[string]any{"drops": []any{"ALL"}, "adds": []any{"CHOWN"}}
			}), rules.Violation, "without naming it"},
			{"SYS_ADMIN never", stackWith("proxy", func(c map[string]any) {
				c["capabilities"] = map[string]any{"drops": []any{"ALL"}, "adds": []any{"CAP_SYS_ADMIN"}}
				setLabel(c, rules.LabelCapabilitiesReason, "SYS_ADMIN: because")
			}), rules.Violation, "equivalent to root"},
		},
		"docker-container-enable-no-new-privileges": {
			{"set", fixture.Good(), "", ""},
			{"equals form", stackWith("app", func(c map[string]any) { c["securityOpts"] = []any{"no-new-privileges=true"} }), "", ""},
			{"missing", stackWith("app", func(c map[string]any) { delete(c, "securityOpts") }), rules.Violation, "no-new-privileges:true"},
			{"unknown", stackWith("app", func(c map[string]any) { c["securityOpts"] = fixture.Unknown() }), rules.CannotEvaluate, "securityOpts"},
		},
		"docker-container-disallow-unconfined-profiles": {
			{"default profiles", fixture.Good(), "", ""},
			{"seccomp unconfined", stackWith("app", func(c map[string]any) { c["securityOpts"] = []any{"no-new-privileges:true", "seccomp=unconfined"} }), rules.Violation, "seccomp:unconfined"},
		},
		"docker-container-enable-read-only-root-filesystem": {
			{"read-only or exempt", fixture.Good(), "", ""},
			{"writable without reason", stackWith("app", func(c map[string]any) { c["readOnly"] = false }), rules.Violation, "readOnly = true"},
			{"exempt label empty", stackWith("proxy", func(c map[string]any) { setLabel(c, rules.LabelReadOnlyExempt, " ") }), rules.Violation, rules.LabelReadOnlyExempt},
		},
		"docker-container-configure-memory-limit": {
			{"limited", fixture.Good(), "", ""},
			{"unlimited", stackWith("cache", func(c map[string]any) { delete(c, "memory") }), rules.Violation, "must set a memory limit"},
			{"zero", stackWith("cache", func(c map[string]any) { c["memory"] = 0.0 }), rules.Violation, "must set a memory limit"},
		},
		"docker-container-configure-cpu-limit": {
			{"cpus", fixture.Good(), "", ""},
			{"cpuShares instead", stackWith("cache", func(c map[string]any) { delete(c, "cpus"); c["cpuShares"] = 512.0 }), "", ""},
			{"neither", stackWith("cache", func(c map[string]any) { delete(c, "cpus") }), rules.Violation, "cpus or cpuShares"},
			{"unknown cpus", stackWith("cache", func(c map[string]any) { c["cpus"] = fixture.Unknown() }), rules.CannotEvaluate, "cpus"},
		},
		"docker-container-configure-nproc-ulimit": {
			{"nproc set", fixture.Good(), "", ""},
			{"only nofile", stackWith("app", func(c map[string]any) {
				c["ulimits"] = []any{map[string]any{"name": "nofile", "soft": 1024.0, "hard": 1024.0}}
			}), rules.Violation, "nproc ulimit"},
			{"unlimited nproc", stackWith("app", func(c map[string]any) {
				c["ulimits"] = []any{map[string]any{"name": "nproc", "soft": -1.0, "hard": -1.0}}
			}), rules.Violation, "not a positive bound"},
		},
		"docker-container-configure-restart-policy": {
			{"on-failure 5 / unless-stopped / one-shot no", fixture.Good(), "", ""},
			{"always", stackWith("app", func(c map[string]any) { c["restart"] = "always" }), rules.Violation, `restart "always"`},
			{"on-failure unbounded", stackWith("app", func(c map[string]any) { c["maxRetryCount"] = 0.0 }), rules.Violation, "between 1 and 5"},
			{"on-failure too many", stackWith("app", func(c map[string]any) { c["maxRetryCount"] = 50.0 }), rules.Violation, "between 1 and 5"},
			{"long-running never restarts", stackWith("cache", func(c map[string]any) { delete(c, "restart") }), rules.Violation, "must restart on failure"},
			{"one-shot restarts", stackWith("migrate", func(c map[string]any) { c["restart"] = "on-failure" }), rules.Violation, "runs once"},
		},
		"docker-container-enable-healthcheck": {
			{"present; one-shots exempt", fixture.Good(), "", ""},
			{"missing", stackWith("cache", func(c map[string]any) { delete(c, "healthcheck") }), rules.Violation, "must declare a health check"},
			{"NONE", stackWith("cache", func(c map[string]any) { c["healthcheck"] = map[string]any{"tests": []any{"NONE"}} }), rules.Violation, "disables its health check"},
			{"unknown", stackWith("cache", func(c map[string]any) { c["healthcheck"] = fixture.Unknown() }), rules.CannotEvaluate, "healthcheck.tests"},
		},
		"docker-container-disallow-host-namespaces": {
			{"private namespaces", fixture.Good(), "", ""},
			{"host network", stackWith("app", func(c map[string]any) { c["networkMode"] = "host" }), rules.Violation, "networkMode"},
			{"host pid", stackWith("app", func(c map[string]any) { c["pidMode"] = "host" }), rules.Violation, "pidMode"},
			{"host ipc", stackWith("app", func(c map[string]any) { c["ipcMode"] = "host" }), rules.Violation, "ipcMode"},
			{"host userns", stackWith("app", func(c map[string]any) { c["usernsMode"] = "host" }), rules.Violation, "usernsMode"},
		},
		"docker-container-disallow-docker-socket-mount": {
			{"named volumes only", fixture.Good(), "", ""},
			{"socket volume", stackWith("backup", func(c map[string]any) {
				c["volumes"] = []any{map[string]any{"hostPath": "/var/run/docker.sock", "containerPath": "/var/run/docker.sock"}}
			}), rules.Violation, "Docker socket"},
			{"socket bind mount", stackWith("backup", func(c map[string]any) {
				c["mounts"] = []any{map[string]any{"type": "bind", "source": "/run/", "target": "/host-run"}}
			}), rules.Violation, `host path "/run"`},
		},
		"docker-container-disallow-sensitive-host-mounts": {
			{"no host paths", fixture.Good(), "", ""},
			{"/etc bind", stackWith("app", func(c map[string]any) {
				c["mounts"] = []any{map[string]any{"type": "bind", "source": "/etc/ssl", "target": "/etc/ssl", "readOnly": true}}
			}), rules.Violation, `"/etc/ssl"`},
		},
		"docker-container-restrict-published-ports": {
			{"proxy on a specific address", fixture.Good(), "", ""},
			{"proxy on 0.0.0.0", stackWith("proxy", func(c map[string]any) {
				c["ports"] = []any{map[string]any{"internal": 443.0, "external": 443.0, "ip": "0.0.0.0", "protocol": "tcp"}}
			}), rules.Violation, "every host address"},
			{"proxy port without ip", stackWith("proxy", func(c map[string]any) {
				c["ports"] = []any{map[string]any{"internal": 443.0, "external": 443.0}}
			}), rules.Violation, "every host address"},
			{"app publishes", stackWith("app", func(c map[string]any) {
				c["ports"] = []any{map[string]any{"internal": 8000.0, "external": 8000.0, "ip": "127.0.0.1"}}
			}), rules.Violation, "only the proxy may publish"},
			{"publish all", stackWith("app", func(c map[string]any) { c["publishAllPorts"] = true }), rules.Violation, "publishAllPorts"},
		},
		"docker-image-require-pinned-version": {
			{"image IDs and digests", fixture.Good(), "", ""},
			{"latest", stackWith("cache", func(c map[string]any) { c["image"] = "redis:latest" }), rules.Violation, "latest tag"},
			{"untagged", stackWith("cache", func(c map[string]any) { c["image"] = "docker.io/library/redis" }), rules.Violation, "no tag"},
			{"tag only in prod", stackWith("cache", func(c map[string]any) { c["image"] = "redis:7.4" }), rules.Violation, "needs a digest"},
			{"tag only in dev", stackWith("cache", func(c map[string]any) {
				c["image"] = "localhost:5000/redis:7.4"
				setLabel(c, rules.LabelProfile, "dev")
			}), "", ""},
			{"unknown image (RepoDigest in preview)", stackWith("app", func(c map[string]any) { c["image"] = fixture.Unknown() }), rules.CannotEvaluate, "image"},
		},
		"docker-container-disallow-root-user": {
			{"non-root or exempt", fixture.Good(), "", ""},
			{"root", stackWith("app", func(c map[string]any) { c["user"] = "root" }), rules.Violation, `user "root"`},
			{"uid 0 with group", stackWith("app", func(c map[string]any) { c["user"] = "0:0" }), rules.Violation, "must not run as root"},
			{"unset", stackWith("app", func(c map[string]any) { delete(c, "user") }), rules.Violation, "user is unset"},
		},
		"nbms-backup-configure-schedule-and-retention": {
			{"scheduled and retained", fixture.Good(), "", ""},
			{"no diff schedule", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupScheduleFull + "=0 2 * * 0", rules.EnvBackupRetentionFull + "=4"}
			}), rules.Violation, rules.EnvBackupScheduleDiff},
			{"bad cron", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupScheduleFull + "=weekly", rules.EnvBackupScheduleDiff + "=0 2 * * 1-6", rules.EnvBackupRetentionFull + "=4"}
			}), rules.Violation, "not a cron schedule"},
			{"retention too low", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupScheduleFull + "=@weekly", rules.EnvBackupScheduleDiff + "=@daily", rules.EnvBackupRetentionFull + "=1"}
			}), rules.Violation, "at least 2"},
		},
		"nbms-backup-require-offhost-encrypted-repository": {
			{"off-host and encrypted", fixture.Good(), "", ""},
			{"no off-host repository", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupScheduleFull + "=0 2 * * 0", rules.EnvBackupScheduleDiff + "=0 2 * * 1-6", rules.EnvBackupRetentionFull + "=4"}
			}), rules.Violation, "must back up to an off-host repository"},
			{"not encrypted", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupOffHostRepo + "=s3://s3.example.org:443/b/p", rules.EnvBackupOffHostCipher + "=none"}
			}), rules.Violation, "must encrypt the off-host repository"},
			{"not s3", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupOffHostRepo + "=/var/lib/pgbackrest2", rules.EnvBackupOffHostCipher + "=aes-256-cbc"}
			}), rules.Violation, "want s3://"},
			{"a dev stack may keep its backups local", stackWith("backup", func(c map[string]any) {
				setLabel(c, rules.LabelProfile, "dev")
				c["envs"] = []any{}
			}), "", ""},
		},
		"nbms-backup-require-restore-drill": {
			{"weekly from the off-host repository", fixture.Good(), "", ""},
			{"no drill", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupOffHostRepo + "=s3://s3.example.org:443/b/p", rules.EnvBackupOffHostCipher + "=aes-256-cbc"}
			}), rules.Violation, "must schedule a restore drill"},
			{"bad cron", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{conventions.EnvBackupScheduleDrill + "=weekly", conventions.EnvBackupDrillRepo + "=2"}
			}), rules.Violation, "must schedule a restore drill: " + conventions.EnvBackupScheduleDrill + ` = "weekly"`},
			{"the local repository, with an off-host one", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{rules.EnvBackupOffHostRepo + "=s3://s3.example.org:443/b/p", conventions.EnvBackupScheduleDrill + "=15 4 * * 3", conventions.EnvBackupDrillRepo + "=1"}
			}), rules.Violation, "must drill the off-host repository"},
			{"the local repository, without an off-host one (offHostBackup's finding)", stackWith("backup", func(c map[string]any) {
				c["envs"] = []any{conventions.EnvBackupScheduleDrill + "=15 4 * * 3", conventions.EnvBackupDrillRepo + "=1"}
			}), "", ""},
			{"a dev stack may skip the drill", stackWith("backup", func(c map[string]any) {
				setLabel(c, rules.LabelProfile, "dev")
				c["envs"] = []any{}
			}), "", ""},
		},
		"nbms-proxy-require-tls": {
			{"443 ssl and redirect", fixture.Good(), "", ""},
			{"no 443", stackWith("proxy", func(c map[string]any) {
				c["ports"] = []any{map[string]any{"internal": 80.0, "external": 80.0, "ip": "203.0.113.10"}}
			}), rules.Violation, "must publish port 443"},
			{"no redirect", stackWith("proxy", func(c map[string]any) {
				c["uploads"] = []any{map[string]any{"file": "/etc/nginx/conf.d/default.conf", "content": "server { listen 443 ssl; }"}}
			}), rules.Violation, "return 301 https://"},
			{"config via base64", stackWith("proxy", func(c map[string]any) {
				c["uploads"] = []any{map[string]any{"file": "/etc/nginx/conf.d/default.conf", "contentBase64": "c2VydmVyIHsgbGlzdGVuIDgwOyByZXR1cm4gMzAxIGh0dHBzOi8vJGhvc3Q7IH0Kc2VydmVyIHsgbGlzdGVuIDQ0MyBzc2w7IH0K"}}
			}), "", ""},
			{"config unknown", stackWith("proxy", func(c map[string]any) { c["uploads"] = fixture.Unknown() }), rules.CannotEvaluate, "nginx config"},
			{"dev proxy not checked", stackWith("proxy", func(c map[string]any) { setLabel(c, rules.LabelProfile, "dev"); delete(c, "uploads") }), "", ""},
		},
	}
	for policy, cs := range cases {
		t.Run(policy, func(t *testing.T) { runCases(t, policy, cs) })
	}
}

func TestStackPolicies(t *testing.T) {
	withNetwork := func(internal bool) []fixture.Res {
		rs := fixture.Good()
		for i := range rs {
			if rs[i].URN == fixture.URN(rules.NetworkType, "internal") {
				rs[i].Inputs = fixture.Network(fixture.Stack+"-internal", internal)
			}
		}
		return rs
	}
	without := func(role string) []fixture.Res {
		var out []fixture.Res
		for _, r := range fixture.Good() {
			if r.URN != fixture.URN(rules.ContainerType, role) {
				out = append(out, r)
			}
		}
		return out
	}
	runCases(t, "nbms-stack-isolate-data-tier", []policyCase{
		{"internal only", fixture.Good(), "", ""},
		{"db publishes a port", stackWith("db", func(c map[string]any) {
			c["ports"] = []any{map[string]any{"internal": 5432.0, "external": 5432.0, "ip": "127.0.0.1"}}
		}), rules.Violation, "must not publish ports"},
		{"cache on the edge network", stackWith("cache", func(c map[string]any) {
			c["networksAdvanced"] = []any{map[string]any{"name": "prod-edge"}}
		}), rules.Violation, `joins network "prod-edge"`},
		{"cache on default bridge", stackWith("cache", func(c map[string]any) { delete(c, "networksAdvanced") }), rules.Violation, "instead of the default bridge"},
		{"network not internal", withNetwork(false), rules.Violation, "internal = true"},
		{"network name unknown", stackWith("db", func(c map[string]any) {
			c["networksAdvanced"] = []any{map[string]any{"name": fixture.Unknown()}}
		}), rules.CannotEvaluate, "networksAdvanced[].name"},
	})
	runCases(t, "nbms-stack-require-backups", []policyCase{
		{"scheduler and WAL archive", fixture.Good(), "", ""},
		{"no backup container", without("backup"), rules.Violation, "no backup scheduler"},
		{"no archive_mode", stackWith("db", func(c map[string]any) { c["command"] = []any{"postgres"} }), rules.Violation, "archive_mode=on"},
		{"archive via uploaded postgresql.conf", stackWith("db", func(c map[string]any) {
			c["command"] = []any{"postgres", "-c", "config_file=/etc/postgresql/postgresql.conf"}
			c["uploads"] = []any{map[string]any{"file": "/etc/postgresql/postgresql.conf", "content": "archive_mode = on\narchive_command = 'pgbackrest --stanza=nbms archive-push %p'\n"}}
		}), "", ""},
		{"command unknown", stackWith("db", func(c map[string]any) { c["command"] = fixture.Unknown() }), rules.CannotEvaluate, "WAL archiving"},
	})
}

func TestDisabledAndOverriddenLevels(t *testing.T) {
	rs := stackWith("app", func(c map[string]any) { c["privileged"] = true })
	cfg, err := rules.ParseConfig([]byte(`{"all": "advisory", "docker-container-disallow-root-user": "disabled"}`))
	require.NoError(t, err)
	rep := rules.Evaluate(fixture.Resources(rs), cfg)
	assert.False(t, rep.MandatoryFailed(), "all=advisory turns the privileged violation advisory")
	for _, p := range rep.Policies {
		switch p.Name {
		case "docker-container-disallow-privileged":
			assert.Equal(t, "fail", p.Status)
			assert.Equal(t, rules.Advisory, p.Level)
		case "docker-container-disallow-root-user":
			assert.Equal(t, "disabled", p.Status)
		}
	}
}

func TestParseConfigRejectsMistakes(t *testing.T) {
	for _, bad := range []string{
		`[]`,
		`{"docker-container-disalow-privileged": "mandatory"}`,
		`{"all": "blocking"}`,
		`{"docker-container-configure-memory-limit": {"maxMemoryMB": 10}}`,
		`{"docker-container-configure-memory-limit": {"maxMemoryMb": "10"}}`,
		`{"nbms-app-configure-env-contract": {"minHstsSeconds": 60}}`,
	} {
		_, err := rules.ParseConfig([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func TestEveryPolicyIsDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range rules.All() {
		assert.False(t, seen[r.Name], "duplicate %s", r.Name)
		seen[r.Name] = true
		assert.Regexp(t, `^[a-z0-9-]+$`, r.Name)
		assert.True(t, strings.HasPrefix(r.Summary, "Checks that"), r.Name)
		assert.NotEmpty(t, r.Benchmark, r.Name)
		assert.NotEmpty(t, r.Remediation, r.Name)
		assert.Contains(t, []rules.Level{rules.Mandatory, rules.Advisory}, r.Level, r.Name)
	}
}
