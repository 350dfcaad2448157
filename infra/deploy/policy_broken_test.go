package deploy_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/policy/report"
	"github.com/nbms-deploy/nbms/policy/rules"
	"github.com/nbms-deploy/nbms/stacks"
)

// brokenVariant breaks the production stack so that exactly one mandatory
// policy must fail.
type brokenVariant struct {
	policy string
	// config is a stack config change the stack validation lets through:
	// the policy pack is the only gate that stops it.
	config map[string]string
	// refused is a stack config change that breaks the policy but that the
	// stack validation refuses first, naming refusedKey (defence in depth:
	// both layers refuse it).
	refused    map[string]string
	refusedKey string
	// resource and mutate break one registered resource (by logical name)
	// the way a faulty program would, for breaks no stack config can
	// express (or that the stack validation refuses).
	resource string
	mutate   func(t *testing.T, in resource.PropertyMap)
}

// brokenVariants: one per mandatory policy of policy/rules. Every mutation
// is the smallest edit that breaks its policy and no other.
var brokenVariants = []brokenVariant{
	{
		policy:  "nbms-app-configure-env-contract",
		refused: map[string]string{"app": `{"hstsSeconds": 60}`}, refusedKey: "nbms:app.hstsSeconds",
		// The program puts a secret back into the environment, where
		// `docker inspect` shows it, instead of its file.
		resource: stacks.RoleApp, mutate: func(t *testing.T, in resource.PropertyMap) {
			require.False(t, in["envs"].ContainsSecrets())
			setEnv(t, in, "SECRET_KEY_FILE", "/run/secrets/SECRET_KEY")
			items := append(slices.Clone(in["envs"].ArrayValue()), resource.NewStringProperty("REDIS_URL=redis://:leaked-password@cache:6379/0"))
			in["envs"] = resource.MakeSecret(resource.NewArrayProperty(items))
		},
	},
	{
		policy:  "nbms-app-disallow-wildcard-cors",
		refused: map[string]string{"corsOrigins": `["*"]`}, refusedKey: "nbms:corsOrigins[0]",
		// On migrate, which runs the same binary with the same environment:
		// on the app the env-contract policy (config.Parse) would fail too.
		resource: stacks.RoleMigrate, mutate: func(t *testing.T, in resource.PropertyMap) {
			setEnv(t, in, "CORS_ALLOWED_ORIGINS", "*")
		},
	},
	{
		policy:   "nbms-container-require-labels",
		resource: stacks.RoleCache, mutate: func(t *testing.T, in resource.PropertyMap) {
			dropLabel(t, in, "nbms.profile")
		},
	},
	{
		policy:   "docker-container-disallow-privileged",
		resource: stacks.RoleBackup, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["privileged"] = resource.NewBoolProperty(true)
		},
	},
	{
		policy:   "docker-container-restrict-capabilities",
		resource: stacks.RoleDB, mutate: func(_ *testing.T, in resource.PropertyMap) {
			caps := in["capabilities"].ObjectValue()
			caps["adds"] = resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("SYS_ADMIN")})
		},
	},
	{
		policy:   "docker-container-enable-no-new-privileges",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["securityOpts"] = resource.NewArrayProperty(nil)
		},
	},
	{
		policy:   "docker-container-disallow-unconfined-profiles",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["securityOpts"] = resource.NewArrayProperty(append(in["securityOpts"].ArrayValue(), resource.NewStringProperty("seccomp=unconfined")))
		},
	},
	{
		policy:   "docker-container-enable-read-only-root-filesystem",
		resource: stacks.RoleProxy, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["readOnly"] = resource.NewBoolProperty(false)
		},
	},
	{
		policy:  "docker-container-configure-memory-limit",
		refused: map[string]string{"limits": `{"db": {"memoryMb": 0}}`}, refusedKey: "nbms:limits.db.memoryMb",
		resource: stacks.RoleDB, mutate: func(_ *testing.T, in resource.PropertyMap) {
			delete(in, "memory")
		},
	},
	{
		policy:  "docker-container-configure-cpu-limit",
		refused: map[string]string{"limits": `{"app": {"cpus": 0}}`}, refusedKey: "nbms:limits.app.cpus",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			delete(in, "cpus")
		},
	},
	{
		policy:  "docker-container-configure-nproc-ulimit",
		refused: map[string]string{"limits": `{"cache": {"nproc": 0}}`}, refusedKey: "nbms:limits.cache.nproc",
		resource: stacks.RoleCache, mutate: func(_ *testing.T, in resource.PropertyMap) {
			delete(in, "ulimits")
		},
	},
	{
		policy:   "docker-container-configure-restart-policy",
		resource: stacks.RoleCache, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["restart"] = resource.NewStringProperty("always")
		},
	},
	{
		policy:   "docker-container-enable-healthcheck",
		resource: stacks.RoleBackup, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["healthcheck"].ObjectValue()["tests"] = resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("NONE")})
		},
	},
	{
		policy:   "docker-container-disallow-host-namespaces",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["pidMode"] = resource.NewStringProperty("host")
		},
	},
	{
		policy:   "docker-container-disallow-docker-socket-mount",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			addBindMount(in, "/var/run/docker.sock", "/var/run/docker.sock")
		},
	},
	{
		policy:   "docker-container-disallow-sensitive-host-mounts",
		resource: stacks.RoleBackup, mutate: func(_ *testing.T, in resource.PropertyMap) {
			addBindMount(in, "/etc", "/host/etc")
		},
	},
	{
		policy:  "docker-container-restrict-published-ports",
		refused: map[string]string{"bindAddress": "0.0.0.0"}, refusedKey: "nbms:bindAddress",
		resource: stacks.RoleProxy, mutate: func(_ *testing.T, in resource.PropertyMap) {
			for _, p := range in["ports"].ArrayValue() {
				p.ObjectValue()["ip"] = resource.NewStringProperty("0.0.0.0")
			}
		},
	},
	{
		policy:     "docker-image-require-pinned-version",
		refused:    map[string]string{"images": `{"base": "debian:bookworm-slim"}`},
		refusedKey: "nbms:images.base",
		// The app given its tag instead of the built image's ID.
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["image"] = resource.NewStringProperty("nbms-app:prod")
		},
	},
	{
		policy:   "docker-container-disallow-root-user",
		resource: stacks.RoleApp, mutate: func(_ *testing.T, in resource.PropertyMap) {
			in["user"] = resource.NewStringProperty("root")
		},
	},
	{
		// The stack accepts one full backup (pgBackRest does); the
		// organisation's policy wants at least two.
		policy: "nbms-backup-configure-schedule-and-retention",
		config: map[string]string{"backup": `{"retentionFull": 1, "offHost": {"endpoint": "s3.example.org", "region": "eu-west-1", "bucket": "nbms-backups", "path": "/nbms"}}`},
	},
	{
		// The stack config accepts backups on this host alone (a dev
		// stack's choice); production's policy does not.
		policy: "nbms-backup-require-offhost-encrypted-repository",
		config: map[string]string{"backup": `{"fullCron": "30 1 * * 0"}`, "backupS3Key": "", "backupS3KeySecret": ""},
	},
	{
		policy: "nbms-backup-require-restore-drill",
		config: map[string]string{"backup": `{"drillCron": "", "offHost": {"endpoint": "s3.eu-west-1.amazonaws.com", "region": "eu-west-1", "bucket": "nbms-example-backups", "path": "/nbms/prod"}}`},
	},
	{
		policy:  "nbms-proxy-require-tls",
		refused: map[string]string{"tlsMode": stacks.TLSOff}, refusedKey: "nbms:tlsMode",
		resource: stacks.RoleProxy, mutate: func(_ *testing.T, in resource.PropertyMap) {
			var kept []resource.PropertyValue
			for _, p := range in["ports"].ArrayValue() {
				if p.ObjectValue()["internal"].NumberValue() != 443 {
					kept = append(kept, p)
				}
			}
			in["ports"] = resource.NewArrayProperty(kept)
		},
	},
	{
		policy:   "nbms-stack-isolate-data-tier",
		resource: stacks.RoleCache, mutate: func(_ *testing.T, in resource.PropertyMap) {
			nets := in["networksAdvanced"].ArrayValue()
			in["networksAdvanced"] = resource.NewArrayProperty(append(nets, resource.NewObjectProperty(resource.PropertyMap{
				"name": resource.NewStringProperty("prod-edge"),
			})))
		},
	},
	{
		policy:   "nbms-stack-require-backups",
		resource: stacks.RoleDB, mutate: func(t *testing.T, in resource.PropertyMap) {
			found := false
			for i, c := range in["command"].ArrayValue() {
				if c.StringValue() == "archive_mode=on" {
					in["command"].ArrayValue()[i] = resource.NewStringProperty("archive_mode=off")
					found = true
				}
			}
			require.True(t, found, "the db command sets archive_mode=on")
		},
	},
}

