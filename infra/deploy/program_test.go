package deploy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/internals"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/enginetest/fakeprovider"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	typeContainer   = "docker:index/container:Container"
	typeNetwork     = "docker:index/network:Network"
	typeVolume      = "docker:index/volume:Volume"
	typeImage       = "docker:index/image:Image"
	typeRemoteImage = "docker:index/remoteImage:RemoteImage"
	typeTag         = "docker:index/tag:Tag"
	typePassword    = "random:index/randomPassword:RandomPassword"
)

// mocks records every registration and answers like the providers would,
// inputs as outputs plus the computed fields the program reads. Generated
// passwords come back NOT marked secret: the program must keep them secret
// by itself, whatever the engine does.
type mocks struct {
	mu        sync.Mutex
	regs      []pulumi.MockResourceArgs
	generated []string
	exitCodes map[string]int // container resource name -> exit code
	// preview leaves out what the docker provider only knows after
	// creating (image digests, exit codes), as in `pulumi preview`.
	// Generated passwords stay known: the mock monitor cannot carry a
	// secret whose value is unknown ("malformed RPC secret").
	preview bool
	// mutate, when set, edits a registration before it is recorded: how a
	// test breaks one resource the way a faulty program would.
	mutate func(a *pulumi.MockResourceArgs)
}

func (m *mocks) NewResource(a pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mutate != nil {
		m.mutate(&a)
	}
	m.regs = append(m.regs, a)
	outs := a.Inputs.Copy()
	if m.preview && a.TypeToken != typePassword {
		return "", outs, nil
	}
	switch a.TypeToken {
	case typePassword:
		n := int(a.Inputs["length"].NumberValue())
		v := randomText(n, a.Name)
		m.generated = append(m.generated, v)
		outs["result"] = resource.NewStringProperty(v)
	case typeImage:
		// A digest of its own per image, so that a test can tell which
		// image a container runs.
		outs["repoDigest"] = resource.NewStringProperty(imageDigest(a.Name))
	case typeRemoteImage:
		outs["imageId"] = resource.NewStringProperty("sha256:" + strings.Repeat("c", 64))
	case typeContainer:
		outs["exitCode"] = resource.NewNumberProperty(float64(m.exitCodes[a.Name]))
		// The provider reports an address on every network it attached.
		var datas []resource.PropertyValue
		if nets := a.Inputs["networksAdvanced"]; nets.IsArray() {
			for i, n := range nets.ArrayValue() {
				datas = append(datas, resource.NewObjectProperty(resource.PropertyMap{
					"networkName": n.ObjectValue()["name"],
					"ipAddress":   resource.NewStringProperty(fmt.Sprintf("10.%d.0.%d", i+1, len(m.regs)%250+2)),
				}))
			}
		}
		outs["networkDatas"] = resource.NewArrayProperty(datas)
	}
	return a.Name + "-id", outs, nil
}

func (m *mocks) Call(pulumi.MockCallArgs) (resource.PropertyMap, error) {
	return resource.PropertyMap{}, nil
}

// randomText is a deterministic stand-in for a generated password.
func randomText(n int, seed string) string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
	r := mrand.New(mrand.NewPCG(uint64(len(seed)), uint64(seed[0])*7919+uint64(seed[len(seed)-1])))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// byType are the registered resources of a type by name; containers by
// their role (the app's resource name is its release's).
func (m *mocks) byType(token string) map[string]pulumi.MockResourceArgs {
	out := map[string]pulumi.MockResourceArgs{}
	for _, r := range m.regs {
		if r.TypeToken == token {
			key := r.Name
			if token == typeContainer {
				key = labels(r.Inputs)[deploy.LabelRole]
				if key == stacks.RoleSecrets {
					// One per tier: secrets-app (per release), -db, -cache, -proxy.
					key = holderKey(r.Name)
				}
			}
			out[key] = r
		}
	}
	return out
}

// holderKey names a secrets holder by its tier: "secrets-app-<release>"
// is "secrets-app".
func holderKey(name string) string {
	return regexp.MustCompile(`-[0-9a-f]{12}$`).ReplaceAllString(name, "")
}

// holders are the secrets holders a stack has: the proxy's only with TLS.
func holders(tls, offHost bool) []string {
	h := []string{"secrets-app", "secrets-db"}
	if tls {
		h = append(h, "secrets-proxy")
	}
	if offHost {
		h = append(h, "secrets-backup")
	}
	return h
}

// serving are the roles but the secrets holders', the restore's (only a
// recovery has one) and the backup relay's without an off-host
// repository.
func serving(offHost bool) []string {
	return slices.DeleteFunc(slices.Clone(stacks.Roles), func(r string) bool {
		return r == stacks.RoleSecrets || r == conventions.RoleRestore || (r == conventions.RoleBackupRelay && !offHost)
	})
}

// withOffHost returns the backup object raw with fields set in its
// offHost (infra/e2e adds the port, address and CA of its S3 server at
// run time).
func withOffHost(t testing.TB, raw string, fields map[string]any) string {
	t.Helper()
	var backup map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &backup))
	offHost, _ := backup["offHost"].(map[string]any)
	require.NotNil(t, offHost, "the stack file names its off-host repository")
	maps.Copy(offHost, fields)
	out, err := json.Marshal(backup)
	require.NoError(t, err)
	return string(out)
}

// stackConfig is a committed stack file plus what the operator sets.
func stackConfig(t testing.TB, stack string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "Pulumi."+stack+".yaml"))
	require.NoError(t, err)
	raw, err := stacks.ParseStackFile(data)
	require.NoError(t, err)
	switch stack {
	case "prod":
		raw["tlsCertificate"], raw["tlsKey"] = testsupport.SelfSignedCert(t, "nbms.example.org")
		raw["sentryDsn"] = "https://publickey123@sentry.example.org/42"
		raw["backupS3Key"], raw["backupS3KeySecret"] = "AKIAPRODEXAMPLE", "prod-example-secret-key"
	case "e2e":
		// What infra/e2e adds at run time: a chain from its CA for the
		// allowed hosts and the local base image's ID.
		var hosts []string
		require.NoError(t, json.Unmarshal([]byte(raw["allowedHosts"]), &hosts))
		raw["tlsCertificate"], raw["tlsKey"] = testsupport.NewCA(t, "test CA").Issue(t, hosts...)
		raw["images"] = `{"base": "sha256:` + strings.Repeat("e", 64) + `"}`
		raw["backup"] = withOffHost(t, raw["backup"], map[string]any{"port": 19443, "address": "172.17.0.1"})
		raw["backupS3Key"], raw["backupS3KeySecret"] = "e2e-access-key", "e2e-secret-key"
	}
	return raw
}

// setConfig hands raw to the program the way the CLI does.
func setConfig(t testing.TB, raw map[string]string) {
	cfg := map[string]string{}
	for k, v := range raw {
		cfg[stacks.Namespace+":"+k] = v
	}
	data, err := json.Marshal(cfg)
	require.NoError(t, err)
	t.Setenv(pulumi.EnvConfig, string(data))
	var secret []string
	for _, key := range stacks.SecretKeys() {
		secret = append(secret, stacks.Namespace+":"+key)
	}
	data, err = json.Marshal(secret)
	require.NoError(t, err)
	t.Setenv(pulumi.EnvConfigSecretKeys, string(data))
}

type result struct {
	m       *mocks
	outputs map[string]internals.UnsafeAwaitOutputResult
	err     error
}

// deployWith runs the program under mocks and awaits its outputs.
func deployWith(t testing.TB, stack string, raw map[string]string, m *mocks) result {
	t.Helper()
	setConfig(t, raw)
	res := result{m: m, outputs: map[string]internals.UnsafeAwaitOutputResult{}}
	res.err = pulumi.RunErr(func(ctx *pulumi.Context) error {
		outputs, err := deploy.Deploy(ctx)
		if err != nil {
			return err
		}
		for name, o := range outputs {
			r, err := internals.UnsafeAwaitOutput(ctx.Context(), pulumi.ToOutput(o))
			if err != nil {
				return err
			}
			res.outputs[name] = r
		}
		return nil
	}, pulumi.WithMocks("nbms", stack, m))
	return res
}

// plain unwraps secrets and returns the Go value.
func plain(v resource.PropertyValue) any {
	switch {
	case v.IsSecret():
		return plain(v.SecretValue().Element)
	case v.IsString():
		return v.StringValue()
	case v.IsBool():
		return v.BoolValue()
	case v.IsNumber():
		return v.NumberValue()
	case v.IsArray():
		out := []any{}
		for _, e := range v.ArrayValue() {
			out = append(out, plain(e))
		}
		return out
	case v.IsObject():
		out := map[string]any{}
		for k, e := range v.ObjectValue() {
			out[string(k)] = plain(e)
		}
		return out
	}
	return nil
}

func strs(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

func labels(in resource.PropertyMap) map[string]string {
	out := map[string]string{}
	for _, l := range plain(in["labels"]).([]any) {
		m := l.(map[string]any)
		out[m["label"].(string)] = m["value"].(string)
	}
	return out
}

func envMap(t *testing.T, in resource.PropertyMap) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kv := range strs(plain(in["envs"])) {
		k, v, ok := strings.Cut(kv, "=")
		require.True(t, ok, kv)
		out[k] = v
	}
	return out
}

