package enginetest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/driver"
	"github.com/nbms-deploy/nbms/infra/enginetest/fakeprovider"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	domain     = "nbms.example.org"
	sentryDSN  = "https://sentrykey0123456789@sentry.example.org/42"
	passphrase = "enginetest-passphrase"
	s3Key      = "ENGINETESTKEY"
	s3Secret   = "enginetest-s3-secret-0123456789"
)

var (
	root       string // repository root
	pulumiBin  string // the CLI built by `make setup`
	policyPack string // the policy pack, built by TestMain
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pulumiBin = filepath.Join(root, ".tools", "pulumi", "bin", "pulumi")
		if _, err := os.Stat(pulumiBin); err != nil {
			fmt.Fprintf(os.Stderr, "enginetest: the Pulumi CLI is missing at %s: run `make setup` (or `make tools`) first\n", pulumiBin)
			return 1
		}
		dir, err := os.MkdirTemp("", "enginetest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		policyPack = filepath.Join(dir, "nbms-policy")
		if err := testsupport.BuildBinary(policyPack, "github.com/nbms-deploy/nbms/policy/cmd/nbms-policy"); err != nil {
			fmt.Fprintf(os.Stderr, "enginetest: building the policy pack: %v\n", err)
			return 1
		}
		return m.Run()
	}())
}

// env is one test's engine environment: its own state backend and Pulumi
// home, and the provider doubles the engine attaches to.
type env struct {
	t              *testing.T
	backend        string
	docker, random *fakeprovider.Provider
	certFile       string
	keyFile        string
	cert, key      string
	dsnFile        string
	// s3KeyFile and s3SecretFile hold the off-host repository's keys
	// (the production stack file names one).
	s3KeyFile, s3SecretFile string
	out                     *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	e := &env{
		t:      t,
		docker: fakeprovider.New("docker", "4.10.0"),
		random: fakeprovider.New("random", "4.18.0"),
		out:    &bytes.Buffer{},
	}
	ports := map[*fakeprovider.Provider]int{}
	for _, p := range []*fakeprovider.Provider{e.docker, e.random} {
		port, stop, err := p.Serve()
		require.NoError(t, err)
		t.Cleanup(stop)
		ports[p] = port
	}
	e.backend = t.TempDir()
	t.Setenv("PULUMI_DEBUG_PROVIDERS", fakeprovider.Env(ports))
	t.Setenv("PULUMI_HOME", t.TempDir())
	t.Setenv("PULUMI_BACKEND_URL", "file://"+e.backend)
	t.Setenv("PULUMI_CONFIG_PASSPHRASE", passphrase)
	t.Setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "")

	e.cert, e.key = testsupport.SelfSignedCert(t, domain)
	dir := t.TempDir()
	e.certFile, e.keyFile, e.dsnFile = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem"), filepath.Join(dir, "dsn")
	require.NoError(t, os.WriteFile(e.certFile, []byte(e.cert), 0o600))
	require.NoError(t, os.WriteFile(e.keyFile, []byte(e.key), 0o600))
	require.NoError(t, os.WriteFile(e.dsnFile, []byte(sentryDSN+"\n"), 0o600))
	e.s3KeyFile, e.s3SecretFile = filepath.Join(dir, "s3-key"), filepath.Join(dir, "s3-secret")
	require.NoError(t, os.WriteFile(e.s3KeyFile, []byte(s3Key+"\n"), 0o600))
	require.NoError(t, os.WriteFile(e.s3SecretFile, []byte(s3Secret+"\n"), 0o600))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver output:\n%s", e.out)
		}
	})
	return e
}

