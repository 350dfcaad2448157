package livetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/internal/nginxtest"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	// clientAddr is where the test's requests come from. It is not
	// nginx's address (127.0.0.1), so the app's client_ip can only be it
	// if the app believed nginx's X-Forwarded-For.
	clientAddr = "127.0.0.2"
	// Small limits keep the test fast; the stack validation accepts them.
	maxUploadBytes = 256 << 10
	loginBurst     = 2
)

// site is the running stack: the app behind nginx.
type site struct {
	nginxtest.Site
	staticRoot string
	mediaRoot  string
	appLog     string
	// appURL reaches the app directly, as nginx does.
	appURL string
	// securityHeaders are the names of the app's security headers.
	securityHeaders []string
	// portal is a page on the origin the stack allows to read the API
	// (corsOrigins); stranger is one on an origin it does not.
	portal, stranger *httptest.Server
	// spki are the base64 SHA-256 hashes of the test certificates' public
	// keys, the only ones headless Chromium is told to trust.
	spki []string
	// databaseURL is the app's database; appPID its process.
	databaseURL string
	appPID      int
	// bin and environ run the app's subcommands; nginxLog is nginx's
	// output (the access log on stdout, errors on stderr); roots trusts
	// the site's certificate.
	bin      string
	environ  []string
	nginxLog string
	roots    *x509.CertPool
}

// appRequests returns the app's access log lines (one JSON object each).
func (s *site) appRequests(t *testing.T) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(s.appLog)
	require.NoError(t, err)
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "request" {
			out = append(out, line)
		}
	}
	return out
}