// leaks reports every place a generated value appears outside a secret.
func leaks(v resource.PropertyValue, secrets []string, path string) []string {
	switch {
	case v.IsSecret():
		return nil
	case v.IsString():
		var out []string
		for _, s := range secrets {
			if strings.Contains(v.StringValue(), s) {
				out = append(out, path)
			}
		}
		return out
	case v.IsArray():
		var out []string
		for i, e := range v.ArrayValue() {
			out = append(out, leaks(e, secrets, fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	case v.IsObject():
		var out []string
		for k, e := range v.ObjectValue() {
			out = append(out, leaks(e, secrets, path+"."+string(k))...)
		}
		return out
	}
	return nil
}

var profiles = []struct {
	stack, profile, bind, subnet, internalSubnet string
	tls, offHost                                 bool
	httpPort, httpsPort                          int
}{
	{"prod", "prod", "203.0.113.10", "172.16.238.0/24", "172.16.239.0/24", true, true, 80, 443},
	{"dev", "dev", "127.0.0.1", "172.16.238.0/24", "172.16.239.0/24", false, false, 8080, 8443},
	{"e2e", "prod", "127.0.0.1", "172.16.250.0/24", "172.16.251.0/24", true, true, 18080, 18443},
}

func TestEveryContainerIsHardened(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			containers := res.m.byType(typeContainer)
			require.ElementsMatch(t, append(serving(p.offHost), holders(p.tls, p.offHost)...), slices.Collect(maps.Keys(containers)), "one container per role, one secrets holder per tier")
			limits := stacks.Defaults().Limits
			if p.stack == "dev" {
				limits[stacks.RoleDB] = stacks.Limit{MemoryMB: 512, CPUs: 1, Nproc: 1024}
				limits[stacks.RoleBackup] = stacks.Limit{MemoryMB: 256, CPUs: 1, Nproc: 1024}
			}
			for key, c := range containers {
				in := c.Inputs
				role := labels(in)[deploy.LabelRole]
				t.Run(key, func(t *testing.T) {
					wantLabels := map[string]string{deploy.LabelRole: role, deploy.LabelStack: p.stack, deploy.LabelProfile: p.profile}
					if role == stacks.RoleSecrets {
						checkHolder(t, c, p.stack+"-"+key)
						return
					}
					if conventions.PerRelease(role) {
						// Named by its release, which it also carries.
						release := labels(in)[deploy.LabelRelease]
						assert.Regexp(t, `^[0-9a-f]{12}$`, release)
						wantLabels[deploy.LabelRelease] = release
						assert.Equal(t, p.stack+"-"+deploy.Instance(role, release), plain(in["name"]))
					} else {
						assert.Equal(t, p.stack+"-"+role, plain(in["name"]))
					}
					assert.Equal(t, wantLabels, labels(in))
					assert.Equal(t, true, plain(in["readOnly"]), "read-only root filesystem")
					assert.NotEmpty(t, plain(in["tmpfs"]), "writable scratch space is tmpfs")
					caps := plain(in["capabilities"]).(map[string]any)
					assert.Equal(t, []string{"ALL"}, strs(caps["drops"]))
					assert.Nil(t, caps["adds"], "no capability is added")
					assert.Contains(t, strs(plain(in["securityOpts"])), "no-new-privileges:true")
					user := plain(in["user"]).(string)
					assert.NotRegexp(t, `^(|0|root)(:.*)?$`, user, "non-root user")
					assert.Equal(t, float64(limits[role].MemoryMB), plain(in["memory"]))
					assert.Equal(t, plain(in["memory"]), plain(in["memorySwap"]), "no swap beyond the limit")
					assert.NotEmpty(t, plain(in["cpus"]))
					assert.Equal(t, []any{map[string]any{"name": "nproc", "soft": float64(limits[role].Nproc), "hard": float64(limits[role].Nproc)}}, plain(in["ulimits"]))
					assert.Equal(t, "json-file", plain(in["logDriver"]))
					assert.Equal(t, map[string]any{"max-size": "10m", "max-file": "5"}, plain(in["logOpts"]))
					hc := plain(in["healthcheck"]).(map[string]any)
					assert.GreaterOrEqual(t, len(strs(hc["tests"])), 2, "a health check command")
					forbidden := []string{"privileged", "pidMode", "ipcMode", "usernsMode", "networkMode", "publishAllPorts", "devices", "mounts"}
					if role == stacks.RoleDBLogin || role == stacks.RoleDBRetire || role == stacks.RoleCacheLogin || role == stacks.RoleCacheRetire {
						// psql over the database's socket volume: no network.
						assert.Equal(t, "none", plain(in["networkMode"]))
						forbidden = slices.DeleteFunc(forbidden, func(k string) bool { return k == "networkMode" })
					}
					for _, forbidden := range forbidden {
						assert.NotContains(t, in, resource.PropertyKey(forbidden))
					}
					rpc := c.RegisterRPC
					assert.True(t, rpc.GetDeleteBeforeReplace(), "fixed name: delete before replace")
					assert.Subset(t, rpc.GetReplaceOnChanges(), []string{"healthcheck", "tmpfs"})
					if conventions.OneShot(role) {
						assert.Equal(t, "no", plain(in["restart"]))
						assert.Equal(t, true, plain(in["attach"]), "the program awaits the one-shot")
						assert.Equal(t, false, plain(in["mustRun"]))
					} else {
						assert.Equal(t, "unless-stopped", plain(in["restart"]))
						grace := plain(in["destroyGraceSeconds"])
						require.NotNil(t, grace, "a delete stops the container first (the provider's default is a forced removal)")
						assert.Positive(t, grace.(float64))
						if stop := plain(in["stopTimeout"]); stop != nil {
							assert.Equal(t, stop, grace, "as long as a stop gives it")
						}
					}
				})
			}
		})
	}
}

// checkHolder checks a secrets holder: hardened like every container but
// for its writable root (the policy exemption says why), on no network,
// every upload a secret file under /run/secrets.
func checkHolder(t *testing.T, c pulumi.MockResourceArgs, name string) {
	in := c.Inputs
	assert.Regexp(t, "^"+regexp.QuoteMeta(name)+`(-[0-9a-f]{12})?$`, plain(in["name"]))
	assert.Equal(t, false, plain(in["readOnly"]), "the upload needs a writable root")
	assert.NotEmpty(t, labels(in)[conventions.LabelReadOnlyExempt], "and says why")
	assert.Equal(t, "none", plain(in["networkMode"]))
	assert.NotContains(t, in, resource.PropertyKey("networksAdvanced"))
	assert.NotContains(t, in, resource.PropertyKey("envs"), "nothing in its environment")
	caps := plain(in["capabilities"]).(map[string]any)
	assert.Equal(t, []string{"ALL"}, strs(caps["drops"]))
	assert.Contains(t, strs(plain(in["securityOpts"])), "no-new-privileges:true")
	assert.NotRegexp(t, `^(|0|root)(:.*)?$`, plain(in["user"]), "non-root user")
	assert.Equal(t, "no", plain(in["restart"]))
	assert.Equal(t, true, plain(in["attach"]))
	uploads := in["uploads"].ArrayValue()
	require.NotEmpty(t, uploads)
	for _, u := range uploads {
		up := u.ObjectValue()
		assert.True(t, up["content"].IsSecret(), "the content of %s is a secret", up["file"].StringValue())
		// NAME_FILE's files, and pgBackRest's include file (read by name).
		assert.Regexp(t, `^/run/secrets/([A-Z_]+|pgbackrest-offhost\.conf)$`, up["file"].StringValue())
		assert.Equal(t, "0444", up["permissions"].StringValue())
	}
	vols := plain(in["volumes"]).([]any)
	require.Len(t, vols, 1)
	assert.Equal(t, "/run/secrets", vols[0].(map[string]any)["containerPath"])
	assert.Equal(t, plain(in["name"]), vols[0].(map[string]any)["volumeName"], "its own volume, named like it")
	assert.Contains(t, c.RegisterRPC.GetAdditionalSecretOutputs(), "containerLogs")
}

func TestNetworksAndPorts(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			nets := res.m.byType(typeNetwork)
			if p.offHost {
				require.Len(t, nets, 4)
				assert.Equal(t, true, plain(nets["backup"].Inputs["internal"]), "no route out of the backup network either")
				assert.Nil(t, plain(nets["egress"].Inputs["internal"]), "the relay's way out")
			} else {
				require.Len(t, nets, 2)
			}
			assert.Equal(t, p.stack+"-edge", plain(nets["edge"].Inputs["name"]))
			assert.Nil(t, plain(nets["edge"].Inputs["internal"]), "the edge network routes out")
			assert.Equal(t, p.subnet, plain(nets["edge"].Inputs["ipamConfigs"]).([]any)[0].(map[string]any)["subnet"])
			// Fixed too: a subnet Docker picked from its pools could contain
			// the edge's (the real deploy met "Pool overlaps").
			assert.Equal(t, p.internalSubnet, plain(nets["internal"].Inputs["ipamConfigs"]).([]any)[0].(map[string]any)["subnet"])
			assert.Equal(t, p.stack+"-internal", plain(nets["internal"].Inputs["name"]))
			assert.Equal(t, true, plain(nets["internal"].Inputs["internal"]), "no route out of the internal network")

			edge, internal, backup := p.stack+"-edge", p.stack+"-internal", p.stack+"-backup"
			want := map[string][]string{
				stacks.RoleProxy: {edge}, stacks.RoleApp: {edge, internal}, stacks.RoleSwitch: {edge},
				stacks.RoleDB: {internal}, stacks.RoleCache: {internal}, stacks.RoleBackup: {internal},
				stacks.RoleMigrate: {internal}, stacks.RoleCollectstatic: {internal},
			}
			if p.offHost {
				// The database and the scheduler reach the relay, and only
				// the relay the egress network.
				want[stacks.RoleDB] = []string{internal, backup}
				want[stacks.RoleBackup] = []string{internal, backup}
				want[conventions.RoleBackupRelay] = []string{backup, p.stack + "-egress"}
			}
			for role, c := range res.m.byType(typeContainer) {
				if strings.HasPrefix(role, stacks.RoleSecrets) || strings.HasSuffix(role, "login") || strings.HasSuffix(role, "retire") {
					assert.Equal(t, "none", plain(c.Inputs["networkMode"]), role)
					continue
				}
				var got []string
				for _, n := range plain(c.Inputs["networksAdvanced"]).([]any) {
					got = append(got, n.(map[string]any)["name"].(string))
				}
				assert.ElementsMatch(t, want[role], got, role)
				for _, n := range want[role] {
					suffix := "$docker:index/network:Network::" + strings.TrimPrefix(n, p.stack+"-")
					assert.True(t, slices.ContainsFunc(c.RegisterRPC.GetDependencies(), func(urn string) bool { return strings.HasSuffix(urn, suffix) }),
						"%s depends on network %s", role, n)
				}
				if role != stacks.RoleProxy {
					assert.NotContains(t, c.Inputs, resource.PropertyKey("ports"), "%s publishes nothing", role)
					continue
				}
				ports := plain(c.Inputs["ports"]).([]any)
				wantPorts := []any{map[string]any{"internal": 80.0, "external": float64(p.httpPort), "ip": p.bind, "protocol": "tcp"}}
				if p.tls {
					wantPorts = append(wantPorts, map[string]any{"internal": 443.0, "external": float64(p.httpsPort), "ip": p.bind, "protocol": "tcp"})
				}
				assert.Equal(t, wantPorts, ports)
			}
		})
	}
}