// stackFile writes the committed production stack file with some keys
// replaced (values in the file's flat YAML/JSON style) and returns its path.
func (e *env) stackFile(overrides map[string]string) string {
	data, err := os.ReadFile(filepath.Join(root, "Pulumi.prod.yaml"))
	require.NoError(e.t, err)
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		key, _, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if _, replaced := overrides[strings.TrimPrefix(key, stacks.Namespace+":")]; replaced {
			continue
		}
		b.WriteString(line + "\n")
	}
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		fmt.Fprintf(&b, "  %s:%s: %s\n", stacks.Namespace, k, overrides[k])
	}
	path := filepath.Join(e.t.TempDir(), "Pulumi.prod.yaml")
	require.NoError(e.t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

func (e *env) options(stackFile string) driver.Options {
	return driver.Options{
		Stack: "prod", Root: root, StackFile: stackFile,
		ConfigFiles: map[string]string{"tlsCertificate": e.certFile},
		SecretFiles: map[string]string{"tlsKey": e.keyFile, "sentryDsn": e.dsnFile, "backupS3Key": e.s3KeyFile, "backupS3KeySecret": e.s3SecretFile},
		PulumiRoot:  filepath.Dir(filepath.Dir(pulumiBin)),
		PolicyPack:  policyPack,
		ReportDir:   e.t.TempDir(),
		Stdout:      e.out, Stderr: e.out,
	}
}

// run runs one driver command and records its wall time.
func (e *env) run(cmd driver.Command, opts driver.Options) (*driver.Result, error) {
	start := time.Now()
	res, err := driver.Run(context.Background(), cmd, opts)
	e.t.Logf("%s took %s", cmd, time.Since(start).Round(time.Millisecond))
	return res, err
}

// calls returns the provider calls (docker then random) of the given methods.
func (e *env) calls(methods ...string) []fakeprovider.Call {
	var out []fakeprovider.Call
	for _, c := range append(e.docker.Calls(), e.random.Calls()...) {
		if slices.Contains(methods, c.Method) {
			out = append(out, c)
		}
	}
	return out
}

// applied are the calls that would change something at a real provider.
func (e *env) applied() []fakeprovider.Call {
	var out []fakeprovider.Call
	for _, c := range e.calls("Create", "Update", "Delete") {
		if !c.Preview {
			out = append(out, c)
		}
	}
	return out
}

func (e *env) reset() {
	e.docker.Reset()
	e.random.Reset()
}

// standIn answers /healthz and /readyz where the post-deploy hooks probe:
// for nginx at the public URL (HTTPS with the stack's certificate) or for
// the app container at its own address (plain HTTP on the app's port).
// ready decides /readyz's status. It remembers how many docker provider
// calls had happened at each request, to place the probe in the
// deployment's timeline.
type standIn struct {
	srv    *httptest.Server
	mu     sync.Mutex
	seen   []int // len(docker.Calls()) at each request
	hosts  []string
	docker *fakeprovider.Provider
}

func (e *env) newStandIn(ready bool) *standIn {
	p := &standIn{docker: e.docker}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, len(p.docker.Calls()))
		p.hosts = append(p.hosts, r.Host)
		p.mu.Unlock()
		switch {
		case r.URL.Path == "/healthz":
			fmt.Fprint(w, `{"status":"ok"}`)
		case r.URL.Path == "/readyz" && ready:
			fmt.Fprint(w, `{"status":"ready"}`)
		case r.URL.Path == "/readyz":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"status":"unavailable","database":"connection refused"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	e.t.Cleanup(p.srv.Close)
	return p
}

// publicEntry stands in for nginx at the public URL.
func (e *env) publicEntry(ready bool) *standIn {
	p := e.newStandIn(ready)
	pair, err := tls.X509KeyPair([]byte(e.cert), []byte(e.key))
	require.NoError(e.t, err)
	p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	p.srv.StartTLS()
	return p
}

// appEntry stands in for the app container at its own address: a loopback
// address of its own (the app's port is fixed), which the fake docker
// provider reports as the app container's.
func (e *env) appEntry(ready bool) *standIn {
	p := e.newStandIn(ready)
	var lis net.Listener
	var err error
	for range 20 {
		addr := fmt.Sprintf("127.%d.%d.%d", 64+mrand.IntN(64), mrand.IntN(256), 1+mrand.IntN(254))
		if lis, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(stacks.AppPort))); err == nil {
			e.docker.SetAddress("prod-"+stacks.RoleApp, addr)
			break
		}
	}
	require.NoError(e.t, err, "a loopback address for the app stand-in")
	p.srv.Listener = lis
	p.srv.Start()
	return p
}

// entries stands in for both: the app's readiness and the public entry.
func (e *env) entries(ready bool) (public, app *standIn) {
	return e.publicEntry(ready), e.appEntry(ready)
}

func (p *standIn) requests() (seen []int, hosts []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen), slices.Clone(p.hosts)
}

// probeSetting points the post-deploy probe at the stand-in.
func (p *standIn) probeSetting(timeout string) string {
	return fmt.Sprintf(`{"baseUrl": %q, "timeout": %q}`, p.srv.URL, timeout)
}

