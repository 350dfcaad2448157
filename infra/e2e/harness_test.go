package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/driver"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	stackName  = "e2e"
	passphrase = "e2e-state-passphrase"
)

var (
	root       string // repository root
	baseImage  string // the local base image's ID (sha256:...)
	deployBin  string // nbms-deploy, built by TestMain
	policyPack string // nbms-policy, built by TestMain
	loadBin    string // nbms-loadtest, built by TestMain
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		fail := func(format string, args ...any) int {
			fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
			return 1
		}
		var err error
		if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
			return fail("%v", err)
		}
		// Everything the real deploy needs, which `make setup` provides.
		if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
			return fail("no Docker engine answers (%v: %s): run `make setup` (scripts/docker-daemon.sh)", err, bytes.TrimSpace(out))
		}
		if _, err := os.Stat(filepath.Join(root, ".tools", "pulumi", "bin", "pulumi")); err != nil {
			return fail("the Pulumi CLI is missing: run `make setup` (scripts/build-pulumi.sh)")
		}
		home := driver.ProjectPulumiHome(root)
		for _, p := range []string{"resource-docker-v4.10.0/pulumi-resource-docker", "resource-random-v4.18.0/pulumi-resource-random"} {
			if _, err := os.Stat(filepath.Join(home, "plugins", p)); err != nil {
				return fail("provider plugin %s is missing from %s: run `make setup` (scripts/build-providers.sh)", p, home)
			}
		}
		name := cmp.Or(os.Getenv("NBMS_BASE_IMAGE"), "nbms-base:bookworm")
		out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", name).Output()
		if err != nil {
			return fail("base image %s is missing: run `make setup` (scripts/base-image.sh)", name)
		}
		baseImage = strings.TrimSpace(string(out))

		dir, err := os.MkdirTemp("", "nbms-e2e-bin-")
		if err != nil {
			return fail("%v", err)
		}
		defer os.RemoveAll(dir)
		deployBin, policyPack, loadBin = filepath.Join(dir, "nbms-deploy"), filepath.Join(dir, "nbms-policy"), filepath.Join(dir, "nbms-loadtest")
		for bin, pkg := range map[string]string{
			deployBin: "infra/driver/cmd/nbms-deploy", policyPack: "policy/cmd/nbms-policy", loadBin: "infra/loadtest/cmd/nbms-loadtest",
		} {
			if err := testsupport.BuildBinary(bin, "github.com/nbms-deploy/nbms/"+pkg); err != nil {
				return fail("building %s: %v", pkg, err)
			}
		}
		return m.Run()
	}())
}

// stack is the deployed e2e stack as the test sees it from the outside.
type stack struct {
	t         *testing.T
	dir       string // state backend, stack files, certificates, logs
	domain    string
	httpPort  int
	httpsPort int
	ca        *testsupport.CA
	chainFile string
	keyFile   string
	// dsnFile seeds the operator's one secret besides the TLS key, a Sentry
	// DSN (to a port where nothing listens), so that the search for
	// secrets in Docker's metadata and the state covers it too.
	dsnFile string
	// buildCAFile holds the certificate authorities this machine added to
	// its trust store, for the app builder's downloads ("" when none).
	buildCAFile string
	// s3 is the off-host repository's server (nbms:backup.offHost): a real
	// S3 server on the host, outside the stack, as an object store away
	// from the Docker host would be; s3Address is the host address the
	// backup relay reaches it at, and s3KeyFile and s3SecretFile hold its
	// keys (secret config).
	s3                      *testsupport.S3
	s3Address               string
	s3Bucket                string
	s3KeyFile, s3SecretFile string
	// drillCron is the run's nbms:backup.drillCron: a restore drill in
	// each of five minutes from drillFrom, 7 minutes after the start, when
	// the stack is up (its first up takes about 3 minutes) and before the
	// steps that restart the host or remove the stack. The same in every
	// stack file of the run, so that no up changes the scheduler for it.
	drillCron string
	drillFrom time.Time
	// cipherPassFile holds the off-host repository's passphrase, as the
	// operator kept it off the host: every run gives it once the stack
	// has been recovered with it ("" before).
	cipherPassFile string
	// settings is Pulumi.e2e.yaml as committed, keyed without the namespace;
	// overrides are the run's changes on top of it.
	settings map[string]string
	// client talks to nginx over TLS as a visitor of the domain would,
	// trusting only the test CA.
	client  *http.Client
	figures figures
}

