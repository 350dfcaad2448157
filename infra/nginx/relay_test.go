package nginx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/internal/nginxtest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

func TestRelayValidate(t *testing.T) {
	ok := RelayParams{Listen: 443, Upstream: "s3.example.org:443", Resolver: "127.0.0.11", PidPath: "/tmp/nbms/relay.pid"}
	require.NoError(t, ok.Validate())
	cases := []struct {
		name   string
		change func(*RelayParams)
		want   string
	}{
		{"no port", func(p *RelayParams) { p.Listen = 0 }, "Listen 0 is not a port"},
		{"upstream without port", func(p *RelayParams) { p.Upstream = "s3.example.org" }, "is not host:port"},
		{"upstream with a directive", func(p *RelayParams) { p.Upstream = "s3.example.org;evil:443" }, "not a host name"},
		{"IPv6 upstream", func(p *RelayParams) { p.Upstream = "[2001:db8::1]:443" }, "only IPv4"},
		{"name without resolver", func(p *RelayParams) { p.Resolver = "" }, "set Resolver"},
		{"resolver by name", func(p *RelayParams) { p.Resolver = "dns.example.org" }, "must be an IPv4 address"},
		{"relative pid path", func(p *RelayParams) { p.PidPath = "relay.pid" }, "clean absolute path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.change(&p)
			_, err := RenderRelay(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The real nginx, with Debian's stream module, relays a TLS connection
// it cannot read: the client verifies the repository's own certificate
// (by the repository's name, through the relay's address), the server
// sees the client's SNI, and the relay logs the connection.
func TestRelayCarriesTLSEndToEnd(t *testing.T) {
	const name = "s3.relay.test"
	ca := testsupport.NewCA(t, "relay test CA")
	chain, key := ca.Issue(t, name)
	cert, err := tls.X509KeyPair([]byte(chain), []byte(key))
	require.NoError(t, err)
	var sawSNI string
	repo := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawSNI = r.TLS.ServerName
		fmt.Fprintf(w, "object %s", r.URL.Path)
	}))
	repo.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	repo.StartTLS()
	t.Cleanup(repo.Close)

	dir := nginxtest.NobodyDir(t)
	listen := testsupport.FreePort(t)
	conf, err := RenderRelay(RelayParams{Listen: listen, Upstream: repo.Listener.Addr().String(), PidPath: filepath.Join(dir, "relay.pid")})
	require.NoError(t, err)
	confPath := filepath.Join(dir, "relay.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))
	logPath := filepath.Join(dir, "relay.log")
	logFile := nginxtest.NobodyFile(t, logPath)
	cmd := exec.Command(nginxtest.Bin, "-e", "stderr", "-c", confPath, "-p", dir, "-g", "daemon off;")
	nginxtest.RunAsNobody(t, cmd)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	nginxtest.Start(t, cmd, syscall.SIGQUIT, 5*time.Second)

	relay := net.JoinHostPort("127.0.0.1", strconv.Itoa(listen))
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM([]byte(ca.PEM)))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The name goes to the relay's address, as the database's hosts
		// file sends it.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, relay)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	var resp *http.Response
	require.Eventually(t, func() bool {
		resp, err = client.Get("https://" + name + "/bucket/nbms/archive.info")
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "the relay never passed a request: %v", err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, "object /bucket/nbms/archive.info", string(body))
	assert.Equal(t, name, sawSNI, "the repository sees the client's own TLS")
	assert.Equal(t, cert.Certificate[0], resp.TLS.PeerCertificates[0].Raw, "the client verified the repository's certificate, not one of the relay's")

	// A client that does not trust the repository's CA is refused by its
	// own verification: the relay has no certificate to offer instead.
	untrusting := client.Transport.(*http.Transport).Clone()
	untrusting.TLSClientConfig = &tls.Config{RootCAs: x509.NewCertPool()}
	_, err = (&http.Client{Timeout: 5 * time.Second, Transport: untrusting}).Get("https://" + name + "/")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")

	client.CloseIdleConnections()
	require.Eventually(t, func() bool {
		log, _ := os.ReadFile(logPath)
		return strings.Contains(string(log), "relay client=127.0.0.1 upstream="+repo.Listener.Addr().String()+" status=200")
	}, 10*time.Second, 50*time.Millisecond, "one log line per connection")
}

// A host name upstream loads with its resolver (nginx -t), as deployed.
func TestRelayByNameLoads(t *testing.T) {
	dir := nginxtest.NobodyDir(t)
	conf, err := RenderRelay(RelayParams{Listen: testsupport.FreePort(t), Upstream: "s3.eu-west-1.amazonaws.com:443", Resolver: "127.0.0.11", PidPath: filepath.Join(dir, "relay.pid")})
	require.NoError(t, err)
	assert.Contains(t, conf, "set $repository s3.eu-west-1.amazonaws.com:443;")
	confPath := filepath.Join(dir, "relay.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))
	assertLoads(t, dir, confPath)
}