// expectedPlan is every resource the program registers for the production
// stack (type and name; see infra/deploy and its mock tests), besides the
// stack itself and the default providers.
var expectedPlan = []string{
	"nbms:deploy:Network network", "docker:index/network:Network edge", "docker:index/network:Network internal",
	"nbms:deploy:Secrets secrets",
	"random:index/randomPassword:RandomPassword db-superuser-password",
	"random:index/randomPassword:RandomPassword app-db-password",
	"random:index/randomPassword:RandomPassword redis-password",
	"random:index/randomPassword:RandomPassword app-secret-key",
	"nbms:deploy:Images images", "docker:index/remoteImage:RemoteImage base-image", "docker:index/tag:Tag base-tag",
	"docker:index/image:Image app-image", "docker:index/image:Image db-image", "docker:index/image:Image backup-image",
	"docker:index/image:Image proxy-image", "docker:index/image:Image cache-image",
	"nbms:deploy:Database database",
	"docker:index/volume:Volume pgdata", "docker:index/volume:Volume pgbackrest-repo", "docker:index/volume:Volume pgrun",
	"docker:index/volume:Volume drill", // the restore drills' scratch space
	"docker:index/container:Container db", "docker:index/container:Container backup",
	// The off-host repository: its networks, the relay, the generated
	// passphrase and the scheduler's secrets (its keys).
	"docker:index/network:Network backup", "docker:index/network:Network egress",
	"random:index/randomPassword:RandomPassword backup-cipher-pass", "docker:index/container:Container backup-relay",
	"docker:index/volume:Volume secrets-backup", "docker:index/container:Container secrets-backup",
	"nbms:deploy:Cache cache", "docker:index/volume:Volume cache-control", "docker:index/container:Container cache",
	"nbms:deploy:App app",
	"docker:index/volume:Volume media", "docker:index/volume:Volume static",
	"docker:index/container:Container dblogin-<release>", "docker:index/container:Container cachelogin-<release>",
	"docker:index/container:Container migrate-<release>", "docker:index/container:Container collectstatic-<release>",
	"docker:index/container:Container app-<release>",
	"nbms:deploy:Proxy proxy", "docker:index/volume:Volume proxy-control", "docker:index/container:Container switch-<release>",
	"docker:index/container:Container proxy",
	"docker:index/container:Container dbretire-<release>", "docker:index/container:Container cacheretire-<release>",
	// Each tier's secrets volume and the one-shot holder that fills it.
	"docker:index/volume:Volume secrets-db", "docker:index/container:Container secrets-db",
	"docker:index/volume:Volume secrets-app-<release>", "docker:index/container:Container secrets-app-<release>",
	"docker:index/volume:Volume secrets-proxy", "docker:index/container:Container secrets-proxy",
}

// releaseName matches the resource name of a release's container (see
// conventions.PerRelease).
var releaseName = regexp.MustCompile(`^(` + strings.Join(append(slices.Clone(conventions.ReleaseRoles), "secrets-app"), "|") + `)-[0-9a-f]{12}$`)

// generic names a release's container "<role>-<release>", for lists that
// hold whichever release the program declares.
func generic(name string) string {
	if m := releaseName.FindStringSubmatch(name); m != nil {
		return m[1] + "-<release>"
	}
	return name
}

func nameOf(urn string) string { return urn[strings.LastIndex(urn, "::")+2:] }

// planned lists "type name" of the steps with op, leaving out the engine's
// own stack and provider resources.
func planned(steps []driver.Step, ops ...string) []string {
	var out []string
	for _, s := range steps {
		if s.Type == "pulumi:pulumi:Stack" || strings.HasPrefix(s.Type, "pulumi:providers:") || !slices.Contains(ops, s.Op) {
			continue
		}
		out = append(out, s.Type+" "+generic(nameOf(s.URN)))
	}
	return out
}