func TestVolumes(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			vols := res.m.byType(typeVolume)
			data := []string{"pgdata", "pgbackrest-repo", "media"}
			for _, name := range append(data, "static") {
				v, ok := vols[name]
				require.True(t, ok, name)
				assert.Equal(t, p.stack+"-"+name, plain(v.Inputs["name"]))
				assert.True(t, v.RegisterRPC.GetRetainOnDelete() || name == "static", "%s is kept when removed", name)
				assert.Equal(t, p.profile == "prod" && slices.Contains(data, name), v.RegisterRPC.GetProtect(), "%s protected in production stacks only", name)
			}
			mounts := func(role string) map[string]any {
				out := map[string]any{}
				for _, m := range plain(res.m.byType(typeContainer)[role].Inputs["volumes"]).([]any) {
					mm := m.(map[string]any)
					out[mm["volumeName"].(string)] = mm["readOnly"]
				}
				return out
			}
			n := func(s string) string { return p.stack + "-" + s }
			// Each tier reads its own secrets volume, read-only; the app's
			// is its release's.
			appSecrets := plain(res.m.byType(typeContainer)["secrets-app"].Inputs["name"]).(string)
			assert.Equal(t, map[string]any{n("pgdata"): false, n("pgbackrest-repo"): false, n("pgrun"): false, n("secrets-db"): true}, mounts(stacks.RoleDB))
			// drill: the restore drills' scratch space and last result.
			backupMounts := map[string]any{n("pgdata"): true, n("pgbackrest-repo"): false, n("pgrun"): false, n("drill"): false}
			if p.offHost {
				backupMounts[n("secrets-backup")] = true // the off-host repository's keys
			}
			assert.Equal(t, backupMounts, mounts(stacks.RoleBackup))
			assert.Equal(t, map[string]any{n("cache-control"): false}, mounts(stacks.RoleCache), "no secret of the stack: its logins are the releases'")
			// The logins: their tier's socket, and grant the release's secrets.
			assert.Equal(t, map[string]any{n("pgrun"): false, appSecrets: true}, mounts(stacks.RoleDBLogin))
			assert.Equal(t, map[string]any{n("cache-control"): false, appSecrets: true}, mounts(stacks.RoleCacheLogin))
			assert.Equal(t, map[string]any{n("pgrun"): false}, mounts(stacks.RoleDBRetire))
			assert.Equal(t, map[string]any{n("cache-control"): false}, mounts(stacks.RoleCacheRetire))
			assert.Equal(t, map[string]any{n("media"): false, n("static"): false, appSecrets: true}, mounts(stacks.RoleApp), "static too, for predeploy-check")
			assert.Equal(t, map[string]any{appSecrets: true}, mounts(stacks.RoleMigrate))
			assert.Equal(t, map[string]any{n("static"): false, appSecrets: true}, mounts(stacks.RoleCollectstatic))
			proxy := map[string]any{n("static"): true, n("media"): true, n("proxy-control"): false}
			if p.tls {
				proxy[n("secrets-proxy")] = true
			}
			assert.Equal(t, proxy, mounts(stacks.RoleProxy))
			assert.Equal(t, map[string]any{n("proxy-control"): false}, mounts(stacks.RoleSwitch), "the switch hands nginx's supervisor the upstream")
		})
	}
}

func TestAppEnvironmentSatisfiesTheContract(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			// The secrets are the holder's files, read back as the app reads
			// them (NAME_FILE).
			files := map[string]string{}
			for _, u := range res.m.byType(typeContainer)["secrets-app"].Inputs["uploads"].ArrayValue() {
				up := u.ObjectValue()
				files[up["file"].StringValue()] = up["content"].SecretValue().Element.StringValue()
			}
			for _, role := range []string{stacks.RoleApp, stacks.RoleMigrate, stacks.RoleCollectstatic} {
				in := res.m.byType(typeContainer)[role].Inputs
				assert.False(t, in["envs"].ContainsSecrets(), "%s: no secret in the environment, so none in Docker's metadata", role)
				env := envMap(t, in)
				s, err := config.Parse(env)
				require.NoError(t, err, role)
				assert.Equal(t, config.Profile(p.profile), s.Profile)
				for _, v := range config.Vars() {
					if !v.RequiredIn(config.Prod) || p.profile != "prod" {
						continue
					}
					if v.Secret {
						assert.Empty(t, env[v.Name], "%s: %s is not in the environment", role, v.Name)
						assert.NotEmpty(t, files[env[v.Name+config.FileSuffix]], "%s: %s_FILE names a file the holder received", role, v.Name)
					} else {
						assert.NotEmpty(t, env[v.Name], "%s: %s", role, v.Name)
					}
				}
				dbURL, redisURL := files[env["DATABASE_URL_FILE"]], files[env["REDIS_URL_FILE"]]
				assert.Equal(t, "postgres", strings.SplitN(dbURL, ":", 2)[0])
				assert.Contains(t, dbURL, "@db:5432/nbms")
				assert.Contains(t, redisURL, "@cache:6379/0")
				assert.Equal(t, p.subnet, env["TRUSTED_PROXY_CIDRS"])
			}
		})
	}
}

func TestGeneratedSecretsStaySecret(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			raw := stackConfig(t, p.stack)
			res := deployWith(t, p.stack, raw, &mocks{})
			require.NoError(t, res.err)
			generatedNames := []string{"dbSuperuserPassword", "appDbPassword", "redisPassword", "secretKey"}
			if p.offHost {
				generatedNames = append(generatedNames, "backupCipherPass")
			}
			require.Len(t, res.m.generated, len(generatedNames))
			secrets := slices.Clone(res.m.generated)
			if key := raw["tlsKey"]; key != "" {
				secrets = append(secrets, strings.Split(key, "\n")[1], "publickey123")
			}
			if p.offHost {
				secrets = append(secrets, raw["backupS3Key"], raw["backupS3KeySecret"])
			}
			for _, r := range res.m.regs {
				if r.TypeToken == typePassword {
					continue
				}
				assert.Empty(t, leaks(resource.NewObjectProperty(r.Inputs), secrets, r.Name), "plaintext secret in the inputs of %s", r.Name)
			}
			gen := res.outputs["generatedSecrets"]
			assert.True(t, gen.Secret, "generatedSecrets is a secret output")
			assert.ElementsMatch(t, generatedNames, slices.Collect(maps.Keys(gen.Value.(map[string]string))))
			for name, o := range res.outputs {
				if name == "generatedSecrets" {
					continue
				}
				assert.False(t, o.Secret, name)
				dump, err := json.Marshal(o.Value)
				require.NoError(t, err)
				for _, s := range secrets {
					assert.NotContains(t, string(dump), s, "output %s", name)
				}
			}
			wantURL := map[string]string{"prod": "https://nbms.example.org", "dev": "http://localhost:8080", "e2e": "https://nbms.e2e.test:18443"}
			assert.Equal(t, wantURL[p.stack], res.outputs["url"].Value)
			wantSchedule := map[string]any{"full": "30 1 * * 0", "diff": "30 1 * * 1-6", "retentionFull": 2, "retentionDiff": 6, "archiveTimeout": "60s"}
			if p.stack == "e2e" {
				wantSchedule = map[string]any{"full": "* * * * *", "diff": "5 4 1 1 *", "retentionFull": 2, "retentionDiff": 1, "archiveTimeout": "60s"}
			}
			if p.offHost {
				wantSchedule[deploy.OutputOffHostPassphrase] = deploy.PassphraseGenerated
			}
			assert.Equal(t, wantSchedule, res.outputs["backupSchedule"].Value)
			containers := res.outputs["containers"].Value.(map[string]string)
			app := res.outputs["app"].Value.(map[string]any)
			release := app["release"].(string)
			for _, role := range serving(p.offHost) {
				want := p.stack + "-" + role
				if conventions.PerRelease(role) {
					want = p.stack + "-" + deploy.Instance(role, release)
				}
				assert.Equal(t, want, containers[role])
			}
			assert.Equal(t, containers[stacks.RoleApp], app["container"], "the live release and its container")
		})
	}
}

// What the provider reads back from Docker must equal what the program
// wrote, or every update sees a difference and replaces the container:
// durations in Go's format and never zero (Docker fills a zero in from the
// image), CPUs as the provider prints NanoCPUs.
func TestContainerSettingsReadBackUnchanged(t *testing.T) {
	for _, p := range profiles {
		res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
		require.NoError(t, res.err)
		for role, c := range res.m.byType(typeContainer) {
			hc := plain(c.Inputs["healthcheck"]).(map[string]any)
			for _, key := range []string{"interval", "timeout", "startPeriod"} {
				v := hc[key].(string)
				back, err := fakeprovider.ReadBackDuration(v)
				require.NoError(t, err, "%s %s %s", p.stack, role, key)
				assert.Equal(t, back, v, "%s %s %s as Docker reads it back (never zero: Docker fills that in from the image)", p.stack, role, key)
			}
			cpus := plain(c.Inputs["cpus"]).(string)
			back, err := fakeprovider.ReadBackCPUs(cpus)
			require.NoError(t, err)
			assert.Equal(t, back, cpus, "%s %s cpus as the provider reads NanoCPUs back", p.stack, role)
		}
	}
}

