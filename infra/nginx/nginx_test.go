package nginx

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/infra/internal/nginxtest"
)

// appHeaders is the app's security header set for the settings env (over
// the dev profile), as the program passes it: config.Settings.SecurityHeaders.
func appHeaders(env map[string]string) []Header {
	env[config.EnvProfile] = "dev"
	s, err := config.Parse(env)
	if err != nil {
		panic(err)
	}
	var out []Header
	for _, f := range s.SecurityHeaders() {
		out = append(out, Header{Name: f.Name, Value: f.Value})
	}
	return out
}

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// prodParams is a production-like configuration: Docker service names, the
// embedded Docker DNS, unprivileged container ports published as 80/443.
func prodParams() Params {
	return Params{
		ServerNames:           []string{"nbms.example.org", "www.nbms.example.org"},
		HTTPPort:              8080,
		HTTPSPort:             8443,
		TLS:                   true,
		CertPath:              "/etc/nginx/tls/fullchain.pem",
		KeyPath:               "/etc/nginx/tls/privkey.pem",
		Upstream:              "app:8000",
		Resolver:              "127.0.0.11",
		StaticRoot:            "/srv/nbms/static",
		MediaRoot:             "/srv/nbms/media",
		ClientMaxBodyBytes:    52428800,
		LoginRatePerMinute:    5,
		LoginBurst:            3,
		SecurityHeaders:       appHeaders(map[string]string{"SECURE_HSTS_SECONDS": "63072000"}),
		ProbePaths:            config.ProbePaths(),
		AcceptClientRequestID: true,
		PublicCacheSeconds:    1,
		PublicPrefix:          config.PublicAPIPrefix,
		ACMEChallengeRoot:     "/srv/acme",
	}
}

// deployedParams is the production configuration as the program deploys
// it (infra/deploy NginxParams): the upstream the blue/green switch writes
// into a file, one worker for the proxy's default CPU limit (0.5).
func deployedParams() Params {
	p := prodParams()
	p.Upstream, p.Resolver = "", ""
	p.UpstreamFile = "/var/lib/nbms-proxy/upstream.conf"
	p.WorkerProcesses = 1
	return p
}

// devParams is a local plain-HTTP stack.
func devParams() Params {
	return Params{
		LoginBurst:         0, // nginx refuses burst=0: it must be left out
		ServerNames:        []string{"localhost", "127.0.0.1"},
		HTTPPort:           8080,
		Upstream:           "127.0.0.1:8000",
		StaticRoot:         "/srv/nbms/static",
		MediaRoot:          "/srv/nbms/media",
		ClientMaxBodyBytes: 1 << 20,
		LoginRatePerMinute: 10,
		SecurityHeaders:    appHeaders(map[string]string{}),
	}
}