// Issue 5, "against the real program": for each mandatory policy, a stack
// broken in that one way fails exactly that policy, and the report gives
// the reader the policy's remediation next to the finding.
func TestEachMandatoryPolicyCatchesItsBrokenStack(t *testing.T) {
	var covered, mandatory []string
	for _, v := range brokenVariants {
		covered = append(covered, v.policy)
	}
	for _, r := range rules.All() {
		if r.Level == rules.Mandatory {
			mandatory = append(mandatory, r.Name)
		}
	}
	require.ElementsMatch(t, mandatory, covered, "one broken variant per mandatory policy")

	for _, v := range brokenVariants {
		t.Run(v.policy, func(t *testing.T) {
			rule, ok := rules.Lookup(v.policy)
			require.True(t, ok)
			if v.refused != nil {
				t.Run("the stack validation refuses it first", func(t *testing.T) {
					raw := stackConfig(t, "prod")
					for k, val := range v.refused {
						raw[k] = val
					}
					m := &mocks{}
					res := deployWith(t, "prod", raw, m)
					var serr *stacks.Error
					require.True(t, errors.As(res.err, &serr), "want a stack config error, got %v", res.err)
					assert.Contains(t, serr.Keys(), v.refusedKey)
					assert.Empty(t, m.regs, "nothing is registered")
				})
			}
			if v.config != nil {
				t.Run("a stack config the validation lets through", func(t *testing.T) {
					raw := stackConfig(t, "prod")
					for k, val := range v.config {
						raw[k] = val
					}
					res := deployWith(t, "prod", raw, &mocks{})
					require.NoError(t, res.err, "the stack validation accepts it")
					assertFailsOnly(t, rule, evaluate("prod", res.m), "")
				})
			}
			if v.mutate != nil {
				t.Run("a resource of the program, mutated", func(t *testing.T) {
					mutated, name := 0, ""
					m := &mocks{mutate: func(a *pulumi.MockResourceArgs) {
						// v.resource is a role: the app's resource name is its release's.
						if a.TypeToken == typeContainer && labels(a.Inputs)[rules.LabelRole] == v.resource {
							v.mutate(t, a.Inputs)
							mutated++
							name = a.Name
						}
					}}
					res := deployWith(t, "prod", stackConfig(t, "prod"), m)
					require.NoError(t, res.err)
					require.Equal(t, 1, mutated, "container %s was registered once", v.resource)
					assertFailsOnly(t, rule, evaluate("prod", m), "urn:pulumi:prod::nbms::"+typeContainer+"::"+name)
				})
			}
		})
	}
}