// The stack decides whether the edge keeps a client's well-formed request
// ID (default: keep); the rendered config the proxy runs follows it.
func TestClientRequestIDFollowsTheStack(t *testing.T) {
	conf := func(raw map[string]string) string {
		res := deployWith(t, "prod", raw, &mocks{})
		require.NoError(t, res.err)
		cmd := strs(plain(res.m.byType(typeContainer)[stacks.RoleProxy].Inputs["command"]))
		return cmd[1] // the prologue's first file: the rendered nginx.conf
	}
	raw := stackConfig(t, "prod")
	assert.Contains(t, conf(raw), `"~`+config.RequestIDPattern+`" $http_x_request_id;`)
	raw["app"] = `{"acceptClientRequestId": false}`
	assert.NotContains(t, conf(raw), config.RequestIDPattern)
}

// Every stack keeps its evidence behind the app: nginx serves no public
// /media/, only an internal location, and the app is told it has nginx in
// front to send the files it authorises.
func TestEvidenceIsSentOnlyWhenTheAppAuthorisesIt(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			containers := res.m.byType(typeContainer)
			s, err := config.Parse(envMap(t, containers[stacks.RoleApp].Inputs))
			require.NoError(t, err)
			assert.True(t, s.MediaXAccelRedirect)
			conf := strs(plain(containers[stacks.RoleProxy].Inputs["command"]))[1] // the prologue's first file: the rendered nginx.conf
			assert.Contains(t, conf, "location "+config.ProtectedMediaPrefix+" {\n            internal;\n            alias "+stacks.MediaRoot+"/;\n")
			assert.NotContains(t, conf, "location /media/")
			assert.Equal(t, 1, strings.Count(conf, stacks.MediaRoot), "the media root is aliased once, by the internal location")
		})
	}
}

// The app writes uploads mode 0640 as 65532:65532; nginx sends the ones
// the app authorises (X-Accel-Redirect) from the same volume, so it, and
// only it, gets that group.
func TestOnlyTheProxyReadsTheAppsUploads(t *testing.T) {
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	for role, c := range res.m.byType(typeContainer) {
		if role == stacks.RoleProxy {
			assert.Equal(t, []any{"65532"}, plain(c.Inputs["groupAdds"]), role)
		} else {
			assert.NotContains(t, c.Inputs, resource.PropertyKey("groupAdds"), role)
		}
	}
}

// Each container's hook probes something that exists once that container
// does: the app itself (nginx is created after it, so a first deployment
// could never pass a probe through nginx there), and the public entry after
// nginx.
func TestPostDeployHooksProbeWhatExistsWhenTheyRun(t *testing.T) {
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	want := map[string]string{stacks.RoleApp: deploy.AppHookName, stacks.RoleProxy: deploy.HookName}
	containers := res.m.byType(typeContainer)
	for role, c := range containers {
		hooks := c.RegisterRPC.GetHooks()
		if name, ok := want[role]; ok {
			require.NotNil(t, hooks, role)
			assert.Equal(t, []string{name}, hooks.GetAfterCreate(), role)
			assert.Equal(t, []string{name}, hooks.GetAfterUpdate(), role)
		} else {
			assert.Empty(t, hooks.GetAfterCreate(), role)
		}
	}
	dependsOn := func(role, urnSuffix string) bool {
		return slices.ContainsFunc(containers[role].RegisterRPC.GetDependencies(), func(urn string) bool { return strings.HasSuffix(urn, urnSuffix) })
	}
	assert.True(t, dependsOn(stacks.RoleSwitch, "$docker:index/container:Container::"+containers[stacks.RoleApp].Name),
		"the switch runs once the new release exists")
	assert.True(t, dependsOn(stacks.RoleProxy, "$docker:index/container:Container::"+containers[stacks.RoleSwitch].Name),
		"nginx is created after the app and the switch, so only nginx's hook may probe through nginx")

	cfg, err := stacks.Parse("prod", stacks.Values{Raw: stackConfig(t, "prod"), Secret: stacks.IsSecretKey})
	require.NoError(t, err)
	app, err := deploy.AppProbeOptions(cfg, "172.30.0.7")
	require.NoError(t, err)
	assert.Equal(t, "http://172.30.0.7:8000", app.BaseURL, "the app container itself, on its own port")
	assert.Equal(t, "nbms.example.org", app.Host)
	public, err := deploy.ProbeOptions(cfg)
	require.NoError(t, err)
	assert.Equal(t, "https://203.0.113.10:443", public.BaseURL, "the published entry")
	assert.Equal(t, public.Timeout, app.Timeout)
}

// imageDigest is the repoDigest the mocks give the image resource name.
func imageDigest(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// buildArgs returns an image's build args.
func buildArgs(img pulumi.MockResourceArgs) map[string]any {
	return plain(img.Inputs["build"]).(map[string]any)["args"].(map[string]any)
}

func TestImagesAreBuiltLocallyFromTheOnePinnedBase(t *testing.T) {
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	remote := res.m.byType(typeRemoteImage)
	require.Len(t, remote, 1, "one third-party image: the base")
	base := remote["base-image"]
	assert.Equal(t, stacks.DefaultBaseImage, plain(base.Inputs["name"]))
	assert.Equal(t, true, plain(base.Inputs["keepLocally"]), "the base belongs to the operator")
	tag := res.m.byType(typeTag)["base-tag"]
	assert.Equal(t, map[string]any{"sourceImage": "sha256:" + strings.Repeat("c", 64), "targetImage": "nbms-base:prod"}, plain(resource.NewObjectProperty(tag.Inputs)),
		"the stack's local name for the base points at exactly the pinned image")

	built := res.m.byType(typeImage)
	baseArgs := map[string]any{"BASE_IMAGE": "nbms-base:prod", "BASE_IMAGE_ID": "sha256:" + strings.Repeat("c", 64)}
	want := map[string]struct{ context, dockerfile, tag, target string }{
		"app-image": {"../..", "../../app/Dockerfile", "nbms-app:prod", ""},
		// Two targets of one Dockerfile: PostgreSQL, and the backup
		// scheduler with the app's binary.
		"db-image":     {"../../infra/images/db", "../../infra/images/db/Dockerfile", "nbms-db:prod", "db"},
		"backup-image": {"../../infra/images/db", "../../infra/images/db/Dockerfile", "nbms-backup:prod", "backup"},
		"proxy-image":  {"../../infra/images/nginx", "../../infra/images/nginx/Dockerfile", "nbms-nginx:prod", ""},
		"cache-image":  {"../../infra/images/redis", "../../infra/images/redis/Dockerfile", "nbms-redis:prod", ""},
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(built)))
	for name, w := range want {
		img := built[name]
		b := plain(img.Inputs["build"]).(map[string]any)
		assert.Equal(t, w.context, b["context"], name)
		assert.Equal(t, w.dockerfile, b["dockerfile"], name)
		if w.target == "" {
			assert.NotContains(t, b, "target", "%s: the Dockerfile's last stage", name)
		} else {
			assert.Equal(t, w.target, b["target"], name)
		}
		assert.Equal(t, "BuilderBuildKit", b["builderVersion"], name)
		assert.Equal(t, "linux/amd64", b["platform"], name)
		assert.Equal(t, w.tag, plain(img.Inputs["imageName"]), name)
		assert.Equal(t, true, plain(img.Inputs["skipPush"]), name, "images never leave the host")
		args := b["args"].(map[string]any)
		for k, v := range baseArgs {
			assert.Equal(t, v, args[k], "%s: every image builds FROM the base", name)
		}
		assert.True(t, slices.ContainsFunc(img.RegisterRPC.GetDependencies(), func(urn string) bool {
			return strings.HasSuffix(urn, "::base-tag")
		}), "%s is built after the base is tagged", name)
	}
	// The backup image copies the nbms binary out of the app image just
	// built: by its tag (what BuildKit can resolve) and its ID (which
	// changes, and so rebuilds the backup image, whenever the app does).
	// The db image has neither: an app release must not rebuild it, or it
	// would replace the database container.
	dependsOnApp := func(name string) bool {
		return slices.ContainsFunc(built[name].RegisterRPC.GetDependencies(), func(urn string) bool {
			return strings.HasSuffix(urn, "::app-image")
		})
	}
	backupArgs := buildArgs(built["backup-image"])
	assert.Equal(t, "nbms-app:prod", backupArgs["APP_IMAGE"])
	assert.Equal(t, imageDigest("app-image"), backupArgs["APP_IMAGE_ID"])
	assert.True(t, dependsOnApp("backup-image"), "the backup image is built after the app image")
	assert.Equal(t, baseArgs, buildArgs(built["db-image"]), "the db image's args: the base's only")
	assert.False(t, dependsOnApp("db-image"), "the db image does not wait for (or change with) the app image")

	// Extra build CAs go to the app's builder only (the one stage that
	// downloads over HTTPS), and only when set.
	assert.NotContains(t, buildArgs(built["app-image"]), "BUILD_CA_CERTS")
	raw := stackConfig(t, "prod")
	ca := testsupport.NewCA(t, "egress CA").PEM
	raw["buildCaCertificates"] = ca
	res = deployWith(t, "prod", raw, &mocks{})
	require.NoError(t, res.err)
	for name, img := range res.m.byType(typeImage) {
		if name == "app-image" {
			assert.Equal(t, ca, buildArgs(img)["BUILD_CA_CERTS"])
		} else {
			assert.NotContains(t, buildArgs(img), "BUILD_CA_CERTS", name)
		}
	}

	// Every long-running container runs a built image by ID; PostgreSQL
	// the db image's, the backup scheduler the backup image's.
	digests := map[string]bool{}
	for name := range res.m.byType(typeImage) {
		digests[imageDigest(name)] = true
	}
	containers := res.m.byType(typeContainer)
	for role, c := range containers {
		assert.True(t, digests[fmt.Sprint(plain(c.Inputs["image"]))], "%s runs a built image by ID: %v", role, plain(c.Inputs["image"]))
	}
	assert.Equal(t, imageDigest("db-image"), plain(containers[stacks.RoleDB].Inputs["image"]))
	assert.Equal(t, imageDigest("backup-image"), plain(containers[stacks.RoleBackup].Inputs["image"]))
}