func TestRenderGolden(t *testing.T) {
	cases := []struct {
		golden string
		params Params
	}{
		{"prod.golden", deployedParams()},
		{"dev.golden", devParams()},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			got, err := Render(tc.params)
			require.NoError(t, err)
			again, err := Render(tc.params)
			require.NoError(t, err)
			require.Equal(t, got, again, "Render must be deterministic")

			path := filepath.Join("testdata", tc.golden)
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), got, "rendered config changed; review and run go test -update")
		})
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Params)
		want   []string // substrings of the error; none means valid
	}{
		{"production params", func(*Params) {}, nil},
		{"dev params", func(p *Params) { *p = devParams() }, nil},
		{"IPv6 listen address and resolver", func(p *Params) { p.ListenAddress = "::1"; p.Resolver = "fd00::53" }, nil},
		{"every problem at once", func(p *Params) { *p = Params{TLS: true} }, []string{
			"ServerNames: at least one", "HTTPPort: 0 is not a port", "HTTPSPort: 0 is not a port",
			"CertPath:", "KeyPath:", "StaticRoot:", "MediaRoot:", "Upstream:", "ClientMaxBodyBytes:", "LoginRatePerMinute:",
		}},
		{"upper-case server name", func(p *Params) { p.ServerNames = []string{"NBMS.example.org"} }, []string{`ServerNames: "NBMS.example.org"`}},
		{"wildcard server name", func(p *Params) { p.ServerNames = []string{"*.example.org"} }, []string{"ServerNames:"}},
		{"injected server name", func(p *Params) { p.ServerNames = []string{"a.org; return 200"} }, []string{"ServerNames:"}},
		{"duplicate server name", func(p *Params) { p.ServerNames = []string{"a.org", "a.org"} }, []string{"listed twice"}},
		{"same HTTP and HTTPS port", func(p *Params) { p.HTTPSPort = p.HTTPPort }, []string{"HTTPSPort: must differ"}},
		{"relative static root", func(p *Params) { p.StaticRoot = "static" }, []string{"StaticRoot:"}},
		{"static root with trailing slash", func(p *Params) { p.StaticRoot = "/srv/static/" }, []string{"StaticRoot:"}},
		{"static root with dot-dot", func(p *Params) { p.StaticRoot = "/srv/../etc" }, []string{"StaticRoot:"}},
		{"path with a brace", func(p *Params) { p.KeyPath = "/etc/key}" }, []string{"KeyPath:"}},
		{"path with a variable", func(p *Params) { p.PidPath = "/tmp/$pid" }, []string{"PidPath:"}},
		{"media inside static", func(p *Params) { p.MediaRoot = p.StaticRoot + "/media" }, []string{"must not contain one another"}},
		{"unresolvable name without resolver", func(p *Params) { p.Resolver = "" }, []string{"set Resolver"}},
		{"upstream without port", func(p *Params) { p.Upstream = "app" }, []string{"not host:port"}},
		{"upstream bad port", func(p *Params) { p.Upstream = "app:0" }, []string{"no valid port"}},
		{"resolver not an IP", func(p *Params) { p.Resolver = "dns.local" }, []string{"Resolver:"}},
		{"upstream and upstream file", func(p *Params) { p.UpstreamFile = "/var/lib/nbms-proxy/upstream.conf" }, []string{"UpstreamFile: set either Upstream or UpstreamFile"}},
		{"relative upstream file", func(p *Params) { p.Upstream, p.UpstreamFile = "", "upstream.conf" }, []string{"UpstreamFile:"}},
		{"zero body limit", func(p *Params) { p.ClientMaxBodyBytes = 0 }, []string{"ClientMaxBodyBytes:"}},
		{"login path with space", func(p *Params) { p.LoginPath = "/auth/login x" }, []string{"LoginPath:"}},
		{"login path traversal", func(p *Params) { p.LoginPath = "/auth/../login" }, []string{"LoginPath:"}},
		{"negative burst", func(p *Params) { p.LoginBurst = -1 }, []string{"LoginBurst:"}},
		{"read timeout not in whole seconds", func(p *Params) { p.UpstreamReadTimeout = 1500 * time.Millisecond }, []string{"UpstreamReadTimeout:"}},
		{"HSTS without TLS", func(p *Params) {
			*p = devParams()
			p.SecurityHeaders = append(p.SecurityHeaders, Header{"Strict-Transport-Security", "max-age=60"})
		}, []string{"Strict-Transport-Security needs TLS"}},
		{"a header twice", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"x-frame-options", "DENY"}) }, []string{"x-frame-options is given twice"}},
		{"nginx's request ID", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"X-Request-ID", "x"}) }, []string{"nginx's own"}},
		{"header name with a space", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"X A", "b"}) }, []string{`"X A" is not a header name`}},
		{"header value with a variable", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"X-A", "$host"}) }, []string{"X-A: the value must be"}},
		{"header value with both quotes", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"X-A", `a"b'c`}) }, []string{"both kinds of quote"}},
		{"header value with a newline", func(p *Params) { p.SecurityHeaders = append(p.SecurityHeaders, Header{"X-A", "a\nadd_header"}) }, []string{"X-A: the value must be"}},
		{"ACME without TLS", func(p *Params) { *p = devParams(); p.ACMEChallengeRoot = "/srv/acme" }, []string{"ACMEChallengeRoot: is only used with TLS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := prodParams()
			tc.change(&p)
			err := p.Validate()
			_, renderErr := Render(p)
			if tc.want == nil {
				require.NoError(t, err)
				require.NoError(t, renderErr)
				return
			}
			require.Error(t, err)
			assert.Equal(t, err.Error(), renderErr.Error(), "Render refuses what Validate refuses")
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// With the stack's acceptClientRequestId off, every request gets nginx's
// own ID and whatever the client sent is only logged.
func TestClientRequestIDCanBeRefused(t *testing.T) {
	p := prodParams()
	on, err := Render(p)
	require.NoError(t, err)
	assert.Contains(t, on, `"~`+config.RequestIDPattern+`" $http_x_request_id;`, "the app's own rule decides what is kept")
	p.AcceptClientRequestID = false
	off, err := Render(p)
	require.NoError(t, err)
	assert.NotContains(t, off, config.RequestIDPattern)
	assert.Contains(t, off, "map $http_x_request_id $nbms_request_id {\n        default $request_id;\n    }")
}

// TestNginxAcceptsRenderedConfig runs the real `nginx -t` on rendered
// configs, as the unprivileged user nginx runs as in its container.
func TestNginxAcceptsRenderedConfig(t *testing.T) {
	cases := []struct {
		name   string
		change func(p *Params, dir string)
	}{
		{"production: Docker upstream name through the resolver", func(*Params, string) {}},
		{"dev: plain HTTP, IP upstream, no resolver", func(p *Params, _ string) { *p = devParams() }},
		{"TLS on a listen address, no HSTS, no ACME, fixed workers", func(p *Params, _ string) {
			p.ListenAddress = "127.0.0.1"
			p.SecurityHeaders, p.ACMEChallengeRoot = appHeaders(map[string]string{}), ""
			p.Upstream, p.Resolver = "127.0.0.1:8000", ""
			p.WorkerProcesses = 2
		}},
		{"the upstream file the blue/green switch writes", func(p *Params, dir string) {
			p.Upstream, p.Resolver = "", ""
			p.UpstreamFile = filepath.Join(dir, "upstream.conf")
			require.NoError(t, os.WriteFile(p.UpstreamFile, []byte("# release 0123456789ab\nserver 10.0.0.5:8000 max_fails=0;\n"), 0o644))
		}},
		{"HSTS preload and a non-default public port", func(p *Params, _ string) {
			p.SecurityHeaders = appHeaders(map[string]string{"SECURE_HSTS_SECONDS": "63072000", "SECURE_HSTS_PRELOAD": "true"})
			p.PublicPort = 8443
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := nginxtest.NobodyDir(t)
			p := prodParams()
			tc.change(&p, dir)
			// Only files nginx opens at load time must really exist.
			p.PidPath = filepath.Join(dir, "nginx.pid")
			p.TempDir = dir
			if p.TLS {
				cert := nginxtest.WriteCert(t, dir)
				p.CertPath, p.KeyPath = cert.CertPath, cert.KeyPath
			}
			conf, err := Render(p)
			require.NoError(t, err)
			confPath := filepath.Join(dir, "nginx.conf")
			require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))

			assertLoads(t, dir, confPath)
		})
	}
}