func TestPreviewOfTheProductionStackPlansTheProgramAndPassesThePolicyPack(t *testing.T) {
	e := newEnv(t)
	entry := e.publicEntry(true)
	opts := e.options(e.stackFile(map[string]string{"probe": entry.probeSetting("20s")}))

	res, err := e.run(driver.Preview, opts)
	require.NoError(t, err)

	assert.ElementsMatch(t, expectedPlan, planned(res.Steps, "create"), "exactly the program's resources, all to create")
	assert.Len(t, res.Steps, len(expectedPlan)+3, "plus the stack and the two default providers; nothing else")
	for _, ev := range res.Policy {
		assert.NotEqual(t, "mandatory", ev.EnforcementLevel, "%s: %s", ev.PolicyName, ev.Message)
	}
	assert.Empty(t, e.applied(), "a preview changes nothing at the providers")
	assert.NotEmpty(t, e.calls("Check"), "the engine did check the resources with the providers")
	seen, _ := entry.requests()
	assert.Empty(t, seen, "hooks do not run in preview")

	rep := readReport(t, res.Report)
	assert.Equal(t, "pass", rep.Result)
	assert.Empty(t, rep.Summary.MandatoryFailed)
	assert.Greater(t, rep.Summary.Passed, 10, "the policies did evaluate the plan")
	for _, f := range []string{"report.md", "report.html", "report.sarif"} {
		assert.FileExists(t, filepath.Join(res.Report, f))
	}
}

type reportDoc struct {
	Result  string `json:"result"`
	Summary struct {
		Passed          int      `json:"passed"`
		MandatoryFailed []string `json:"mandatoryFailed"`
	} `json:"summary"`
}

func readReport(t *testing.T, dir string) reportDoc {
	t.Helper()
	require.NotEmpty(t, dir, "a report was written")
	data, err := os.ReadFile(filepath.Join(dir, "report.json"))
	require.NoError(t, err)
	var doc reportDoc
	require.NoError(t, json.Unmarshal(data, &doc))
	return doc
}