// The backup container runs the app binary's scheduler on the stack's
// schedule, after the prologue that writes the pgBackRest config; the
// NBMS_BACKUP_* variables the policy pack reads say the same.
func TestBackupSchedulerRunsTheAppBinary(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			in := res.m.byType(typeContainer)[stacks.RoleBackup].Inputs
			cmd := strs(plain(in["command"]))
			i := slices.Index(cmd, "--")
			require.GreaterOrEqual(t, i, 0, "the files prologue ends with --")
			assert.Equal(t, "/tmp/nbms/pgbackrest.conf", cmd[0], "the prologue writes the rendered pgBackRest config")
			assert.Contains(t, cmd[1], "\n[global]\n")
			full, diff, retention := "30 1 * * 0", "30 1 * * 1-6", "2"
			if p.stack == "e2e" { // a test schedule (Pulumi.e2e.yaml)
				full, diff = "* * * * *", "5 4 1 1 *"
			}
			want := []string{"/usr/local/bin/nbms", "backup-schedule", "--config", "/tmp/nbms/pgbackrest.conf", "--stanza", "nbms",
				"--full", full, "--diff", diff, "--exit-on-failure"}
			drillRepo := "1"
			if p.offHost {
				want = append(want, "--repo", "1", "--repo", "2")
				assert.Equal(t, "aes-256-cbc", envMap(t, in)["NBMS_BACKUP_OFFHOST_CIPHER"])
				drillRepo = "2" // the off-host copy is the one to prove
			}
			// The default weekly drill (no stack file sets one).
			want = append(want, "--drill", "15 4 * * 3", "--drill-repo", drillRepo,
				"--drill-scratch", "/var/lib/nbms-drill", "--drill-status", "/var/lib/nbms-drill/last-drill.json")
			assert.Equal(t, want, cmd[i+1:])
			c, err := stacks.Parse(p.stack, stacks.Values{Raw: stackConfig(t, p.stack), Secret: stacks.IsSecretKey})
			require.NoError(t, err)
			assert.Equal(t, want, deploy.BackupSchedulerCommand(c), "one source of the command line")
			env := envMap(t, in)
			assert.Equal(t, full, env["NBMS_BACKUP_SCHEDULE_FULL"])
			assert.Equal(t, diff, env["NBMS_BACKUP_SCHEDULE_DIFF"])
			assert.Equal(t, retention, env["NBMS_BACKUP_RETENTION_FULL"])
			assert.Equal(t, "15 4 * * 3", env["NBMS_BACKUP_SCHEDULE_DRILL"])
			assert.Equal(t, drillRepo, env["NBMS_BACKUP_DRILL_REPO"])
			assert.Equal(t, "/tmp/nbms/pgbackrest.conf", env["PGBACKREST_CONFIG"])
			assert.Equal(t, true, plain(in["init"]), "tini reaps the pgbackrest processes")
			assert.Contains(t, mountTargets(in), "/var/lib/nbms-drill", "the drills' scratch volume")
		})
	}
}

// mountTargets are the container paths of a container's volume mounts.
func mountTargets(in resource.PropertyMap) []string {
	var out []string
	for _, m := range plain(in["volumes"]).([]any) {
		out = append(out, fmt.Sprint(m.(map[string]any)["containerPath"]))
	}
	return out
}

// A stack without drills (drillCron "") schedules none, and says so to the
// policy pack by leaving its variables unset.
func TestNoDrillWithoutItsSchedule(t *testing.T) {
	raw := stackConfig(t, "dev")
	require.NotContains(t, raw, "backup", "Pulumi.dev.yaml keeps the default backup settings")
	raw["backup"] = `{"drillCron": ""}`
	c, err := stacks.Parse("dev", stacks.Values{Raw: raw, Secret: stacks.IsSecretKey})
	require.NoError(t, err)
	assert.NotContains(t, deploy.BackupSchedulerCommand(c), "--drill")
	res := deployWith(t, "dev", raw, &mocks{})
	require.NoError(t, res.err)
	env := envMap(t, res.m.byType(typeContainer)[stacks.RoleBackup].Inputs)
	assert.NotContains(t, env, "NBMS_BACKUP_SCHEDULE_DRILL")
	assert.NotContains(t, env, "NBMS_BACKUP_DRILL_REPO")
}

func TestOneShotFailureStopsTheAppReplacement(t *testing.T) {
	release := releaseOf(t, "prod")
	for _, role := range []string{stacks.RoleMigrate, stacks.RoleCollectstatic} {
		t.Run(role, func(t *testing.T) {
			res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{exitCodes: map[string]int{deploy.Instance(role, release): 3}})
			require.Error(t, res.err)
			assert.Contains(t, res.err.Error(), deploy.NotLivePrefix+" "+release+": "+role+" exited with status 3 (see `docker logs prod-"+role+"-"+release+"`)")
			containers := res.m.byType(typeContainer)
			assert.NotContains(t, containers, stacks.RoleApp, "the new release's server is not started")
			assert.NotContains(t, containers, stacks.RoleSwitch, "nor switched to")
		})
	}
}

// A switch that fails (the new release never became ready from inside the
// edge network, or nginx refused the upstream) stops the update before
// nginx, with the reason the driver maps to the probe's exit code.
func TestSwitchFailureKeepsTheLiveRelease(t *testing.T) {
	release := releaseOf(t, "prod")
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{exitCodes: map[string]int{deploy.Instance(stacks.RoleSwitch, release): 1}})
	require.Error(t, res.err, "the program fails: the engine keeps the live release")
	assert.Contains(t, res.err.Error(), deploy.NotLivePrefix+" "+release)
	assert.Contains(t, res.err.Error(), "the switch exited with status 1 (see `docker logs prod-switch-"+release+"`)")
	proxy := res.m.byType(typeContainer)[stacks.RoleProxy]
	assert.Equal(t, imageDigest("proxy-image"), plain(proxy.Inputs["image"]),
		"nginx's inputs do not depend on the switch's outputs: a new release never replaces nginx")
}

// releaseOf is the release the program declares for a committed stack.
func releaseOf(t *testing.T, stack string) string {
	t.Helper()
	res := deployWith(t, stack, stackConfig(t, stack), &mocks{})
	require.NoError(t, res.err)
	return labels(res.m.byType(typeContainer)[stacks.RoleApp].Inputs)[deploy.LabelRelease]
}

// The switch is told the new release, the domain its probes name, the
// stack's probe timeout and the new container's name (Docker's DNS
// resolves it on the edge network to wherever the container is), never
// the address Docker picked when it started.
func TestSwitchPointsNginxAtTheNewRelease(t *testing.T) {
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	containers := res.m.byType(typeContainer)
	sw, app := containers[stacks.RoleSwitch].Inputs, containers[stacks.RoleApp].Inputs
	release := labels(app)[deploy.LabelRelease]
	assert.Equal(t, []string{"/usr/local/bin/nbms-switch"}, strs(plain(sw["entrypoints"])))
	cmd := strs(plain(sw["command"]))
	require.Len(t, cmd, 4)
	assert.Equal(t, []string{release, "nbms.example.org", "180"}, cmd[:3])
	assert.Equal(t, "prod-app-"+release+":8000", cmd[3], "the container's name, which nginx's supervisor resolves again")
	assert.Equal(t, "101:101", plain(sw["user"]), "nginx's user, like the proxy that reads what it writes")
	proxyCmd := strs(plain(containers[stacks.RoleProxy].Inputs["command"]))
	assert.Equal(t, []string{"/usr/local/bin/nbms-proxy", "/tmp/nbms/nginx.conf"}, proxyCmd[len(proxyCmd)-2:], "the supervisor runs nginx")
	assert.True(t, slices.ContainsFunc(proxyCmd, func(arg string) bool { return strings.Contains(arg, "include /var/lib/nbms-proxy/upstream.conf;") }),
		"nginx reads the switch's upstream file")
}

// The release names what the app container runs: the same stack gives the
// same release, an app setting a new one; a setting of another tier does
// not touch it.
func TestAppReleaseFollowsWhatTheAppRuns(t *testing.T) {
	release := func(raw map[string]string) string {
		res := deployWith(t, "prod", raw, &mocks{})
		require.NoError(t, res.err)
		return labels(res.m.byType(typeContainer)[stacks.RoleApp].Inputs)[deploy.LabelRelease]
	}
	base := stackConfig(t, "prod")
	first := release(base)
	assert.Equal(t, first, release(stackConfig(t, "prod")), "stable")
	changed := stackConfig(t, "prod")
	changed["app"] = `{"logLevel": "warn"}`
	assert.NotEqual(t, first, release(changed), "an app setting is a new release")
	limits := stackConfig(t, "prod")
	limits["limits"] = `{"app": {"memoryMb": 640}}`
	assert.NotEqual(t, first, release(limits), "a container setting is a new release")
	other := stackConfig(t, "prod")
	other["limits"] = `{"db": {"memoryMb": 2048}}`
	assert.Equal(t, first, release(other), "the database's limit is not the app's")

	// The operator's tuning is app environment too: each value its own
	// release, the same value the same one.
	tuned := func(rate string) string {
		raw := stackConfig(t, "prod")
		raw["appEnv"] = `{"RATE_LIMIT_PUBLIC_API": "` + rate + `"}`
		return release(raw)
	}
	raised := tuned("600/1m")
	assert.NotEqual(t, first, raised, "nbms:appEnv.RATE_LIMIT_PUBLIC_API is a new release")
	assert.Equal(t, raised, tuned("600/1m"), "stable")
	assert.NotEqual(t, raised, tuned("900/1m"), "another value, another release")

	// Whatever the program writes into the release's containers: if two
	// stacks give the server or a one-shot different settings, they are
	// different releases (the invariant, over settings of every kind).
	settingsOf := func(raw map[string]string) (string, map[string]string) {
		res := deployWith(t, "prod", raw, &mocks{})
		require.NoError(t, res.err)
		containers := res.m.byType(typeContainer)
		rel := labels(containers[stacks.RoleApp].Inputs)[deploy.LabelRelease]
		out := map[string]string{}
		for _, role := range []string{stacks.RoleDBLogin, stacks.RoleMigrate, stacks.RoleCollectstatic, stacks.RoleApp, stacks.RoleDBRetire} {
			dump, err := json.Marshal(plain(resource.NewObjectProperty(containers[role].Inputs)))
			require.NoError(t, err)
			out[role] = strings.ReplaceAll(string(dump), rel, "<release>")
		}
		return rel, out
	}
	baseRelease, baseSettings := settingsOf(base)
	for name, set := range map[string]map[string]string{
		"log rotation":         {"logs": `{"maxSize": "20m"}`},
		"a one-shot's limit":   {"limits": `{"migrate": {"memoryMb": 300}}`},
		"the server's cpus":    {"limits": `{"app": {"cpus": 2}}`},
		"the drain":            {"appEnv": `{"SHUTDOWN_DRAIN_DELAY": "10s"}`},
		"the edge subnet":      {"edgeSubnet": `172.16.200.0/24`},
		"the upload limit":     {"app": `{"maxUploadBytes": 1048576}`},
		"a Sentry DSN":         {"sentryDsn": "https://key@sentry.example.org/1"},
		"the database's limit": {"limits": `{"db": {"memoryMb": 2048}}`},
	} {
		raw := stackConfig(t, "prod")
		maps.Copy(raw, set)
		rel, settings := settingsOf(raw)
		if !maps.Equal(baseSettings, settings) || name == "a Sentry DSN" {
			assert.NotEqual(t, baseRelease, rel, "%s changes the release's containers, so it is a new release", name)
		} else {
			assert.Equal(t, baseRelease, rel, "%s does not touch the release's containers", name)
		}
	}
}