// waitForRequest waits for the app's access log line of request id.
func (s *site) waitForRequest(t *testing.T, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range s.appRequests(t) {
			if line["request_id"] == id {
				return line
			}
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(s.appLog)
			t.Fatalf("no app access log line for request %s:\n%s", id, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settle sends one more request and waits for the app to log it, so that
// every earlier request the app received is in its log too.
func (s *site) settle(t *testing.T) {
	t.Helper()
	resp, _ := s.Do(t, "GET", s.HTTPSURL("/healthz?settle"), nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	s.waitForRequest(t, resp.Header.Get("X-Request-Id"))
}

func TestDeployedStackLive(t *testing.T) {
	s := startSite(t, nil)

	t.Run("healthz and readyz answer 200 through nginx", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, body := s.Do(t, "GET", s.HTTPSURL(path), nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		}
	})

	t.Run("security headers appear once each", func(t *testing.T) {
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/"), nil, nil)
		for _, name := range []string{
			"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-Request-Id",
			"Content-Security-Policy", "Referrer-Policy", "Cross-Origin-Opener-Policy",
		} {
			assert.Len(t, resp.Header.Values(name), 1, "%s: %q", name, resp.Header.Values(name))
		}
		assert.Equal(t, "max-age=63072000; includeSubDomains", resp.Header.Get("Strict-Transport-Security"))
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
		assert.Equal(t, "nginx", resp.Header.Get("Server"), "no version")
	})

	t.Run("the app logs the real client and the request id the client saw", func(t *testing.T) {
		const forgedIP, malformedID = "203.0.113.66", "not an id; x=1"
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/?who=me"), nil, map[string]string{
			"X-Forwarded-For": forgedIP, "X-Real-IP": forgedIP, "Forwarded": "for=" + forgedIP, "X-Request-ID": malformedID,
		})
		id := resp.Header.Get("X-Request-Id")
		assert.Regexp(t, `^[0-9a-f]{32}$`, id, "a malformed client ID is replaced by nginx's own")
		line := s.waitForRequest(t, id)
		assert.Equal(t, clientAddr, line["client_ip"], "the client, via nginx's X-Forwarded-For from a trusted proxy")
		assert.NotEqual(t, forgedIP, line["client_ip"])
		assert.Equal(t, "/", line["path"])
		for _, l := range s.appRequests(t) {
			assert.NotEqual(t, malformedID, l["request_id"])
		}
	})

	t.Run("a client's well-formed request ID traces its request through both logs", func(t *testing.T) {
		const id = "portal.req-7_a"
		// A URI of its own: a repeat could be the edge cache's answer.
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/api/public/indicators?limit=7"), nil, map[string]string{"X-Request-ID": id})
		assert.Equal(t, id, resp.Header.Get("X-Request-Id"))
		line := s.waitForRequest(t, id)
		assert.Equal(t, "/api/public/indicators", line["path"], "the app logged the request under the client's ID")
	})

	t.Run("collected static files are served immutable", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(s.staticRoot, "manifest.json"))
		require.NoError(t, err)
		var manifest map[string]string
		require.NoError(t, json.Unmarshal(data, &manifest))
		require.NotEmpty(t, manifest)
		for logical, hashed := range manifest {
			require.NotEqual(t, logical, hashed)
			want, err := os.ReadFile(filepath.Join(s.staticRoot, filepath.FromSlash(hashed)))
			require.NoError(t, err)
			resp, body := s.Do(t, "GET", s.HTTPSURL("/static/"+hashed), nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, hashed)
			assert.Equal(t, string(want), body, hashed)
			assert.Equal(t, "public, max-age=31536000, immutable", resp.Header.Get("Cache-Control"), hashed)
		}
	})

	t.Run("evidence is read only by its dataset's organisation: the app authorises, nginx sends the bytes", func(t *testing.T) {
		alice := s.signIn(t, "127.0.0.3")
		bob := s.signIn(t, "127.0.0.4")
		anonymous := &nginxtest.Site{HTTPPort: s.HTTPPort, HTTPSPort: s.HTTPSPort, Client: nginxtest.NewClient(s.roots, net.ParseIP(clientAddr))}

		resp, body := alice.Do(t, "POST", s.HTTPSURL("/api/datasets"),
			strings.NewReader(`{"title":"Crane nests","licence":"CC-BY-4.0","sensitivity":"restricted"}`),
			map[string]string{"Content-Type": "application/json"})
		require.Equal(t, http.StatusCreated, resp.StatusCode, body)
		var dataset struct{ ID int64 }
		require.NoError(t, json.Unmarshal([]byte(body), &dataset))
		// A PDF with random bytes: the download must be these, exactly.
		content := append([]byte("%PDF-1.7\n"), make([]byte, 40<<10)...)
		_, err := rand.Read(content[9:])
		require.NoError(t, err)
		var form bytes.Buffer
		mw := multipart.NewWriter(&form)
		fw, err := mw.CreateFormFile("file", "nests 2024.pdf")
		require.NoError(t, err)
		_, _ = fw.Write(content)
		require.NoError(t, mw.Close())
		resp, body = alice.Do(t, "POST", s.HTTPSURL(fmt.Sprintf("/api/uploads/datasets/%d/evidence", dataset.ID)), &form,
			map[string]string{"Content-Type": mw.FormDataContentType()})
		require.Equal(t, http.StatusCreated, resp.StatusCode, body)
		var evidence struct{ ID int64 }
		require.NoError(t, json.Unmarshal([]byte(body), &evidence))
		entries, err := os.ReadDir(s.mediaRoot)
		require.NoError(t, err)
		require.Len(t, entries, 1)
		stored := entries[0].Name()
		download := fmt.Sprintf("/api/evidence/%d/content", evidence.ID)

		resp, body = alice.Do(t, "GET", s.HTTPSURL(download), nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.True(t, body == string(content), "the uploaded bytes, exactly (%d bytes, want %d)", len(body), len(content))
		assert.Equal(t, []string{"application/pdf"}, resp.Header.Values("Content-Type"))
		assert.Equal(t, []string{`attachment; filename="nests 2024.pdf"`}, resp.Header.Values("Content-Disposition"))
		assert.Equal(t, []string{"nosniff"}, resp.Header.Values("X-Content-Type-Options"))
		// The session layer adds its own directive when it refreshes the
		// cookie; nginx passes both through the redirect.
		assert.Contains(t, resp.Header.Values("Cache-Control"), "private, no-store")
		assert.Equal(t, []string{"default-src 'none'; sandbox"}, resp.Header.Values("Content-Security-Policy"))
		assert.Empty(t, resp.Header.Values("X-Accel-Redirect"))
		downloadID := resp.Header.Get("X-Request-Id")
		line := s.waitForRequest(t, downloadID)
		assert.Equal(t, float64(0), line["bytes"], "the app sent no byte of the file: nginx did")

		// Whoever may not read it gets the answer of an id that does not
		// exist, through nginx as from the app.
		_, unknown := alice.Do(t, "GET", s.HTTPSURL("/api/evidence/999999/content"), nil, nil)
		for name, client := range map[string]*nginxtest.Site{"another organisation": bob, "anonymous": anonymous} {
			resp, body := client.Do(t, "GET", s.HTTPSURL(download), nil, nil)
			assert.Equal(t, http.StatusNotFound, resp.StatusCode, name)
			assert.JSONEq(t, unknown, body, name)
		}

		// Neither log names the stored file: the client's path has only
		// the id, and nginx logs that path, not the internal redirect.
		nginxLine := s.nginxLogLine(t, downloadID)
		assert.Equal(t, download, nginxLine["path"])
		s.settle(t)
		for what, path := range map[string]string{"nginx": s.nginxLog, "app": s.appLog} {
			logs, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.NotContains(t, string(logs), stored, "the %s log", what)
		}

		// Nothing serves the media root to a client that knows a stored name.
		for _, path := range []string{"/media/" + stored, "/_protected_media/" + stored} {
			resp, body := anonymous.Do(t, "GET", s.HTTPSURL(path), nil, nil)
			assert.Equal(t, http.StatusNotFound, resp.StatusCode, path)
			assert.NotContains(t, body, "%PDF", path)
		}
	})

	t.Run("a body over the upload limit stops at nginx with 413", func(t *testing.T) {
		const path = "/api/v1/too-large"
		resp, body := s.Do(t, "POST", s.HTTPSURL(path), bytes.NewReader(make([]byte, maxUploadBytes+1)),
			map[string]string{"Content-Type": "application/octet-stream"})
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, body)
		assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		s.settle(t)
		for _, l := range s.appRequests(t) {
			assert.NotEqual(t, path, l["path"], "the app never saw the request")
		}
	})

	t.Run("login POSTs beyond the burst get 429 from nginx", func(t *testing.T) {
		var statuses []int
		var last *http.Response
		// A username of this run's own: the app's Redis buckets outlive it.
		username := "live-" + rand.Text()
		for range loginBurst + 3 {
			last, _ = s.Do(t, "POST", s.HTTPSURL("/auth/login"), strings.NewReader(`{"username":"`+username+`","password":"y"}`),
				map[string]string{"Content-Type": "application/json"})
			statuses = append(statuses, last.StatusCode)
		}
		// Rate 1/min: the first request and the burst pass, the rest not.
		for i, status := range statuses {
			if i > loginBurst {
				assert.Equal(t, http.StatusTooManyRequests, status, "attempt %d: %v", i+1, statuses)
			} else {
				assert.NotEqual(t, http.StatusTooManyRequests, status, "attempt %d: %v", i+1, statuses)
			}
		}
		assert.Equal(t, "60", last.Header.Get("Retry-After"))
		s.settle(t)
		logins := 0
		for _, l := range s.appRequests(t) {
			// From this test's address: other tests sign in from their own.
			if l["path"] == "/auth/login" && l["method"] == "POST" && l["client_ip"] == clientAddr {
				logins++
			}
		}
		assert.Equal(t, loginBurst+1, logins, "refused attempts never reach the app")
	})

	t.Run("plain HTTP is redirected to HTTPS", func(t *testing.T) {
		resp, _ := s.Do(t, "GET", s.HTTPURL("/some/page?x=1"), nil, nil)
		assert.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
		assert.Equal(t, s.HTTPSURL("/some/page?x=1"), resp.Header.Get("Location"))
	})

	t.Run("probes on plain HTTP reach the app without a redirect", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, body := s.Do(t, "GET", s.HTTPURL(path), nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
			assert.Empty(t, resp.Header.Get("Location"), path)
			assert.Contains(t, body, `"status":"pass"`, "the app's own answer")
		}
	})

	t.Run("a browser on the allowed origin reads the API with fetch and JSON headers; another origin cannot", func(t *testing.T) {
		allowed := s.browse(t, s.portal.URL)
		assert.Equal(t, "ok 200 portal-trace-1", allowed, "the preflight for Content-Type and X-Request-ID passed, the answer and its request ID are readable")
		refused := s.browse(t, s.stranger.URL)
		assert.True(t, strings.HasPrefix(refused, "blocked TypeError"), "the browser kept the answer from the other origin: %q", refused)
		s.settle(t)
		preflights := map[int]int{}
		for _, l := range s.appRequests(t) {
			if l["method"] == "OPTIONS" && l["path"] == "/api/public/indicators" {
				preflights[int(l["status_code"].(float64))]++
			}
		}
		assert.Equal(t, map[int]int{http.StatusNoContent: 1, http.StatusForbidden: 1}, preflights, "one preflight each: allowed, refused")

		// The preflight answers themselves.
		ask := map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "content-type,x-request-id"}
		ask["Origin"] = s.portal.URL
		resp, _ := s.Do(t, "OPTIONS", s.HTTPSURL("/api/public/indicators"), nil, ask)
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
		assert.Equal(t, s.portal.URL, resp.Header.Get("Access-Control-Allow-Origin"))
		assert.Equal(t, "Accept, Content-Type, Authorization, X-Requested-With, X-Request-ID", resp.Header.Get("Access-Control-Allow-Headers"))
		assert.Equal(t, "600", resp.Header.Get("Access-Control-Max-Age"))
		ask["Origin"] = s.stranger.URL
		resp, _ = s.Do(t, "OPTIONS", s.HTTPSURL("/api/public/indicators"), nil, ask)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Headers"))
	})

	t.Run("nginx's own answers carry the app's security headers, header by header", func(t *testing.T) {
		// The app's answer, straight from the app (as nginx would get it).
		req, err := http.NewRequest("GET", s.appURL+"/api/public/indicators", nil)
		require.NoError(t, err)
		req.Host = "localhost"
		req.Header.Set("X-Forwarded-Proto", "https") // from 127.0.0.1, the trusted edge
		appResp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		appResp.Body.Close()
		require.Equal(t, http.StatusOK, appResp.StatusCode)

		edge := map[string]*http.Response{}
		edge["301 redirect"], _ = s.Do(t, "GET", s.HTTPURL("/a/page"), nil, nil)
		edge["405 TRACE"], _ = s.Do(t, "TRACE", s.HTTPSURL("/"), nil, nil)
		edge["413 body over the edge's limit"], _ = s.Do(t, "POST", s.HTTPSURL("/api/x"), bytes.NewReader(make([]byte, maxUploadBytes+1)), nil)
		edge["404 static file"], _ = s.Do(t, "GET", s.HTTPSURL("/static/missing.css"), nil, nil)
		edge["200 static file"], _ = s.Do(t, "GET", s.HTTPSURL("/static/manifest.json"), nil, nil)
		edge["200 through nginx"], _ = s.Do(t, "GET", s.HTTPSURL("/api/public/indicators"), nil, nil)
		bad, err := http.NewRequest("GET", s.HTTPSURL("/"), nil)
		require.NoError(t, err)
		bad.URL.Opaque = "/static/../../x" // sent as is: a URI above the root
		if edge["400 invalid URI"], err = s.Client.Do(bad); err == nil {
			edge["400 invalid URI"].Body.Close()
		}
		username := "hdr-" + rand.Text()
		for range loginBurst + 2 {
			edge["429 login limit"], _ = s.Do(t, "POST", s.HTTPSURL("/auth/login"), strings.NewReader(`{"username":"`+username+`","password":"y"}`),
				map[string]string{"Content-Type": "application/json"})
		}
		wantStatus := map[string]int{"301 redirect": 301, "405 TRACE": 405, "413 body over the edge's limit": 413, "404 static file": 404,
			"200 static file": 200, "200 through nginx": 200, "400 invalid URI": 400, "429 login limit": 429}
		require.NotEmpty(t, s.securityHeaders)
		for _, name := range s.securityHeaders {
			require.Len(t, appResp.Header.Values(name), 1, "the app sends %s", name)
		}
		for what, resp := range edge {
			require.NotNil(t, resp, what)
			assert.Equal(t, wantStatus[what], resp.StatusCode, what)
			for _, name := range s.securityHeaders {
				assert.Equal(t, appResp.Header.Values(name), resp.Header.Values(name), "%s: %s as the app sends it", what, name)
			}
		}
	})
}