func TestUpDeploysInOrderProbesKeepsSecretsEncryptedAndDestroyKeepsData(t *testing.T) {
	e := newEnv(t)
	entry, app := e.entries(true)
	stackFile := e.stackFile(map[string]string{"probe": entry.probeSetting("20s")})
	opts := e.options(stackFile)

	// First up: everything is created, in dependency order.
	res, err := e.run(driver.Up, opts)
	require.NoError(t, err)
	assert.ElementsMatch(t, expectedPlan, planned(res.Steps, "create"))
	created := map[string]int{} // name -> position among docker creates
	var order []string
	for _, c := range e.docker.Calls() {
		if c.Method == "Create" && !c.Preview {
			created[generic(c.Name)] = len(order)
			order = append(order, generic(c.Name))
		}
	}
	t.Logf("docker create order: %v", order)
	var containers []string
	for _, role := range stacks.Roles {
		if role == stacks.RoleSecrets {
			continue // the holders: below
		}
		if role == conventions.RoleRestore {
			continue // a recovery's (infra/e2e recovers for real)
		}
		if conventions.PerRelease(role) {
			role += "-<release>"
		}
		containers = append(containers, role)
	}
	for _, first := range []string{"edge", "internal", "pgdata", "pgbackrest-repo", "pgrun", "media", "static"} {
		for _, container := range containers {
			assert.Less(t, created[first], created[container], "%s before the %s container", first, container)
		}
	}
	// Each tier's secret files are in place before its first reader.
	for holder, reader := range map[string]string{
		"secrets-db": "db", "secrets-app-<release>": "dblogin-<release>", "secrets-proxy": "proxy", "secrets-backup": "backup",
	} {
		assert.Less(t, created[holder], created[reader], "%s before %s", holder, reader)
	}
	assert.Less(t, created["secrets-app-<release>"], created["cachelogin-<release>"], "the release's secrets before its logins")
	assert.Less(t, created["cache-control"], created["cache"], "the cache's control volume before Redis")
	assert.Less(t, created["db"], created["dblogin-<release>"], "the database before its login")
	assert.Less(t, created["backup-relay"], created["db"], "the relay before the database's first archive")
	assert.Less(t, created["cache"], created["cachelogin-<release>"], "Redis before its login")
	for _, login := range []string{"dblogin-<release>", "cachelogin-<release>"} {
		assert.Less(t, created[login], created["migrate-<release>"], "%s before migrations", login)
	}
	for _, retire := range []string{"dbretire-<release>", "cacheretire-<release>"} {
		assert.Less(t, created["switch-<release>"], created[retire], "the switch to the release before %s", retire)
	}
	assert.Less(t, created["db"], created["migrate-<release>"], "the database before migrations")
	assert.Less(t, created["migrate-<release>"], created["app-<release>"], "migrations before the app")
	assert.Less(t, created["collectstatic-<release>"], created["app-<release>"], "collectstatic before the app")
	assert.Less(t, created["app-<release>"], created["switch-<release>"], "the release before the switch to it")
	assert.Less(t, created["proxy-control"], created["switch-<release>"], "the control volume before the switch")
	assert.Less(t, created["switch-<release>"], created["proxy"], "the switch before nginx, which starts on its upstream")
	assert.Less(t, created["base-image"], created["base-tag"], "the base before its stack tag")
	for _, img := range []string{"app-image", "db-image", "backup-image", "proxy-image", "cache-image"} {
		assert.Less(t, created["base-tag"], created[img], "the base tag before %s", img)
	}
	assert.Less(t, created["app-image"], created["backup-image"], "the app image before the backup image that copies its binary")
	assert.Len(t, order, 17+4+12+5+1+1, "13 containers (the backup relay's too) and 4 secrets holders, 4 networks (edge, internal, backup, egress), 8 volumes and 4 secrets volumes, 5 built images, the base and its tag")

	// The hooks probed during the update: the app container itself right
	// after it was created and before nginx was (nginx does not exist yet
	// on a first deployment), then the public entry once nginx was created.
	// The driver's own probe only comes after the whole update.
	appAt, proxyAt := callIndex(e.docker.Calls(), "Create", "app-<release>"), callIndex(e.docker.Calls(), "Create", "proxy")
	seen, hosts := app.requests()
	require.NotEmpty(t, seen, "the app's readiness hook probed the app container")
	assert.Greater(t, seen[0], appAt, "first app probe after the app container exists")
	assert.LessOrEqual(t, seen[len(seen)-1], proxyAt, "every app probe before nginx is created: the AfterCreate hook of the app")
	assert.Equal(t, domain, hosts[0], "the app probed for the domain")
	seen, hosts = entry.requests()
	require.NotEmpty(t, seen)
	assert.Greater(t, seen[0], proxyAt, "first public probe after nginx exists: the AfterCreate hook of the proxy")
	assert.Equal(t, domain, hosts[0], "probed as a visitor of the domain")
	require.NotNil(t, res.Probe, "the driver probed after up")
	assert.True(t, res.Probe.Paths[len(res.Probe.Paths)-1].Ready)
	assert.Equal(t, "https://"+domain, res.Outputs["url"].Value)
	assert.True(t, res.Outputs["generatedSecrets"].Secret)
	assert.Equal(t, "pass", readReport(t, res.Report).Result, "the deployed state passes the audit too")

	// No secret in plaintext: not in `pulumi stack export`, not in any
	// file of the backend.
	export := e.stackExport()
	assert.Contains(t, export, `"4dabf18193072939515e22adb298388d"`, "the state does hold secrets, encrypted")
	secrets := map[string]string{"sentry DSN": sentryDSN, "TLS key": pemBody(e.key), "S3 key": s3Key, "S3 secret key": s3Secret}
	generated := e.random.Generated()
	require.Len(t, generated, 5, "four passwords and the off-host repository's passphrase")
	for i, g := range generated {
		secrets[fmt.Sprintf("generated password %d", i)] = g
	}
	files := map[string]string{"pulumi stack export": export}
	require.NoError(t, filepath.Walk(e.backend, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			data, rerr := os.ReadFile(path)
			files[path] = string(data)
			return rerr
		}
		return err
	}))
	require.Greater(t, len(files), 1, "the backend holds state files")
	for where, text := range files {
		for what, secret := range secrets {
			assert.NotContains(t, text, secret, "%s in plaintext in %s", what, where)
		}
	}

	// outputs: secrets stay masked.
	e.out.Reset()
	out, err := e.run(driver.Outputs, opts)
	require.NoError(t, err)
	assert.True(t, out.Outputs["generatedSecrets"].Secret)
	assert.Contains(t, e.out.String(), `"generatedSecrets": "[secret]"`)
	for _, g := range generated {
		assert.NotContains(t, e.out.String(), g)
	}

	// A second up changes nothing at the providers.
	e.reset()
	res, err = e.run(driver.Up, opts)
	require.NoError(t, err)
	assert.Empty(t, e.applied(), "second up: no Create, Update or Delete")
	assert.Equal(t, map[string]int{"same": len(expectedPlan) + 1}, res.Changes)
	require.NotNil(t, res.Probe, "the driver probes even when nothing changed")

	// One setting of the app changed (its memory limit): a new release,
	// created beside the live one (its one-shots, its server, the switch to
	// it); the old release's containers are deleted last, after the switch;
	// nothing else changes (nginx is not replaced).
	oldRelease := res.Outputs["app"].Value.(map[string]any)["release"].(string)
	e.reset()
	opts.StackFile = e.stackFile(map[string]string{
		"probe":  entry.probeSetting("20s"),
		"limits": `{"app": {"memoryMb": 768}}`,
	})
	preview, err := e.run(driver.Preview, opts)
	require.NoError(t, err)
	newRelease := ""
	for _, step := range preview.Steps {
		if name := nameOf(step.URN); step.Op == "create" && releaseName.MatchString(name) {
			newRelease = name[strings.LastIndexByte(name, '-')+1:]
		}
	}
	require.NotEmpty(t, newRelease, "a new release is planned")
	require.NotEqual(t, oldRelease, newRelease)
	var ops, want []string
	for _, step := range preview.Steps {
		if step.Op != "same" && step.Type != "pulumi:pulumi:Stack" {
			ops = append(ops, step.Op+" "+nameOf(step.URN))
		}
	}
	// The release's containers, and its secrets volume and holder (both
	// named secrets-app-<release>).
	for _, role := range append(slices.Clone(conventions.ReleaseRoles), "secrets-app", "secrets-app") {
		want = append(want, "create "+deploy.Instance(role, newRelease), "delete "+deploy.Instance(role, oldRelease))
	}
	assert.ElementsMatch(t, want, ops)
	e.reset()
	res, err = e.run(driver.Up, opts)
	require.NoError(t, err)
	perRelease := len(conventions.ReleaseRoles) + 2
	assert.Equal(t, map[string]int{"same": len(expectedPlan) + 1 - perRelease, "create": perRelease, "delete": perRelease}, res.Changes, "the stack itself is the +1")
	var changed []string
	for _, c := range e.applied() {
		changed = append(changed, c.Method+" "+c.Name)
	}
	t.Logf("applied: %v", changed)
	require.Len(t, changed, 2*perRelease)
	switchAt := slices.Index(changed, "Create "+deploy.Instance("switch", newRelease))
	require.GreaterOrEqual(t, switchAt, 0)
	for i, c := range changed {
		if strings.HasPrefix(c, "Delete ") {
			assert.Greater(t, i, switchAt, "%s only after the switch to the new release", c)
		}
	}
	for _, c := range e.calls("Diff") {
		assert.Empty(t, c.Diffs, "%s: nothing declared before changes", c.Name)
	}

	// destroy deletes everything but the protected data volumes.
	e.reset()
	_, err = e.run(driver.Destroy, opts)
	require.NoError(t, err)
	var deleted []string
	for _, c := range e.applied() {
		require.Equal(t, "Delete", c.Method)
		deleted = append(deleted, c.Name)
	}
	assert.ElementsMatch(t, []string{
		"edge", "internal", "db-superuser-password", "app-db-password", "redis-password", "app-secret-key",
		"base-image", "base-tag", "app-image", "db-image", "backup-image", "proxy-image", "cache-image",
		"pgrun", "drill", "db", "backup", "cache-control", "cache", "static", "proxy-control", "proxy",
		deploy.Instance("migrate", newRelease), deploy.Instance("collectstatic", newRelease),
		deploy.Instance("app", newRelease), deploy.Instance("switch", newRelease),
		deploy.Instance("dblogin", newRelease), deploy.Instance("dbretire", newRelease),
		deploy.Instance("cachelogin", newRelease), deploy.Instance("cacheretire", newRelease),
		// The secrets volumes and their holders go too: the secrets are in
		// the state, and the next up places them again.
		"secrets-db", "secrets-db", "secrets-proxy", "secrets-proxy",
		deploy.Instance("secrets-app", newRelease), deploy.Instance("secrets-app", newRelease),
		// The off-host repository's relay and networks; its passphrase is
		// protected like the data volumes and stays.
		"backup", "egress", "backup-relay", "secrets-backup", "secrets-backup",
	}, deleted)
	remaining := e.stackExport()
	for _, kept := range []string{"pgdata", "pgbackrest-repo", "media"} {
		assert.Contains(t, remaining, "docker:index/volume:Volume::"+kept, "%s stays in the state", kept)
	}
	assert.Contains(t, remaining, "random:index/randomPassword:RandomPassword::backup-cipher-pass", "the off-host backups stay readable")
	assert.NotContains(t, remaining, "docker:index/container:Container::")
}