// nbms:secretGenerations: a generation above 0 is a keeper of its secret
// (the random provider makes it anew when it changes), generation 0 none
// (a stack's first values stay); a new generation of a secret the app
// reads is a new release, of one it does not (the superuser's) is not.
func TestSecretGenerationsRotateThroughANewRelease(t *testing.T) {
	deployed := func(generations string) (release string, keepers map[string]any) {
		raw := stackConfig(t, "prod")
		if generations != "" {
			raw["secretGenerations"] = generations
		}
		res := deployWith(t, "prod", raw, &mocks{})
		require.NoError(t, res.err)
		keepers = map[string]any{}
		for name, r := range res.m.byType(typePassword) {
			if k := r.Inputs["keepers"]; k.IsObject() {
				keepers[name] = plain(k)
			}
		}
		return labels(res.m.byType(typeContainer)[stacks.RoleApp].Inputs)[deploy.LabelRelease], keepers
	}
	first, keepers := deployed("")
	assert.Empty(t, keepers, "generation 0: no keepers, as before generations existed")
	zero, _ := deployed(`{"secretKey": 0}`)
	assert.Equal(t, first, zero, "generation 0 written out is the same release")

	rotated, keepers := deployed(`{"secretKey": 1}`)
	assert.NotEqual(t, first, rotated, "a new SECRET_KEY is a new release")
	assert.Equal(t, map[string]any{"app-secret-key": map[string]any{"generation": "1"}}, keepers)
	again, _ := deployed(`{"secretKey": 2}`)
	assert.NotEqual(t, rotated, again)
	for _, app := range []string{"appDbPassword", "redisPassword"} {
		rel, keepers := deployed(`{"` + app + `": 1}`)
		assert.NotEqual(t, first, rel, "%s is read by the app: a new release", app)
		assert.Len(t, keepers, 1, app)
	}
	super, keepers := deployed(`{"dbSuperuserPassword": 3}`)
	assert.Equal(t, first, super, "the superuser's password is not the app's")
	assert.Equal(t, map[string]any{"db-superuser-password": map[string]any{"generation": "3"}}, keepers)
}

// The app's database and Redis passwords rotate with PostgreSQL and Redis
// running: neither is a file of their containers (whose secrets would
// replace them), but each release's dblogin and cachelogin grant it to
// the login of its generation before migrate runs, and dbretire and
// cacheretire close every other login once the switch made the release
// live. Two rotations alternate the two logins.
func TestAppPasswordsRotateThroughTheOtherLogin(t *testing.T) {
	deployed := func(generation int) map[string]pulumi.MockResourceArgs {
		raw := stackConfig(t, "prod")
		raw["secretGenerations"] = fmt.Sprintf(`{"appDbPassword": %d, "redisPassword": %d}`, generation, generation)
		res := deployWith(t, "prod", raw, &mocks{})
		require.NoError(t, res.err)
		return res.m.byType(typeContainer)
	}
	files := func(holder pulumi.MockResourceArgs) map[string]string {
		out := map[string]string{}
		for _, u := range holder.Inputs["uploads"].ArrayValue() {
			up := u.ObjectValue()
			out[path.Base(up["file"].StringValue())] = up["content"].SecretValue().Element.StringValue()
		}
		return out
	}
	for generation, login := range []string{"nbms_a", "nbms_b", "nbms_a"} {
		t.Run(login, func(t *testing.T) {
			containers := deployed(generation)
			db := containers[stacks.RoleDB].Inputs
			assert.NotContains(t, envMap(t, db), "NBMS_DB_PASSWORD_FILE", "the app's password is not the database container's")
			assert.Equal(t, "nbms", envMap(t, db)["NBMS_DB_USER"], "the owner, created NOLOGIN")
			assert.ElementsMatch(t, []string{"POSTGRES_PASSWORD", "pgbackrest-offhost.conf"}, slices.Collect(maps.Keys(files(containers["secrets-db"]))))
			assert.NotContains(t, containers, "secrets-cache", "Redis holds no secret of the stack")
			assert.Empty(t, plain(containers[stacks.RoleCache].Inputs["envs"]), "nor a file of one")

			release := files(containers["secrets-app"])
			for _, store := range []struct{ url, passwordFile string }{{"DATABASE_URL", "NBMS_DB_PASSWORD"}, {"REDIS_URL", "REDIS_PASSWORD"}} {
				u, err := url.Parse(release[store.url])
				require.NoError(t, err)
				assert.Equal(t, login, u.User.Username(), "generation %d logs in as %s", generation, login)
				password, _ := u.User.Password()
				assert.Equal(t, password, release[store.passwordFile], "the login is granted the password the app connects with")
			}

			for _, tier := range []struct {
				grant, retire, user string
				entrypoint          []string
				loginVar, password  string
				env                 map[string]string
			}{
				{stacks.RoleDBLogin, stacks.RoleDBRetire, "999:999", []string{"/usr/local/bin/nbms-db-login"}, "NBMS_DB_LOGIN", "NBMS_DB_PASSWORD",
					map[string]string{"NBMS_DB_OWNER": "nbms", "PGHOST": "/var/run/postgresql"}},
				{stacks.RoleCacheLogin, stacks.RoleCacheRetire, "998:998", []string{"/bin/sh", "-c", deploy.CacheLoginScript, "nbms-cache-login"}, "NBMS_CACHE_LOGIN", "REDIS_PASSWORD",
					map[string]string{}},
			} {
				grant, retire := containers[tier.grant], containers[tier.retire]
				for _, c := range []pulumi.MockResourceArgs{grant, retire} {
					assert.Equal(t, tier.entrypoint, strs(plain(c.Inputs["entrypoints"])))
					assert.Equal(t, tier.user, plain(c.Inputs["user"]), "the tier's own user, whom its socket admits")
					env := envMap(t, c.Inputs)
					assert.Equal(t, login, env[tier.loginVar])
					for k, v := range tier.env {
						assert.Equal(t, v, env[k])
					}
				}
				assert.Equal(t, []string{"grant"}, strs(plain(grant.Inputs["command"])))
				assert.Equal(t, "/run/secrets/"+tier.password, envMap(t, grant.Inputs)[tier.password+"_FILE"])
				assert.Equal(t, []string{"retire"}, strs(plain(retire.Inputs["command"])))
				assert.NotContains(t, envMap(t, retire.Inputs), tier.password+"_FILE", "retire needs no password")

				dependsOn := func(c pulumi.MockResourceArgs, on string) bool {
					return slices.ContainsFunc(c.RegisterRPC.GetDependencies(), func(urn string) bool {
						return strings.HasSuffix(urn, "$docker:index/container:Container::"+on)
					})
				}
				assert.True(t, dependsOn(containers[stacks.RoleMigrate], grant.Name), "migrate runs once the login has its password")
				assert.True(t, dependsOn(retire, containers[stacks.RoleSwitch].Name), "the other logins close once the release is live")
			}
		})
	}
}

// A retire that fails fails the update after the switch: the release is
// live, but the previous password may still work, and the operator is
// told where to look.
func TestRetireFailureFailsTheUpdate(t *testing.T) {
	release := releaseOf(t, "prod")
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{exitCodes: map[string]int{deploy.Instance(stacks.RoleCacheRetire, release): 2}})
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "release "+release+" is live, but cacheretire exited with status 2 (see `docker logs prod-cacheretire-"+release+"`): a previous password may still work")
	assert.NotContains(t, res.err.Error(), deploy.NotLivePrefix, "the release did go live")

	ok := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, ok.err)
	assert.Equal(t, map[string]string{"db": "nbms_a", "cache": "nbms_a"}, ok.outputs["app"].Value.(map[string]any)["logins"], "the live release's logins")
}

// A login that fails stops the update before migrate, with the live
// release serving.
func TestLoginFailureKeepsTheLiveRelease(t *testing.T) {
	release := releaseOf(t, "prod")
	for _, role := range []string{stacks.RoleDBLogin, stacks.RoleCacheLogin} {
		t.Run(role, func(t *testing.T) {
			res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{exitCodes: map[string]int{deploy.Instance(role, release): 1}})
			require.Error(t, res.err)
			assert.Contains(t, res.err.Error(), deploy.NotLivePrefix+" "+release+": "+role+" exited with status 1 (see `docker logs prod-"+role+"-"+release+"`)")
			containers := res.m.byType(typeContainer)
			for _, role := range []string{stacks.RoleMigrate, stacks.RoleApp, stacks.RoleSwitch, stacks.RoleDBRetire, stacks.RoleCacheRetire} {
				assert.NotContains(t, containers, role)
			}
		})
	}
}