// figures are the measurements the closing note of a deploy reports.
type figures struct {
	Durations  map[string]string  `json:"durations"`
	ImageMB    map[string]float64 `json:"imageSizeMB"`
	RestRSSMB  map[string]float64 `json:"rssAtRestMB"`
	RestUseMB  map[string]float64 `json:"memoryUsageAtRestMB"`
	Policies   map[string]int     `json:"policies"`
	BackupInfo map[string]any     `json:"backup"`
	// Recovery is what the disaster recovery drills measured: RTO, RPO,
	// rows.
	Recovery map[string]any `json:"recovery"`
	// Traffic is what the traffic through nginx saw during each scenario.
	Traffic map[string]trafficFigure `json:"traffic"`
	// Uploads is what the concurrent maximum-size uploads measured.
	Uploads string `json:"uploads"`
	// LoadBenchmark is nbms-loadtest's report on the deployed edge.
	LoadBenchmark string `json:"loadBenchmark"`
	// SwitchSeconds is how long each blue/green switch took: the new
	// release's readiness check from inside the edge network and nginx's
	// reload onto it.
	SwitchSeconds map[string]float64 `json:"switchSeconds"`
}

func newStack(t *testing.T) *stack {
	s := &stack{
		t: t, dir: t.TempDir(),
		httpPort: testsupport.LongLivedPort(t), httpsPort: testsupport.LongLivedPort(t),
		figures: figures{Durations: map[string]string{}, ImageMB: map[string]float64{}, RestRSSMB: map[string]float64{},
			RestUseMB: map[string]float64{}, Policies: map[string]int{}, BackupInfo: map[string]any{}, Recovery: map[string]any{},
			Traffic: map[string]trafficFigure{}, SwitchSeconds: map[string]float64{}},
	}
	data, err := os.ReadFile(filepath.Join(root, "Pulumi."+stackName+".yaml"))
	require.NoError(t, err)
	s.settings, err = stacks.ParseStackFile(data)
	require.NoError(t, err)
	s.domain = s.settings["domain"]
	require.NotEmpty(t, s.domain)

	s.ca = testsupport.NewCA(t, "NBMS e2e test CA")
	var hosts []string
	require.NoError(t, json.Unmarshal([]byte(s.settings["allowedHosts"]), &hosts))
	require.Contains(t, hosts, s.domain)
	chain, key := s.ca.Issue(t, hosts...)
	s.chainFile, s.keyFile = filepath.Join(s.dir, "fullchain.pem"), filepath.Join(s.dir, "privkey.pem")
	require.NoError(t, os.WriteFile(s.chainFile, []byte(chain), 0o600))
	require.NoError(t, os.WriteFile(s.keyFile, []byte(key), 0o600))
	s.dsnFile = filepath.Join(s.dir, "sentry-dsn")
	require.NoError(t, os.WriteFile(s.dsnFile, []byte(sentryDSN+"\n"), 0o600))

	// Where egress goes through a TLS-inspecting proxy (this project's CI),
	// the host trusts its CA through Debian's local CA directory; the app
	// image's builder must trust it too (nbms:buildCaCertificates).
	if cas, _ := filepath.Glob("/usr/local/share/ca-certificates/*.crt"); len(cas) > 0 {
		var pemText []byte
		for _, f := range cas {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			pemText = append(pemText, append(bytes.TrimSpace(data), '\n')...)
		}
		s.buildCAFile = filepath.Join(s.dir, "build-ca.pem")
		require.NoError(t, os.WriteFile(s.buildCAFile, pemText, 0o600))
	}

	s.startOffHostRepository(t)
	s.drillFrom = time.Now().UTC().Add(7 * time.Minute).Truncate(time.Minute)
	var minutes []string
	for i := range 5 {
		minutes = append(minutes, strconv.Itoa(s.drillFrom.Add(time.Duration(i)*time.Minute).Minute()))
	}
	s.drillCron = strings.Join(minutes, ",") + " * * * *"

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(s.ca.PEM)))
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	s.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			// Every request goes to the published port on loopback,
			// whatever the URL's host says (as DNS would send it there).
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpsPort)))
			},
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	t.Setenv("PULUMI_CONFIG_PASSPHRASE", passphrase)
	t.Setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "")
	t.Setenv("PULUMI_BACKEND_URL", "file://"+filepath.Join(s.dir, "state"))
	// The driver's default: the project's Pulumi home with the plugins
	// scripts/build-providers.sh installed.
	os.Unsetenv("PULUMI_HOME")
	require.NoError(t, os.MkdirAll(filepath.Join(s.dir, "state"), 0o700))
	return s
}