// portalPage serves, on an HTTPS origin of its own, a page whose script
// reads the public API of s cross-origin the way a portal would: fetch
// with JSON and tracing headers, which a browser sends only after a CORS
// preflight. It writes what happened into #result.
func portalPage(t *testing.T, s *site) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>portal</title><p id="result">pending</p>
<script>
fetch(%q, {headers: {"Accept": "application/json", "Content-Type": "application/json", "X-Request-ID": "portal-trace-1"}})
  .then(r => r.json().then(() => { document.getElementById("result").textContent = "ok " + r.status + " " + r.headers.get("X-Request-ID"); }))
  .catch(e => { document.getElementById("result").textContent = "blocked " + e; });
</script>`, s.HTTPSURL("/api/public/indicators"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// browse loads url in headless Chromium and returns #result once the
// page's script has settled.
func (s *site) browse(t *testing.T, url string) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "Debian package chromium must be installed (make setup)")
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--user-data-dir="+t.TempDir(),
		// Trust exactly the test certificates (by public key), no others.
		"--ignore-certificate-errors-spki-list="+strings.Join(s.spki, ","),
		"--virtual-time-budget=15000", "--dump-dom", url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	m := regexp.MustCompile(`<p id="result">([^<]*)</p>`).FindStringSubmatch(stdout.String())
	require.NotNil(t, m, "no #result in the page:\n%s\n%s", stdout.String(), stderr.String())
	return m[1]
}

func pemOf(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// spkiHash is what Chromium's --ignore-certificate-errors-spki-list takes.
func spkiHash(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// startSite builds and starts everything, with the app environment the
// program gives a stack like this host's plus extra (nil for none);
// t.Cleanup stops the processes and drops the database.
func startSite(t *testing.T, extra map[string]string) *site {
	t.Helper()
	dir := nginxtest.NobodyDir(t)
	s := &site{
		Site:       nginxtest.Site{HTTPPort: testsupport.FreePort(t), HTTPSPort: testsupport.FreePort(t)},
		staticRoot: filepath.Join(dir, "static"), mediaRoot: filepath.Join(dir, "media"),
		appLog: filepath.Join(dir, "app.log"),
	}
	for _, d := range []string{s.staticRoot, s.mediaRoot} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	// In Docker the app writes uploads mode 0640 with its group, which the
	// proxy is given. Here the app runs as root and nginx as nobody: the
	// media root hands nobody's group to every file created in it
	// (setgid), so nginx reads the uploads through their group, as there.
	_, nobodyGID := nginxtest.Nobody(t)
	require.NoError(t, os.Chown(s.mediaRoot, 0, int(nobodyGID)))
	require.NoError(t, os.Chmod(s.mediaRoot, 0o750|os.ModeSetgid))
	cert := nginxtest.WriteCert(t, dir)
	s.portal, s.stranger = portalPage(t, s), portalPage(t, s)
	s.spki = []string{spkiHash(t, cert.CertPEM), spkiHash(t, pemOf(s.portal)), spkiHash(t, pemOf(s.stranger))}

	// The production stack, as an operator would configure it for this
	// host: only addresses and ports are local.
	raw := map[string]string{
		"corsOrigins": fmt.Sprintf(`[%q]`, s.portal.URL),
		"profile":     "prod", "domain": "localhost", "allowedHosts": `["localhost"]`,
		"bindAddress": "127.0.0.1", "httpPort": strconv.Itoa(s.HTTPPort), "httpsPort": strconv.Itoa(s.HTTPSPort),
		"tlsMode": "provided", "tlsCertificate": string(cert.CertPEM), "tlsKey": string(cert.KeyPEM),
		// Loopback, nginx's address (127.0.0.1) among them: the only proxies
		// whose X-Forwarded-For the app believes. A /26, the smallest edge
		// subnet a stack may have.
		"edgeSubnet": "127.0.0.0/26",
		"app": fmt.Sprintf(`{"maxUploadBytes": %d, "maxRequestBodyBytes": %d, "loginRatePerMinute": 1, "loginBurst": %d}`,
			maxUploadBytes, 64<<10, loginBurst),
	}
	cfg, err := stacks.Parse("live", stacks.Values{Raw: raw, Secret: func(key string) bool { return key == "tlsKey" }})
	require.NoError(t, err)

	app, err := cfg.AppConfig()
	require.NoError(t, err)
	for _, h := range app.SecurityHeaders() {
		if h.Name != "Cache-Control" { // each location's own decision
			s.securityHeaders = append(s.securityHeaders, h.Name)
		}
	}

	bin := buildApp(t)
	appPort := testsupport.FreePort(t)
	s.appURL = "http://127.0.0.1:" + strconv.Itoa(appPort)
	s.databaseURL = newDatabase(t)
	secret := map[string]string{
		// What random.RandomPassword makes for the program: letters and
		// digits (hex would have at most 16 distinct characters, the
		// contract's floor).
		"SECRET_KEY":   rand.Text() + rand.Text(),
		"DATABASE_URL": s.databaseURL,
		"REDIS_URL":    testsupport.RedisURL(),
	}
	plain, err := deploy.AppEnv(cfg, secret)
	require.NoError(t, err)
	env := map[string]string{}
	for k, v := range plain {
		env[k] = v
	}
	for k, v := range secret {
		env[k] = v
	}
	// Container-local values: in Docker these are :8000 and the volumes'
	// mount points.
	env["HTTP_ADDR"] = "127.0.0.1:" + strconv.Itoa(appPort)
	env["STATIC_ROOT"] = s.staticRoot
	env["MEDIA_ROOT"] = s.mediaRoot
	// Lift the app's own login throttles (Redis) so that the 429 this test
	// sees is nginx's limit_req, before the app's would answer.
	env["RATE_LIMIT_LOGIN_IP"] = "10000/1m"
	env["RATE_LIMIT_LOGIN_USER"] = "10000/1m"
	maps.Copy(env, extra)
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}

	// What the one-shot containers do before the app starts.
	// The program's own one-shot command lines, run with the real binary.
	for _, args := range [][]string{deploy.MigrateCommand, deploy.CollectstaticCommand} {
		cmd := exec.Command(bin, args...)
		cmd.Env = environ
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "nbms %s:\n%s", strings.Join(args, " "), out)
	}
	s.appPID = startApp(t, bin, environ, s.appLog, appPort)
	s.bin, s.environ = bin, environ

	p, err := deploy.NginxParams(cfg)
	require.NoError(t, err)
	p.ListenAddress = "127.0.0.1"
	p.HTTPPort, p.HTTPSPort = s.HTTPPort, s.HTTPSPort
	p.CertPath, p.KeyPath = cert.CertPath, cert.KeyPath
	// The upstream file, as the switch writes it for the live release.
	p.UpstreamFile = filepath.Join(dir, "upstream.conf")
	require.NoError(t, os.WriteFile(p.UpstreamFile, []byte("# release live-test\nserver 127.0.0.1:"+strconv.Itoa(appPort)+" max_fails=0;\n"), 0o644))
	p.StaticRoot, p.MediaRoot = s.staticRoot, s.mediaRoot
	p.WorkerProcesses = 1
	tmp := filepath.Join(dir, "tmp")
	require.NoError(t, os.Mkdir(tmp, 0o700))
	nginxtest.ChownNobody(t, tmp)
	p.PidPath, p.TempDir = filepath.Join(tmp, "nginx.pid"), tmp
	require.Equal(t, s.HTTPSPort, p.PublicPort, "the stack's published HTTPS port")
	conf, err := nginx.Render(p)
	require.NoError(t, err)
	confPath := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))
	s.roots = cert.Pool(t)
	s.Client = nginxtest.NewClient(s.roots, net.ParseIP(clientAddr))
	s.nginxLog = nginxtest.StartNginx(t, dir, confPath, s.HTTPURL(nginx.HealthPath), s.Client)
	return s
}

// signIn creates an organisation and a contributor in it with the app's
// own subcommands, and returns a client signed in as that user through
// nginx. Each user's client has an address of its own (from), so the
// edge's per-address login limit, which another test spends, leaves it be.
func (s *site) signIn(t *testing.T, from string) *nginxtest.Site {
	t.Helper()
	org, username, password := "org-"+strings.ToLower(rand.Text()[:8]), "user-"+strings.ToLower(rand.Text()[:8]), rand.Text()
	for _, c := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"createorg", "--slug", org, "--name", "Org " + org}, ""},
		{[]string{"createuser", "--org", org, "--username", username, "--role", "contributor"}, password + "\n"},
	} {
		cmd := exec.Command(s.bin, c.args...)
		cmd.Env, cmd.Stdin = s.environ, strings.NewReader(c.stdin)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "nbms %s:\n%s", strings.Join(c.args, " "), out)
	}
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := nginxtest.NewClient(s.roots, net.ParseIP(from))
	client.Jar = jar
	u := &nginxtest.Site{HTTPPort: s.HTTPPort, HTTPSPort: s.HTTPSPort, Client: client}
	resp, body := u.Do(t, "POST", s.HTTPSURL("/auth/login"), strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, username, password)),
		map[string]string{"Content-Type": "application/json"})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	return u
}

// nginxLogLine waits for nginx's access log line of request id.
func (s *site) nginxLogLine(t *testing.T, id string) map[string]any {
	t.Helper()
	var found map[string]any
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(s.nginxLog)
		if err != nil {
			return false
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["request_id"] == id {
				found = line
			}
		}
		return found != nil
	}, 5*time.Second, 20*time.Millisecond, "no nginx access log line for request %s", id)
	return found
}

// buildApp builds the real binary, as app/Dockerfile does.
func buildApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nbms")
	require.NoError(t, testsupport.BuildBinary(bin, "github.com/nbms-deploy/nbms/app/cmd/nbms"))
	return bin
}

// newDatabase creates an empty database on the test server and returns
// its URL; `nbms migrate up` fills it. It is dropped at cleanup.
func newDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testsupport.DatabaseURL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	name := "nbms_live_" + randomHex(t, 8)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testsupport.DatabaseURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		// FORCE ends the app's pooled connections, should any survive it.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(testsupport.DatabaseURL())
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// startApp runs `nbms serve` until the test ends, logging to logPath, and
// waits for its /healthz.
func startApp(t *testing.T, bin string, environ []string, logPath string, port int) (pid int) {
	t.Helper()
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	t.Cleanup(func() { _ = logFile.Close() })
	cmd := exec.Command(bin, "serve")
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = logFile, logFile
	exited := nginxtest.Start(t, cmd, syscall.SIGTERM, 40*time.Second)
	nginxtest.WaitHealthy(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", http.DefaultClient, exited, logPath)
	return cmd.Process.Pid
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// The backup container's command line, as the program builds it, starts
// the real scheduler: its flags exist, its cron specs pass the app's own
// parser, and it creates the stanza with the rendered config's path before
// scheduling. pgbackrest is a recording stand-in here (the real one runs
// against a real cluster in infra/pgbackrest's tests); the scheduler stops
// cleanly on SIGTERM, as on `docker stop`.
func TestBackupSchedulerRunsTheProgramsCommandLine(t *testing.T) {
	cfg, err := stacks.Parse("live", stacks.Values{Raw: map[string]string{"profile": "dev", "domain": "localhost", "tlsMode": stacks.TLSOff}})
	require.NoError(t, err)
	argv := deploy.BackupSchedulerCommand(cfg)
	require.Equal(t, "backup-schedule", argv[1])

	dir := t.TempDir()
	// The drills' volume is the backup image's directory: here, one of
	// the test's (the scheduler checks that it exists).
	drillDir := filepath.Join(dir, "drill")
	require.NoError(t, os.Mkdir(drillDir, 0o700))
	for i, arg := range argv {
		argv[i] = strings.Replace(arg, "/var/lib/nbms-drill", drillDir, 1)
	}
	require.Contains(t, argv, drillDir, "the program schedules drills into their volume")
	calls := filepath.Join(dir, "calls")
	fake := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + calls + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pgbackrest"), []byte(fake), 0o755))

	out := &testsupport.SyncBuffer{}
	cmd := exec.Command(buildApp(t), argv[1:]...)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "backup scheduler started") {
		select {
		case err := <-exited:
			t.Fatalf("the scheduler exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the scheduler did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, out.String())
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the scheduler ignored SIGTERM:\n%s", out.String())
	}
	recorded, err := os.ReadFile(calls)
	require.NoError(t, err)
	assert.Equal(t, "--config=/tmp/nbms/pgbackrest.conf --stanza=nbms stanza-create\n", string(recorded))
	var started map[string]any
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "backup scheduler started") {
			require.NoError(t, json.Unmarshal([]byte(line), &started), line)
		}
	}
	assert.Equal(t, cfg.Backup.FullCron, started["full"])
	assert.Equal(t, cfg.Backup.DiffCron, started["diff"])
	assert.Equal(t, true, started["exit_on_failure"])
}