// nbms:appEnv reaches the environment of the app server and its one-shots
// (nothing else), and what the program fits around the app follows it:
// Docker's stop timeout covers the drain and the shutdown, and nginx waits
// for an answer as long as the app may take to write it.
func TestAppEnvReachesTheApp(t *testing.T) {
	raw := stackConfig(t, "prod")
	raw["appEnv"] = `{"RATE_LIMIT_PUBLIC_API": "600/1m", "DB_MIN_CONNS": 2, "SHUTDOWN_TIMEOUT": "60s", "HTTP_WRITE_TIMEOUT": "90500ms"}`
	res := deployWith(t, "prod", raw, &mocks{})
	require.NoError(t, res.err)
	containers := res.m.byType(typeContainer)
	for _, role := range []string{stacks.RoleApp, stacks.RoleMigrate, stacks.RoleCollectstatic} {
		env := envMap(t, containers[role].Inputs)
		assert.Equal(t, "600/1m", env["RATE_LIMIT_PUBLIC_API"], role)
		assert.Equal(t, "2", env["DB_MIN_CONNS"], role)
		_, err := config.Parse(env)
		assert.NoError(t, err, role)
	}
	for role, c := range containers {
		if role == stacks.RoleApp || role == stacks.RoleMigrate || role == stacks.RoleCollectstatic {
			continue
		}
		assert.NotContains(t, fmt.Sprint(plain(c.Inputs["envs"])), "RATE_LIMIT_PUBLIC_API", role)
	}
	app := containers[stacks.RoleApp].Inputs
	assert.Equal(t, float64(5+60+5), plain(app["stopTimeout"]), "SHUTDOWN_DRAIN_DELAY + SHUTDOWN_TIMEOUT + 5 s to exit")
	assert.Equal(t, plain(app["stopTimeout"]), plain(app["destroyGraceSeconds"]))
	conf := strs(plain(containers[stacks.RoleProxy].Inputs["command"]))[1]
	assert.Contains(t, conf, "proxy_read_timeout 91s;", "HTTP_WRITE_TIMEOUT, rounded up to whole seconds")

	// Untuned, the defaults: 35 s and nginx's 60 s.
	res = deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	containers = res.m.byType(typeContainer)
	assert.Equal(t, float64(35), plain(containers[stacks.RoleApp].Inputs["stopTimeout"]))
	assert.Contains(t, strs(plain(containers[stacks.RoleProxy].Inputs["command"]))[1], "proxy_read_timeout 60s;")
}

// The one-shots' time limit (ONESHOT_TIMEOUT, which keeps a stuck migrate
// or collectstatic from hanging `pulumi up`) is the operator's, like the
// rest of the tuning: the program sets none, so the contract's default
// applies, and nbms:appEnv.ONESHOT_TIMEOUT reaches the one-shots, checked
// by the contract's rule before anything registers.
func TestOneShotTimeoutIsTheOperators(t *testing.T) {
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{})
	require.NoError(t, res.err)
	for role, c := range res.m.byType(typeContainer) {
		assert.NotContains(t, fmt.Sprint(plain(c.Inputs["envs"])), "ONESHOT_TIMEOUT", role)
	}

	raw := stackConfig(t, "prod")
	raw["appEnv"] = `{"ONESHOT_TIMEOUT": "2h"}`
	res = deployWith(t, "prod", raw, &mocks{})
	require.NoError(t, res.err)
	for _, role := range []string{stacks.RoleMigrate, stacks.RoleCollectstatic} {
		env := envMap(t, res.m.byType(typeContainer)[role].Inputs)
		s, err := config.Parse(env)
		require.NoError(t, err, role)
		assert.Equal(t, 2*time.Hour, s.OneShotTimeout, role)
	}

	raw["appEnv"] = `{"ONESHOT_TIMEOUT": "48h"}`
	m := &mocks{}
	res = deployWith(t, "prod", raw, m)
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "nbms:appEnv.ONESHOT_TIMEOUT:")
	assert.Empty(t, m.regs)
}

func TestBadConfigRegistersNothing(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]string
		keys []string
	}{
		{"contract rules", map[string]string{"corsOrigins": `["*"]`, "allowedHosts": `["*"]`, "app": `{"hstsSeconds": 60}`},
			[]string{"nbms:corsOrigins[0]", "nbms:allowedHosts[0]", "nbms:app.hstsSeconds"}},
		{"types and pins", map[string]string{"images": `{"base": "debian:latest"}`, "httpPort": "http", "limits": `{"db": {"memoryMb": 1}}`},
			[]string{"nbms:images.base", "nbms:httpPort"}},
		{"missing operator secrets", map[string]string{"tlsKey": "", "tlsCertificate": ""},
			[]string{"nbms:tlsCertificate", "nbms:tlsKey"}},
		{"app tuning", map[string]string{"appEnv": `{"RATE_LIMIT_PUBLIC_API": "600/m", "LOG_LEVEL": "warn", "HTTP_ADDR": ":1"}`},
			[]string{"nbms:appEnv.RATE_LIMIT_PUBLIC_API", "nbms:appEnv.LOG_LEVEL", "nbms:appEnv.HTTP_ADDR"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := stackConfig(t, "prod")
			for k, v := range tc.set {
				raw[k] = v
			}
			m := &mocks{}
			res := deployWith(t, "prod", raw, m)
			require.Error(t, res.err)
			assert.Empty(t, m.regs, "no resource may be registered")
			for _, key := range tc.keys {
				assert.Contains(t, res.err.Error(), key+":")
			}
		})
	}
}

// A value that passes the stack rules but not a renderer (nginx refuses a
// leading-dot server name) also stops the program before any resource.
func TestRendererErrorRegistersNothing(t *testing.T) {
	raw := stackConfig(t, "dev")
	raw["allowedHosts"] = `["localhost", ".example.org"]`
	m := &mocks{}
	res := deployWith(t, "dev", raw, m)
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "nginx")
	assert.Empty(t, m.regs)
}

func TestProbeOptions(t *testing.T) {
	c, err := stacks.Parse("prod", stacks.Values{Raw: stackConfig(t, "prod"), Secret: stacks.IsSecretKey})
	require.NoError(t, err)
	opts, err := deploy.ProbeOptions(c)
	require.NoError(t, err)
	assert.Equal(t, "https://203.0.113.10:443", opts.BaseURL, "the published entry point")
	assert.Equal(t, "nbms.example.org", opts.Host)
	assert.Equal(t, []string{"/healthz", "/readyz"}, opts.Paths)
	assert.Equal(t, 3*time.Minute, opts.Timeout)
	require.NoError(t, opts.Validate())
	require.NotNil(t, opts.HTTPClient, "trusts the configured certificate")
}

// BenchmarkProgramProd measures one evaluation of the production program
// under mocks (goal: well under a second).
func BenchmarkProgramProd(b *testing.B) {
	raw := stackConfig(b, "prod")
	for b.Loop() {
		res := deployWith(b, "prod", raw, &mocks{})
		if res.err != nil {
			b.Fatal(res.err)
		}
	}
}

// In preview the one-shots have not run and images are not built: the
// program must still register every resource (with unknown values) so that
// `pulumi preview` shows the whole plan.
func TestPreviewRegistersTheWholeStack(t *testing.T) {
	t.Setenv("PULUMI_DRY_RUN", "true")
	res := deployWith(t, "prod", stackConfig(t, "prod"), &mocks{preview: true})
	require.NoError(t, res.err)
	containers := res.m.byType(typeContainer)
	assert.Len(t, containers, len(serving(true))+len(holders(true, true)))
	// The mock monitor drops unknown inputs, so "unknown" reads as null here.
	assert.True(t, containers[stacks.RoleApp].Inputs["image"].IsNull(), "the app waits for the one-shots' exit codes")
	assert.True(t, containers[stacks.RoleMigrate].Inputs["image"].IsNull(), "the image is built at up")
	assert.True(t, containers[stacks.RoleProxy].Inputs["image"].IsNull(), "the pulled image's ID is known at up")
	assert.Equal(t, "prod-db", containers[stacks.RoleDB].Inputs["name"].StringValue(), "what is known is shown")
}