// startOffHostRepository starts the S3 server of the stack's off-host
// repository on another host: a network namespace of this machine that
// containers reach only by being routed there, as they would a host on
// the LAN (a service on one of this machine's own addresses is reachable
// even from an internal network: Docker drops only what it would forward).
// Its certificate is the test CA's, for the endpoint's name (the stack
// gives the CA).
func (s *stack) startOffHostRepository(t *testing.T) {
	var backup struct {
		OffHost struct{ Endpoint, Bucket string } `json:"offHost"`
	}
	require.NoError(t, json.Unmarshal([]byte(s.settings["backup"]), &backup))
	require.NotEmpty(t, backup.OffHost.Endpoint, "Pulumi.e2e.yaml names its off-host repository")
	// 10.254.253.0/30: outside Docker's address pools and the stack's subnets.
	offsite := testsupport.NewOtherHost(t, "nbmsoffsite", "10.254.253.0")
	s.s3Address = offsite.IP
	port := testsupport.FreePort(t)
	s.s3Bucket = backup.OffHost.Bucket
	s.s3 = testsupport.StartS3(t, offsite, filepath.Join(s.dir, "s3"), net.JoinHostPort(s.s3Address, strconv.Itoa(port)), s.ca,
		[]string{backup.OffHost.Endpoint}, s.s3Bucket)
	s.s3KeyFile, s.s3SecretFile = filepath.Join(s.dir, "s3-key"), filepath.Join(s.dir, "s3-secret")
	require.NoError(t, os.WriteFile(s.s3KeyFile, []byte(s.s3.AccessKey+"\n"), 0o600))
	require.NoError(t, os.WriteFile(s.s3SecretFile, []byte(s.s3.SecretKey+"\n"), 0o600))
}