func callIndex(calls []fakeprovider.Call, method, name string) int {
	for i, c := range calls {
		if c.Method == method && generic(c.Name) == name && !c.Preview {
			return i
		}
	}
	return -1
}

// stackExport runs `pulumi stack export` with the real CLI.
func (e *env) stackExport() string {
	dir := e.t.TempDir()
	cmd := exec.Command(pulumiBin, "stack", "export", "--stack", "organization/nbms/prod", "--non-interactive")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(e.t, err, stderr.String())
	return string(out)
}

// pemBody is the base64 body of a PEM block: what a leak would contain.
func pemBody(p string) string {
	return strings.Split(strings.TrimSpace(p), "\n")[1]
}

func TestUpFailsWithTheHookMessageWhenTheStackNeverGetsReady(t *testing.T) {
	e := newEnv(t)
	entry, _ := e.entries(false)
	opts := e.options(e.stackFile(map[string]string{"probe": entry.probeSetting("3s")}))

	_, err := e.run(driver.Up, opts)
	require.Error(t, err)
	// A first deployment: no release was live, so not "the live one kept
	// serving" (exit 4) but a failed first deployment.
	assert.Equal(t, driver.ExitFirstDeployFailed, driver.ExitCode(err))
	assert.Contains(t, err.Error(), "none was live before this up")
	assert.Contains(t, err.Error(), "post-deploy probe")
	output := e.out.String()
	assert.Contains(t, output, `after hook "nbms-app-readiness-probe" failed`)
	assert.Contains(t, output, "readiness probe of the new app-")
	assert.Contains(t, output, "/readyz not ready after 3s")
	assert.Contains(t, output, "503")
	assert.Equal(t, -1, callIndex(e.docker.Calls(), "Create", "proxy"), "the update stopped at the app: nginx was not created")
}