// With an off-host repository, the database and the backup scheduler reach
// it only through the backup relay: the repository's names resolve to the
// relay's fixed address, its keys and the generated cipher passphrase
// reach pgBackRest in an include file on their secrets volumes, and the
// rendered config encrypts the repository.
func TestOffHostRepositoryThroughTheRelay(t *testing.T) {
	raw := stackConfig(t, "prod")
	res := deployWith(t, "prod", raw, &mocks{})
	require.NoError(t, res.err)
	containers := res.m.byType(typeContainer)
	relay := containers[conventions.RoleBackupRelay]
	nets := plain(relay.Inputs["networksAdvanced"]).([]any)
	assert.Equal(t, map[string]any{"name": "prod-backup", "aliases": []any{}, "ipv4Address": "172.16.237.2"}, nets[0], "the relay's fixed address")
	assert.Equal(t, "101:101", plain(relay.Inputs["user"]))
	assert.Equal(t, imageDigest("proxy-image"), plain(relay.Inputs["image"]), "the proxy image, another config")
	relayConf := strs(plain(relay.Inputs["command"]))[1]
	assert.Contains(t, relayConf, "listen 443;")
	assert.Contains(t, relayConf, "set $repository s3.eu-west-1.amazonaws.com:443;", "no address in the stack: resolved by name")
	assert.Contains(t, relayConf, "resolver 127.0.0.11 valid=30s")

	var cipherPass string
	for i, r := range res.m.regs {
		if r.TypeToken == typePassword && r.Name == "backup-cipher-pass" {
			assert.True(t, r.RegisterRPC.GetProtect(), "protected like the data volumes: destroy keeps it")
			assert.Nil(t, plain(r.Inputs["keepers"]), "never rotated: the repository is encrypted with it")
			cipherPass = res.m.generated[countPasswordsBefore(res.m.regs, i)]
		}
	}
	require.NotEmpty(t, cipherPass)
	assert.Equal(t, cipherPass, res.outputs["generatedSecrets"].Value.(map[string]string)["backupCipherPass"], "the operator reads it from the stack output")

	for _, role := range []string{stacks.RoleDB, stacks.RoleBackup} {
		t.Run(role, func(t *testing.T) {
			c := containers[role]
			assert.Equal(t, []any{
				map[string]any{"host": "nbms-example-backups.s3.eu-west-1.amazonaws.com", "ip": "172.16.237.2"},
				map[string]any{"host": "s3.eu-west-1.amazonaws.com", "ip": "172.16.237.2"},
			}, plain(c.Inputs["hosts"]), "host-style addressing: the bucket's name too")
			assert.Equal(t, "/run/secrets", envMap(t, c.Inputs)["PGBACKREST_CONFIG_INCLUDE_PATH"])
			assert.True(t, slices.ContainsFunc(c.RegisterRPC.GetDependencies(), func(urn string) bool { return strings.HasSuffix(urn, "::backup-relay") }),
				"%s starts after the relay", role)
			conf := strs(plain(c.Inputs["command"]))[1]
			for _, line := range []string{"repo2-type=s3", "repo2-cipher-type=aes-256-cbc", "repo2-s3-endpoint=s3.eu-west-1.amazonaws.com",
				"repo2-s3-bucket=nbms-example-backups", "repo2-path=/nbms/prod", "repo2-retention-full=4", "archive-async=y", "spool-path=/tmp/nbms/spool"} {
				assert.Contains(t, conf, "\n"+line+"\n")
			}
			assert.NotContains(t, conf, "repo2-storage-ca-file", "no caCertificates: the image's system CAs")
			assert.NotContains(t, conf, raw["backupS3KeySecret"], "the config file holds no secret")
		})
	}
	holderFiles := func(holder string) map[string]string {
		out := map[string]string{}
		for _, u := range containers[holder].Inputs["uploads"].ArrayValue() {
			up := u.ObjectValue()
			out[path.Base(up["file"].StringValue())] = up["content"].SecretValue().Element.StringValue()
		}
		return out
	}
	want := "[global]\nrepo2-s3-key=" + raw["backupS3Key"] + "\nrepo2-s3-key-secret=" + raw["backupS3KeySecret"] + "\nrepo2-cipher-pass=" + cipherPass + "\n"
	assert.Equal(t, want, holderFiles("secrets-db")["pgbackrest-offhost.conf"])
	assert.Equal(t, map[string]string{"pgbackrest-offhost.conf": want}, holderFiles("secrets-backup"))
	assert.Equal(t, imageDigest("db-image"), plain(containers["secrets-backup"].Inputs["image"]),
		"the database image, which an app release does not rebuild: a release does not replace the scheduler's secrets")

	// Without one (the dev stack): no relay, no backup networks, no
	// passphrase, one repository.
	dev := deployWith(t, "dev", stackConfig(t, "dev"), &mocks{})
	require.NoError(t, dev.err)
	assert.NotContains(t, dev.m.byType(typeContainer), conventions.RoleBackupRelay)
	assert.NotContains(t, dev.m.byType(typeNetwork), "egress")
	assert.NotContains(t, dev.outputs["generatedSecrets"].Value.(map[string]string), "backupCipherPass")
	assert.NotContains(t, envMap(t, dev.m.byType(typeContainer)[stacks.RoleDB].Inputs), "PGBACKREST_CONFIG_INCLUDE_PATH")
}

// A recovery (nbms:recover) restores the database from the off-host
// repository before PostgreSQL starts: the restore one-shot has the
// database's image, user, volumes and pgBackRest config, only the backup
// network, and the server's WAL settings; PostgreSQL waits for its exit
// code. The passphrase is the operator's: nothing generates one.
func TestRecoveryRestoresBeforeTheDatabaseStarts(t *testing.T) {
	const pass = "kept-off-the-host-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
	for _, tc := range []struct{ recover, target string }{
		{"latest", "latest"},
		{"2026-12-07T15:05:00.25+01:00", "2026-12-07 14:05:00.25+00"},
	} {
		t.Run(tc.recover, func(t *testing.T) {
			raw := stackConfig(t, "prod")
			raw["recover"], raw["backupCipherPass"] = tc.recover, pass
			res := deployWith(t, "prod", raw, &mocks{})
			require.NoError(t, res.err)
			containers := res.m.byType(typeContainer)
			restore, db := containers[conventions.RoleRestore], containers[stacks.RoleDB]
			require.NotNil(t, restore, "a restore one-shot")
			assert.True(t, conventions.OneShot(conventions.RoleRestore))
			assert.Equal(t, true, plain(restore.Inputs["attach"]), "the program awaits it")
			assert.Equal(t, "prod-restore", res.outputs["containers"].Value.(map[string]string)[conventions.RoleRestore])
			for _, field := range []resource.PropertyKey{"image", "user", "volumes", "hosts", "shmSize", "memory"} {
				assert.Equal(t, plain(db.Inputs[field]), plain(restore.Inputs[field]), "%s: the database's", field)
			}
			nets := plain(restore.Inputs["networksAdvanced"]).([]any)
			require.Len(t, nets, 1)
			assert.Equal(t, "prod-backup", nets[0].(map[string]any)["name"], "only the way to the off-host repository")
			env := envMap(t, restore.Inputs)
			assert.Equal(t, map[string]string{
				"PGBACKREST_CONFIG": "/tmp/nbms/pgbackrest.conf", "PGBACKREST_STANZA": "nbms", "PGBACKREST_CONFIG_INCLUDE_PATH": "/run/secrets",
			}, env, "pgBackRest's settings, no password")
			cmd := strs(plain(restore.Inputs["command"]))
			dbCmd := strs(plain(db.Inputs["command"]))
			dash := slices.Index(cmd, "--")
			require.Positive(t, dash)
			assert.Equal(t, dbCmd[:dash], cmd[:dash], "the database's rendered files")
			assert.Equal(t, []string{"/usr/local/bin/nbms-db-restore", "2", tc.target}, cmd[dash+1:dash+4])
			assert.Equal(t, dbCmd[slices.Index(dbCmd, "--")+3:], cmd[dash+4:], "the server's own settings, WAL archiving among them")
			assert.Contains(t, cmd, "archive_timeout=60s")
			assert.True(t, slices.ContainsFunc(db.RegisterRPC.GetDependencies(), func(urn string) bool { return strings.HasSuffix(urn, "::restore") }),
				"PostgreSQL starts after the restore")

			for _, r := range res.m.regs {
				assert.False(t, r.TypeToken == typePassword && r.Name == "backup-cipher-pass", "no passphrase generated")
			}
			assert.NotContains(t, res.outputs["generatedSecrets"].Value.(map[string]string), "backupCipherPass")
			assert.Equal(t, deploy.PassphraseGiven, res.outputs["backupSchedule"].Value.(map[string]any)[deploy.OutputOffHostPassphrase],
				"the output says the passphrase must be given again")
			include := ""
			for _, u := range containers["secrets-db"].Inputs["uploads"].ArrayValue() {
				if up := u.ObjectValue(); path.Base(up["file"].StringValue()) == "pgbackrest-offhost.conf" {
					include = up["content"].SecretValue().Element.StringValue()
				}
			}
			assert.Contains(t, include, "\nrepo2-cipher-pass="+pass+"\n", "pgBackRest opens the repository with the operator's passphrase")
		})
	}

	// A failed restore stops the update before PostgreSQL starts, naming
	// the container to read.
	raw := stackConfig(t, "prod")
	raw["recover"], raw["backupCipherPass"] = "latest", pass
	res := deployWith(t, "prod", raw, &mocks{exitCodes: map[string]int{conventions.RoleRestore: 1}})
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "the recovery's restore exited with status 1: see `docker logs prod-restore`")
	assert.True(t, res.m.byType(typeContainer)[stacks.RoleDB].Inputs["image"].IsNull(), "PostgreSQL never gets its image")
}

// A stack's address for the repository and its CA certificates: the relay
// connects to the address, and pgBackRest verifies with the CAs.
func TestOffHostRepositoryAddressAndCA(t *testing.T) {
	raw := stackConfig(t, "e2e")
	ca := testsupport.NewCA(t, "off-host CA")
	raw["backup"] = withOffHost(t, raw["backup"], map[string]any{"caCertificates": ca.PEM})
	res := deployWith(t, "e2e", raw, &mocks{})
	require.NoError(t, res.err)
	containers := res.m.byType(typeContainer)
	relayConf := strs(plain(containers[conventions.RoleBackupRelay].Inputs["command"]))[1]
	assert.Contains(t, relayConf, "listen 19443;")
	assert.Contains(t, relayConf, "proxy_pass 172.17.0.1:19443;")
	assert.NotContains(t, relayConf, "resolver", "an address needs no DNS")
	db := containers[stacks.RoleDB]
	assert.Equal(t, []any{map[string]any{"host": "s3.nbms.e2e.test", "ip": "172.16.252.2"}}, plain(db.Inputs["hosts"]), "path style: the endpoint's name only")
	cmd := strs(plain(db.Inputs["command"]))
	i := slices.Index(cmd, "/tmp/nbms/offhost-ca.pem")
	require.GreaterOrEqual(t, i, 0, "the prologue writes the CA file")
	assert.Equal(t, ca.PEM, cmd[i+1])
	assert.Contains(t, cmd[1], "\nrepo2-storage-ca-file=/tmp/nbms/offhost-ca.pem\n")
	assert.Contains(t, cmd[1], "\nrepo2-s3-uri-style=path\n")
}

// countPasswordsBefore is how many random passwords were registered
// before regs[i]: m.generated holds their values in that order.
func countPasswordsBefore(regs []pulumi.MockResourceArgs, i int) int {
	n := 0
	for _, r := range regs[:i] {
		if r.TypeToken == typePassword {
			n++
		}
	}
	return n
}
