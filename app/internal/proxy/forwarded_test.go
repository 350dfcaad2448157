package proxy_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
)

// seen is what the handler behind Forwarded observed, as JSON.
type seen struct {
	ClientIP        string
	Scheme          string
	Host            string // Info.Host
	RequestHost     string // r.Host as rewritten by Forwarded
	Secure          bool
	ViaTrustedProxy bool
}

// echo reports FromRequest and r.Host back to the test.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	info := proxy.FromRequest(r)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(seen{
		ClientIP:        proxy.ClientIP(r).String(),
		Scheme:          info.Scheme,
		Host:            info.Host,
		RequestHost:     r.Host,
		Secure:          info.Secure,
		ViaTrustedProxy: info.ViaTrustedProxy,
	})
})

func mustPrefixes(t testing.TB, list ...string) []netip.Prefix {
	t.Helper()
	p, err := config.ParseTrustedProxies(list)
	require.NoError(t, err)
	return p
}

func decodeSeen(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	require.NoError(t, json.Unmarshal([]byte(body), &s), body)
	return s
}

func TestForwardedResolution(t *testing.T) {
	trusted := mustPrefixes(t, "10.0.0.0/8", "fd00::/8")
	const trustedPeer = "10.0.0.5:41000"
	const untrustedPeer = "203.0.113.9:5555"

	tests := []struct {
		name   string
		remote string
		host   string
		tls    bool
		header http.Header
		want   seen
	}{
		{
			name:   "untrusted peer: every forwarded header ignored",
			remote: untrustedPeer, host: "app.example.org",
			header: http.Header{
				"X-Forwarded-For":   {"198.51.100.7"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"evil.example"},
				"X-Forwarded-Port":  {"8443"},
			},
			want: seen{ClientIP: "203.0.113.9", Scheme: "http", Host: "app.example.org"},
		},
		{
			name:   "untrusted peer: spoofed left-most XFF does not change the client",
			remote: untrustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6, 10.0.0.1"}},
			want:   seen{ClientIP: "203.0.113.9", Scheme: "http", Host: "app.example.org"},
		},
		{
			name:   "no forwarded headers from a trusted peer: the peer is the client",
			remote: trustedPeer, host: "app.example.org",
			want: seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted peer: XFF client believed",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted peer: spoofed left-most XFF ignored, right-most untrusted wins",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "several trusted hops are skipped",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "all hops trusted: the left-most one",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"10.9.9.9, 10.1.1.1"}},
			want:   seen{ClientIP: "10.9.9.9", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "multiple XFF header lines are one list, in order",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7", "10.1.1.1,10.2.2.2"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "untrusted hop in the last line wins over earlier lines",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7", "203.0.113.50"}},
			want:   seen{ClientIP: "203.0.113.50", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "spaces and tabs around entries",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {" 198.51.100.7 ,\t10.1.1.1 "}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "IPv4 hop with port",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7:61000"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "IPv6 hop, bare",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"2001:db8::1"}},
			want:   seen{ClientIP: "2001:db8::1", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "IPv6 hop in brackets with port, trusted IPv6 hop skipped",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"[2001:db8::2]:4711, [fd00::7]"}},
			want:   seen{ClientIP: "2001:db8::2", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "IPv6 hop with zone: zone dropped",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"fe80::1%eth0"}},
			want:   seen{ClientIP: "fe80::1", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "IPv4-mapped hop and peer are unmapped",
			remote: "[::ffff:10.0.0.5]:41000", host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"::ffff:198.51.100.7, ::ffff:10.3.3.3"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted IPv6 peer",
			remote: "[fd00::1]:443", host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}},
			want:   seen{ClientIP: "198.51.100.7", Scheme: "https", Host: "app.example.org", Secure: true, ViaTrustedProxy: true},
		},
		{
			name:   "untrusted IPv6 peer",
			remote: "[2001:db8::99]:443", host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}},
			want:   seen{ClientIP: "2001:db8::99", Scheme: "http", Host: "app.example.org"},
		},
		{
			name:   "garbage between hops: stop at the last trusted hop",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7, garbage, 10.1.1.1"}},
			want:   seen{ClientIP: "10.1.1.1", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "right-most garbage: the peer",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7, unknown"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "empty entry is garbage",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7,,10.1.1.1"}},
			want:   seen{ClientIP: "10.1.1.1", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "empty header: the peer",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {""}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "out-of-range port is garbage",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-For": {"198.51.100.7:99999"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted proto https",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-Proto": {"HTTPS"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "https", Host: "app.example.org", Secure: true, ViaTrustedProxy: true},
		},
		{
			name:   "trusted proto: right-most value counts",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-Proto": {"https, http"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted proto other than http/https is ignored",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"X-Forwarded-Proto": {"wss"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "direct TLS without proxy",
			remote: untrustedPeer, host: "app.example.org", tls: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}},
			want:   seen{ClientIP: "203.0.113.9", Scheme: "https", Host: "app.example.org", Secure: true},
		},
		{
			name:   "trusted host replaces the upstream Host",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"www.example.org"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "www.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "trusted host: right-most value counts",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"evil.example, www.example.org"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "www.example.org", ViaTrustedProxy: true},
		},
		{
			name:   "malformed trusted host is ignored",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"evil.example/path"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app:8080", ViaTrustedProxy: true},
		},
		{
			name:   "trusted port appended to trusted host",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"www.example.org"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Port": {"8443"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "https", Host: "www.example.org:8443", Secure: true, ViaTrustedProxy: true},
		},
		{
			name:   "trusted default port dropped so Host matches the browser's Origin",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"www.example.org"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Port": {"443"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "https", Host: "www.example.org", Secure: true, ViaTrustedProxy: true},
		},
		{
			name:   "trusted port alone replaces the upstream port",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Port": {"9000"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app:9000", ViaTrustedProxy: true},
		},
		{
			name:   "malformed trusted port is ignored",
			remote: trustedPeer, host: "app:8080",
			header: http.Header{"X-Forwarded-Port": {"80abc"}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app:8080", ViaTrustedProxy: true},
		},
		{
			name:   "RFC 7239 Forwarded header is ignored even from a trusted peer",
			remote: trustedPeer, host: "app.example.org",
			header: http.Header{"Forwarded": {`for=198.51.100.7;proto=https;host=evil.example`}},
			want:   seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "app.example.org", ViaTrustedProxy: true},
		},
	}
	handler := proxy.Forwarded(trusted)(echo)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/whoami", nil)
			req.RemoteAddr = tt.remote
			req.Host = tt.host
			if tt.tls {
				req.TLS = &tls.ConnectionState{}
			}
			for k, vs := range tt.header {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			require.Equal(t, http.StatusOK, rec.Code)

			got := decodeSeen(t, rec.Body.String())
			want := tt.want
			want.RequestHost = want.Host // r.Host always carries the effective host
			assert.Equal(t, want, got)

			// The pure function agrees with what the middleware stored.
			info := proxy.Resolve(req, trusted)
			assert.Equal(t, want.ClientIP, info.ClientIP.String())
			assert.Equal(t, want.Host, info.Host)
		})
	}
}