func TestAStackThatBreaksAMandatoryRuleIsRefusedBeforeAnythingIsCreated(t *testing.T) {
	cases := []struct {
		name      string
		overrides map[string]string
		policy    string // policy config JSON, optional
		code      int
		message   string
	}{
		// The stack validation (stacks.Parse, the program's first step)
		// refuses these before the policy pack sees a resource; the pack
		// would refuse them too (nbms-app-disallow-wildcard-cors,
		// docker-container-restrict-published-ports,
		// docker-image-require-pinned-version, nbms-app-configure-env-contract).
		{"wildcard CORS origin", map[string]string{"corsOrigins": `["*"]`}, "", driver.ExitUsage, "nbms:corsOrigins[0]"},
		{"http CSRF origin in production", map[string]string{"csrfTrustedOrigins": `["http://nbms.example.org"]`}, "", driver.ExitUsage, "nbms:csrfTrustedOrigins[0]"},
		{"published on 0.0.0.0", map[string]string{"bindAddress": "0.0.0.0"}, "", driver.ExitUsage, "nbms:bindAddress"},
		{"unpinned image", map[string]string{"images": `{"base": "debian:latest"}`}, "", driver.ExitUsage, "nbms:images.base"},
		{"HSTS below a year", map[string]string{"app": `{"hstsSeconds": 86400}`}, "", driver.ExitUsage, "nbms:app.hstsSeconds"},
		// These pass the stack validation and only the policy pack refuses.
		{"one full backup kept", map[string]string{"backup": `{"retentionFull": 1, "offHost": {"endpoint": "s3.eu-west-1.amazonaws.com", "region": "eu-west-1", "bucket": "nbms-example-backups", "path": "/nbms/prod"}}`},
			"", driver.ExitPolicy, "nbms-backup-configure-schedule-and-retention"},
		{"memory above the organisation's ceiling", map[string]string{"limits": `{"db": {"memoryMb": 4096}}`},
			`{"docker-container-configure-memory-limit": {"maxMemoryMb": 2048}}`, driver.ExitPolicy, "docker-container-configure-memory-limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entry := e.publicEntry(true)
			tc.overrides["probe"] = entry.probeSetting("5s")
			opts := e.options(e.stackFile(tc.overrides))
			if tc.policy != "" {
				opts.PolicyConfig = filepath.Join(t.TempDir(), "policy-config.json")
				require.NoError(t, os.WriteFile(opts.PolicyConfig, []byte(tc.policy), 0o600))
			}
			for _, cmd := range []driver.Command{driver.Preview, driver.Up} {
				e.out.Reset()
				_, err := e.run(cmd, opts)
				require.Error(t, err, cmd)
				assert.Equal(t, tc.code, driver.ExitCode(err), "%s: %v", cmd, err)
				assert.Contains(t, e.out.String()+err.Error(), tc.message, cmd)
				assert.Empty(t, e.applied(), "%s: nothing reached a provider", cmd)
				if tc.code == driver.ExitUsage {
					assert.Empty(t, e.calls("Check"), "%s: the program registered nothing", cmd)
				}
			}
			seen, _ := entry.requests()
			assert.Empty(t, seen, "no hook ran")
		})
	}
}