// offHostSetting is nbms:backup with the run's S3 server in its offHost
// (the port, the address the relay connects to, and the test CA) and the
// run's drill schedule.
func (s *stack) offHostSetting(t *testing.T) string {
	var backup map[string]any
	require.NoError(t, json.Unmarshal([]byte(s.settings["backup"]), &backup))
	_, port, err := net.SplitHostPort(s.s3.Addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	offHost := backup["offHost"].(map[string]any)
	offHost["port"], offHost["address"], offHost["caCertificates"] = p, s.s3Address, s.ca.PEM
	backup["drillCron"] = s.drillCron
	out, err := json.Marshal(backup)
	require.NoError(t, err)
	return string(out)
}

// stackFile writes Pulumi.e2e.yaml with the run's values (ports, the local
// base image, the S3 server) and overrides, and returns its path.
func (s *stack) stackFile(overrides map[string]string) string {
	values := maps.Clone(s.settings)
	values["httpPort"] = strconv.Itoa(s.httpPort)
	values["httpsPort"] = strconv.Itoa(s.httpsPort)
	values["images"] = s.imagesSetting("")
	values["backup"] = s.offHostSetting(s.t)
	maps.Copy(values, overrides)
	var b strings.Builder
	b.WriteString("config:\n")
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		if !strings.HasPrefix(v, "{") && !strings.HasPrefix(v, "[") {
			v = strconv.Quote(v) // YAML reads a JSON string as the string
		}
		fmt.Fprintf(&b, "  %s:%s: %s\n", stacks.Namespace, k, v)
	}
	path := filepath.Join(s.dir, fmt.Sprintf("Pulumi.%s.%d.yaml", stackName, time.Now().UnixNano()))
	require.NoError(s.t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// configFiles are the operator's files of the run: the certificate and,
// where there are any, the build CAs.
func (s *stack) configFiles() map[string]string {
	files := map[string]string{"tlsCertificate": s.chainFile}
	if s.buildCAFile != "" {
		files["buildCaCertificates"] = s.buildCAFile
	}
	return files
}

// sentryDSN is the seeded Sentry DSN: its key is what a leak would show.
const (
	sentryKey = "e2e0sentry0public0key0f00d"
	sentryDSN = "http://" + sentryKey + "@127.0.0.1:9/42"
)

// secretFiles are the operator's secrets of the run, as files.
func (s *stack) secretFiles() map[string]string {
	files := map[string]string{"tlsKey": s.keyFile, "sentryDsn": s.dsnFile, "backupS3Key": s.s3KeyFile, "backupS3KeySecret": s.s3SecretFile}
	if s.cipherPassFile != "" {
		files["backupCipherPass"] = s.cipherPassFile
	}
	return files
}

func (s *stack) options(stackFile string, out io.Writer) driver.Options {
	return driver.Options{
		Stack: stackName, Root: root, StackFile: stackFile,
		ConfigFiles: s.configFiles(),
		SecretFiles: s.secretFiles(),
		PolicyPack:  policyPack,
		ReportDir:   filepath.Join(s.dir, "reports"),
		Stdout:      out, Stderr: out,
	}
}

// commandTimeout bounds one driver command: a first up on a cold machine
// builds every image (about 10 minutes here); a command still running
// after this is stuck, and failing it names the step instead of eating the
// whole test timeout.
const commandTimeout = 25 * time.Minute

// run runs one driver command in process and records its wall time under
// label. The engine's output goes to the test log when the command fails.
func (s *stack) run(label string, cmd driver.Command, stackFile string) (*driver.Result, error) {
	var out bytes.Buffer
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	res, err := driver.Run(ctx, cmd, s.options(stackFile, &out))
	took := time.Since(start).Round(100 * time.Millisecond)
	s.figures.Durations[label] = took.String()
	s.t.Logf("%s (%s): %s", label, cmd, took)
	if err != nil {
		s.t.Logf("%s failed (exit %d): %v\nengine output:\n%s", label, driver.ExitCode(err), err, tail(out.String(), 200))
	}
	return res, err
}

// runBinary runs the built nbms-deploy as an operator or CI job would and
// returns its exit status and output.
// extra are more flags.
func (s *stack) runBinary(label string, cmd driver.Command, stackFile string, extra ...string) (int, string) {
	return s.runBinaryFrom(label, cmd, root, stackFile, extra...)
}

// runBinaryFrom is runBinary with another repository root: the sources a
// release is built from.
func (s *stack) runBinaryFrom(label string, cmd driver.Command, repoRoot, stackFile string, extra ...string) (int, string) {
	args := []string{string(cmd), "--stack", stackName, "--root", repoRoot, "--stack-file", stackFile,
		"--policy-pack", policyPack, "--report-dir", filepath.Join(s.dir, "reports")}
	args = append(args, extra...)
	for key, path := range s.configFiles() {
		args = append(args, "--config-file", key+"="+path)
	}
	for key, path := range s.secretFiles() {
		args = append(args, "--secret-file", key+"="+path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, deployBin, args...)
	c.Cancel = func() error { return c.Process.Signal(os.Interrupt) } // the driver cancels the engine cleanly
	c.WaitDelay = time.Minute
	c.Dir = root
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	start := time.Now()
	err := c.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	s.figures.Durations[label] = took.String()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(s.t, err)
	}
	s.t.Logf("%s (nbms-deploy %s): exit %d after %s", label, cmd, code, took)
	return code, out.String()
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// url is an https URL of the deployed site, as its visitors write it.
func (s *stack) url(path string) string {
	return "https://" + net.JoinHostPort(s.domain, strconv.Itoa(s.httpsPort)) + path
}

// origin is the site's own origin (the CSRF trusted origin by default).
func (s *stack) origin() string {
	return "https://" + net.JoinHostPort(s.domain, strconv.Itoa(s.httpsPort))
}

// do sends one request through nginx and returns the response with its
// body read.
func (s *stack) do(method, path string, body io.Reader, header http.Header) (*http.Response, []byte) {
	s.t.Helper()
	resp, data, err := s.send(context.Background(), method, path, body, header)
	require.NoError(s.t, err)
	return resp, data
}

// send is do for any goroutine: it returns the error instead of failing
// the test.
func (s *stack) send(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.url(path), body)
	if err != nil {
		return nil, nil, err
	}
	maps.Copy(req.Header, header)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	return resp, data, nil
}

// writeHeader is what a logged-in JSON write through the edge sends: the
// session cookie, the site's own Origin (the CSRF check) and the type.
func (s *stack) writeHeader(session *http.Cookie) http.Header {
	return http.Header{"Cookie": {session.Name + "=" + session.Value}, "Origin": {s.origin()}, "Content-Type": {"application/json"}}
}

// --- Docker, from the outside ----------------------------------------------

// docker runs the docker CLI and returns its standard output.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerErr(args...)
	require.NoError(t, err)
	return out
}

// dockerErr runs the docker CLI; no command of the test takes minutes, so
// one that does is stuck and fails.
func dockerErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// container is the Docker name of a stack container.
// container is the Docker name of a role's container; for the roles of a
// release (conventions.PerRelease), the one of the release nginx sends to
// (see liveRelease). When that cannot be read, the name it returns says
// why, and the docker command given it fails with that.
func container(role string) string {
	if !conventions.PerRelease(role) {
		return stackName + "-" + role
	}
	release, err := liveRelease()
	if err != nil {
		return fmt.Sprintf("%s-%s(%v)", stackName, role, err)
	}
	return stackName + "-" + deploy.Instance(role, release)
}

// liveRelease is the app release nginx sends to, as the switch wrote it on
// the proxy's control volume (the upstream file's first line).
func liveRelease() (string, error) {
	out, err := dockerErr("exec", stackName+"-"+conventions.RoleProxy, "head", "-n", "1", "/var/lib/nbms-proxy/upstream.conf")
	if err != nil {
		return "", err
	}
	release, ok := strings.CutPrefix(strings.TrimSpace(out), "# release ")
	if !ok {
		return "", fmt.Errorf("the upstream file begins %q", out)
	}
	return release, nil
}

// labelFilter selects the stack's Docker objects.
var labelFilter = "label=" + conventions.LabelStack + "=" + stackName

// stackObjects lists the names of the stack's containers, networks or
// volumes ("container", "network", "volume").
func stackObjects(t *testing.T, kind string) []string {
	t.Helper()
	var args []string
	switch kind {
	case "container":
		args = []string{"ps", "-a", "--filter", labelFilter, "--format", "{{.Names}}"}
	default:
		args = []string{kind, "ls", "--filter", labelFilter, "--format", "{{.Name}}"}
	}
	return slices.Sorted(slices.Values(strings.Fields(docker(t, args...))))
}

// inspection is the part of `docker inspect` the test reads.
type inspection struct {
	ID           string `json:"Id"`
	Name         string `json:"Name"`
	RestartCount int    `json:"RestartCount"`
	Config       struct {
		User   string            `json:"User"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	State struct {
		Status    string `json:"Status"`
		ExitCode  int    `json:"ExitCode"`
		StartedAt string `json:"StartedAt"`
		OOMKilled bool   `json:"OOMKilled"`
		Health    *struct {
			Status string `json:"Status"`
		} `json:"Health"`
	} `json:"State"`
	HostConfig struct {
		ReadonlyRootfs bool     `json:"ReadonlyRootfs"`
		CapDrop        []string `json:"CapDrop"`
		CapAdd         []string `json:"CapAdd"`
		SecurityOpt    []string `json:"SecurityOpt"`
		Privileged     bool     `json:"Privileged"`
		Memory         int64    `json:"Memory"`
		MemorySwap     int64    `json:"MemorySwap"`
		NanoCPUs       int64    `json:"NanoCpus"`
		PidsLimit      *int64   `json:"PidsLimit"`
		Ulimits        []struct {
			Name       string
			Soft, Hard int64
		} `json:"Ulimits"`
		PortBindings map[string][]portBinding `json:"PortBindings"`
		Tmpfs        map[string]string        `json:"Tmpfs"`
		NetworkMode  string                   `json:"NetworkMode"`
	} `json:"HostConfig"`
	NetworkSettings struct {
		Networks map[string]any `json:"Networks"`
	} `json:"NetworkSettings"`
}

type portBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

func inspect(t *testing.T, name string) inspection {
	t.Helper()
	var out []inspection
	require.NoError(t, json.Unmarshal([]byte(docker(t, "inspect", name)), &out))
	require.Len(t, out, 1)
	return out[0]
}

// appVersion is what the live release's binary says it is.
func appVersion(t *testing.T) string {
	t.Helper()
	out, err := execIn(t, conventions.RoleApp, "", "/usr/local/bin/nbms", "version")
	require.NoError(t, err)
	return strings.TrimSpace(out)
}

// exec runs a command in a stack container.
func execIn(t *testing.T, role string, stdin string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"exec", "-i", container(role)}, args...)
	c := exec.Command("docker", full...)
	c.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		err = fmt.Errorf("docker exec %s %s: %w: %s", container(role), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

// dumpContainers writes the state, health and last log lines of every
// stack container to the test log: what a failed deployment needs first.
func dumpContainers(t *testing.T) {
	out, err := dockerErr("ps", "-a", "--filter", labelFilter, "--format", "{{.Names}}")
	if err != nil {
		t.Logf("listing the stack's containers: %v", err)
		return
	}
	for _, name := range strings.Fields(out) {
		state, _ := dockerErr("inspect", "--format", "{{.State.Status}} exit={{.State.ExitCode}} health={{if .State.Health}}{{.State.Health.Status}} {{range .State.Health.Log}}[{{.ExitCode}}: {{.Output}}]{{end}}{{end}}", name)
		logs, _ := exec.Command("docker", "logs", "--tail", "60", name).CombinedOutput()
		t.Logf("=== container %s: %s\n%s", name, strings.TrimSpace(state), logs)
	}
}

// removeStackObjects deletes every Docker object of the stack, protected
// volumes included: a run starts from nothing and leaves nothing behind.
func removeStackObjects(t *testing.T) {
	for _, kind := range []string{"container", "network", "volume"} {
		var args []string
		switch kind {
		case "container":
			args = []string{"ps", "-aq", "--filter", labelFilter}
		default:
			args = []string{kind, "ls", "-q", "--filter", labelFilter}
		}
		out, err := dockerErr(args...)
		if err != nil {
			t.Logf("cleanup: %v", err)
			continue
		}
		ids := strings.Fields(out)
		if len(ids) == 0 {
			continue
		}
		rm := map[string][]string{"container": {"rm", "-f", "-v"}, "network": {"network", "rm"}, "volume": {"volume", "rm", "-f"}}[kind]
		if _, err := dockerErr(append(rm, ids...)...); err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
	// The stack's images and its tag of the base; the base itself and the
	// BuildKit cache stay, so the next run builds warm.
	for _, img := range []string{"nbms-app", "nbms-db", "nbms-backup", "nbms-nginx", "nbms-redis", "nbms-base"} {
		_, _ = dockerErr("image", "rm", img+":"+stackName)
	}
}

// jsonLog returns a container's JSON log lines since a time (stdout and
// stderr together).
func jsonLog(t *testing.T, role string, since time.Time) []map[string]any {
	t.Helper()
	out, err := exec.Command("docker", "logs", "--since", since.UTC().Format(time.RFC3339Nano), container(role)).CombinedOutput()
	require.NoError(t, err, string(out))
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

const proberAgent = "nbms-post-deploy-probe"

// probeAnswers counts the post-deploy prober's successful /readyz requests
// since a time, as the app logged them (every probe: through nginx or
// straight to the app container) and as nginx did (only those through the
// public entry). A probe run asks for two 200s in a row.
func probeAnswers(t *testing.T, since time.Time) (atApp, viaNginx int) {
	for _, l := range jsonLog(t, conventions.RoleApp, since) {
		if l["msg"] == "request" && l["user_agent"] == proberAgent && l["path"] == "/readyz" && l["status_code"] == float64(200) {
			atApp++
		}
	}
	for _, l := range jsonLog(t, conventions.RoleProxy, since) {
		if l["user_agent"] == proberAgent && l["path"] == "/readyz" && l["status"] == float64(200) {
			viaNginx++
		}
	}
	return atApp, viaNginx
}