// TestForwardedOverRealConnections uses real TCP peers: 127.0.0.1 from
// httptest.NewServer and ::1 from an IPv6 listener.
func TestForwardedOverRealConnections(t *testing.T) {
	v6, err := net.Listen("tcp6", "[::1]:0")
	require.NoError(t, err)
	v6.Close()

	tests := []struct {
		name    string
		network string
		trusted []string
		want    seen
	}{
		{
			name: "loopback trusted", network: "tcp4", trusted: []string{"127.0.0.1"},
			want: seen{ClientIP: "198.51.100.7", Scheme: "https", Host: "www.example.org", RequestHost: "www.example.org", Secure: true, ViaTrustedProxy: true},
		},
		{
			name: "loopback not trusted", network: "tcp4", trusted: []string{"10.0.0.0/8"},
			want: seen{ClientIP: "127.0.0.1", Scheme: "http", Host: "app.internal", RequestHost: "app.internal"},
		},
		{
			name: "IPv6 loopback trusted", network: "tcp6", trusted: []string{"::1"},
			want: seen{ClientIP: "198.51.100.7", Scheme: "https", Host: "www.example.org", RequestHost: "www.example.org", Secure: true, ViaTrustedProxy: true},
		},
		{
			name: "IPv6 loopback not trusted", network: "tcp6", trusted: []string{"127.0.0.1"},
			want: seen{ClientIP: "::1", Scheme: "http", Host: "app.internal", RequestHost: "app.internal"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(proxy.Forwarded(mustPrefixes(t, tt.trusted...))(echo))
			if tt.network == "tcp6" {
				l, err := net.Listen("tcp6", "[::1]:0")
				require.NoError(t, err)
				srv.Listener.Close()
				srv.Listener = l
			}
			srv.Start()
			defer srv.Close()

			req, err := http.NewRequest(http.MethodGet, srv.URL+"/whoami", nil)
			require.NoError(t, err)
			req.Host = "app.internal"
			req.Header.Add("X-Forwarded-For", "6.6.6.6, 198.51.100.7")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "www.example.org")
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var got seen
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestForwardedHostFeedsCrossOriginProtection shows why r.Host is rewritten:
// behind a proxy that sends the upstream name as Host, the browser's Origin
// matches only the forwarded public host, and only a trusted peer may set it.
func TestForwardedHostFeedsCrossOriginProtection(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	tests := []struct {
		name    string
		trusted []string
		want    int
	}{
		{name: "trusted proxy: Origin matches the public host", trusted: []string{"127.0.0.1"}, want: http.StatusNoContent},
		{name: "untrusted peer: X-Forwarded-Host ignored, Origin mismatch", trusted: []string{"10.0.0.0/8"}, want: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := proxy.Forwarded(mustPrefixes(t, tt.trusted...))(http.NewCrossOriginProtection().Handler(ok))
			srv := httptest.NewServer(h)
			defer srv.Close()

			req, err := http.NewRequest(http.MethodPost, srv.URL+"/observations", strings.NewReader("{}"))
			require.NoError(t, err)
			req.Host = "app:8080"
			req.Header.Set("Origin", "https://www.example.org")
			req.Header.Set("X-Forwarded-Host", "www.example.org")
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.want, resp.StatusCode)
		})
	}
}

// Without the Forwarded middleware, FromRequest trusts no proxy.
func TestFromRequestWithoutMiddlewareTrustsNobody(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "10.0.0.5:1234"
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	rec := httptest.NewRecorder()
	echo.ServeHTTP(rec, req)
	got := decodeSeen(t, rec.Body.String())
	assert.Equal(t, seen{ClientIP: "10.0.0.5", Scheme: "http", Host: "example.com", RequestHost: "example.com"}, got)
}

func TestUnparsableRemoteAddrIsUntrusted(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "@" // unix socket peers look like this
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	info := proxy.Resolve(req, mustPrefixes(t, "10.0.0.0/8"))
	assert.False(t, info.ClientIP.IsValid())
	assert.False(t, info.ViaTrustedProxy)
}