// The dev stack needs no operator secret: the optional secret keys
// (sentryDsn, and tlsKey with TLS off) must not be demanded by the CLI.
func TestPreviewOfTheDevStackNeedsNoSecrets(t *testing.T) {
	e := newEnv(t)
	opts := e.options(filepath.Join(root, "Pulumi.dev.yaml"))
	opts.Stack, opts.ConfigFiles, opts.SecretFiles = "dev", nil, nil

	res, err := e.run(driver.Preview, opts)
	require.NoError(t, err, "driver output:\n%s", e.out)
	assert.NotEmpty(t, planned(res.Steps, "create"))
	for _, ev := range res.Policy {
		assert.NotEqual(t, "mandatory", ev.EnforcementLevel, "%s: %s", ev.PolicyName, ev.Message)
	}
	assert.Empty(t, e.applied(), "a preview changes nothing at the providers")
}

// A release whose migrate fails never goes live, through the real engine
// and the driver: up fails with exit 4 and the migrate's message before the
// new server exists; nothing is deleted, so the live release (and nginx)
// stay as they are. The next up with a good release goes live and removes
// the failed release's one-shots with the previous release's containers.
func TestFailedMigrateKeepsTheLiveRelease(t *testing.T) {
	e := newEnv(t)
	entry, _ := e.entries(true)
	settings := func(appMemoryMB int) string {
		return e.stackFile(map[string]string{
			"probe":  entry.probeSetting("20s"),
			"limits": fmt.Sprintf(`{"app": {"memoryMb": %d}}`, appMemoryMB),
		})
	}
	opts := e.options(settings(512))
	res, err := e.run(driver.Up, opts)
	require.NoError(t, err)
	release := func(res *driver.Result) string { return res.Outputs["app"].Value.(map[string]any)["release"].(string) }
	live := release(res)

	e.docker.SetExitCode("prod-"+stacks.RoleMigrate+"-", 3)
	e.reset()
	opts.StackFile = settings(768)
	_, err = e.run(driver.Up, opts)
	require.Error(t, err)
	assert.Equal(t, driver.ExitProbe, driver.ExitCode(err), err.Error())
	assert.Contains(t, err.Error(), "the new app release did not go live")
	assert.Contains(t, err.Error(), "migrate exited with status 3")
	var applied, failedRelease []string
	for _, c := range e.applied() {
		applied = append(applied, c.Method+" "+generic(c.Name))
		failedRelease = append(failedRelease, c.Name)
	}
	assert.ElementsMatch(t, []string{"Create secrets-app-<release>", "Create secrets-app-<release>", "Create dblogin-<release>", "Create cachelogin-<release>", "Create migrate-<release>", "Create collectstatic-<release>"}, applied,
		"the release's secrets volume and holder, its one-shots; no server, no switch, nothing deleted")
	state := e.stackExport()
	for _, role := range conventions.ReleaseRoles {
		assert.Contains(t, state, "docker:index/container:Container::"+deploy.Instance(role, live), "the live release's %s stays", role)
	}

	e.docker.SetExitCode("prod-"+stacks.RoleMigrate+"-", 0)
	e.reset()
	opts.StackFile = settings(640)
	res, err = e.run(driver.Up, opts)
	require.NoError(t, err)
	next := release(res)
	require.NotEqual(t, live, next)
	var deleted []string
	for _, c := range e.applied() {
		if c.Method == "Delete" {
			deleted = append(deleted, c.Name)
		}
	}
	want := failedRelease // the failed release's secrets volume and holder, and its four one-shots
	for _, role := range append(slices.Clone(conventions.ReleaseRoles), "secrets-app", "secrets-app") {
		want = append(want, deploy.Instance(role, live))
	}
	assert.ElementsMatch(t, want, deleted, "the previous release's containers and the failed release's, after the switch")
}