// assertFailsOnly checks that rule is the one failing policy, that it
// found a violation (on urn, when given), and that the Markdown report puts
// the rule's remediation under the finding.
func assertFailsOnly(t *testing.T, rule rules.Rule, rep rules.Report, urn string) {
	t.Helper()
	var failing []string
	for _, p := range rep.Policies {
		if p.Status == "fail" {
			failing = append(failing, p.Name)
		}
		if p.Name == rule.Name {
			assert.Equal(t, rules.Mandatory, p.Level)
			assert.Equal(t, rule.Remediation, p.Remediation)
		}
	}
	assert.Equal(t, []string{rule.Name}, failing, describeFindings(rep))
	assert.True(t, rep.MandatoryFailed())

	var findings []rules.Finding
	for _, f := range rep.Findings() {
		if f.Policy == rule.Name {
			findings = append(findings, f)
		}
	}
	require.NotEmpty(t, findings)
	for _, f := range findings {
		assert.Equal(t, rules.Violation, f.Kind, f.Message)
		assert.Equal(t, rules.Mandatory, f.Level)
	}
	if urn != "" {
		assert.True(t, slices.ContainsFunc(findings, func(f rules.Finding) bool { return f.URN == urn }),
			"a finding on the mutated resource %s:\n%s", urn, describeFindings(rep))
	}

	require.NotEmpty(t, rule.Remediation)
	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, rep, report.Meta{Tool: "nbms-policy", Version: "test", Source: "mocks"}))
	text := md.String()
	finding := strings.Index(text, "**[mandatory] `"+rule.Name+"`** (violation)")
	require.GreaterOrEqual(t, finding, 0, text)
	assert.Contains(t, text[finding:], "\n  - Remediation: "+strings.ReplaceAll(rule.Remediation, "|", `\|`)+"\n")
}

// setEnv replaces one variable inside a container's (secret) envs.
func setEnv(t *testing.T, in resource.PropertyMap, name, value string) {
	t.Helper()
	envs := in["envs"]
	secret := envs.IsSecret()
	if secret {
		envs = envs.SecretValue().Element
	}
	items := slices.Clone(envs.ArrayValue())
	replaced := false
	for i, e := range items {
		if strings.HasPrefix(e.StringValue(), name+"=") {
			items[i] = resource.NewStringProperty(name + "=" + value)
			replaced = true
		}
	}
	require.True(t, replaced, "%s is in the envs", name)
	envs = resource.NewArrayProperty(items)
	if secret {
		envs = resource.MakeSecret(envs)
	}
	in["envs"] = envs
}

func dropLabel(t *testing.T, in resource.PropertyMap, key string) {
	t.Helper()
	var kept []resource.PropertyValue
	for _, l := range in["labels"].ArrayValue() {
		if l.ObjectValue()["label"].StringValue() != key {
			kept = append(kept, l)
		}
	}
	require.Len(t, kept, len(in["labels"].ArrayValue())-1, "label %s was there", key)
	in["labels"] = resource.NewArrayProperty(kept)
}

// addBindMount adds a host bind mount in the provider's volumes shape.
func addBindMount(in resource.PropertyMap, hostPath, containerPath string) {
	vols := in["volumes"].ArrayValue()
	in["volumes"] = resource.NewArrayProperty(append(slices.Clone(vols), resource.NewObjectProperty(resource.PropertyMap{
		"hostPath":      resource.NewStringProperty(hostPath),
		"containerPath": resource.NewStringProperty(containerPath),
	})))
}