// assertLoads runs `nginx -t` on confPath as nobody, with dir as its
// prefix: it must load, without a warning.
func assertLoads(t *testing.T, dir, confPath string) {
	t.Helper()
	cmd := exec.Command(nginxtest.Bin, "-e", "stderr", "-t", "-c", confPath, "-p", dir)
	nginxtest.RunAsNobody(t, cmd)
	// access_log /dev/stdout reopens fd 1: a file nobody owns.
	output := nginxtest.NobodyFile(t, filepath.Join(dir, "nginx-t.out"))
	cmd.Stdout, cmd.Stderr = output, output
	err := cmd.Run()
	out, readErr := os.ReadFile(output.Name())
	require.NoError(t, readErr)
	require.NoError(t, err, "nginx -t:\n%s", out)
	assert.Contains(t, string(out), "test is successful")
	assert.NotContains(t, string(out), "[warn]", "the config should load without warnings")
}

// FuzzRenderKeepsValuesInert checks that whatever reaches the config through
// a string field cannot end a directive, open a block, quote, comment or
// expand a variable: Validate must refuse it first.
func FuzzRenderKeepsValuesInert(f *testing.F) {
	f.Add("nbms.example.org", "/srv/static", "/auth/login", "app:8000")
	f.Add("a.org; return 200", "/srv/static;", "/login {", "app:8000; }")
	f.Add("a.org", "/srv/$document_root", "/auth/#", "127.0.0.1:80")
	f.Add("x", "/a/b c", "/l'", "[::1]:80")
	f.Fuzz(func(t *testing.T, serverName, staticRoot, loginPath, upstream string) {
		p := prodParams()
		p.ServerNames = []string{serverName}
		p.StaticRoot = staticRoot
		p.LoginPath = loginPath
		p.Upstream = upstream
		if _, err := Render(p); err != nil {
			return
		}
		for _, v := range []string{serverName, staticRoot, loginPath, upstream} {
			if strings.ContainsAny(v, " \t\r\n;{}\"'$#\\") {
				t.Fatalf("Render accepted %q, which nginx would parse as syntax", v)
			}
		}
	})
}
