package ratelimit_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
)

// FuzzClientIPKey checks the key function on arbitrary peers and
// X-Forwarded-For values behind proxy.Forwarded: it never panics, reports
// false only when there is no client IP, keys IPv4 (mapped or not) by the
// bare address, and keys IPv6 by a /64 that contains the client.
func FuzzClientIPKey(f *testing.F) {
	seeds := []struct{ remote, xff string }{
		{"203.0.113.5:1234", "1.2.3.4"},
		{"10.0.0.1:1234", "6.6.6.6, 198.51.100.7"},
		{"[fd00::1]:443", "2001:db8:aa:bb:cc::1, fd00::2"},
		{"[2001:db8:1:2:3:4:5:6]:443", ""},
		{"[::ffff:203.0.113.9]:1", ""},
		{"10.0.0.1:1", "::ffff:198.51.100.3"},
		{"[fe80::1%eth0]:1", ""},
		{"10.0.0.1:1", "[2001:db8::1]:99, garbage"},
		{"@", "1.2.3.4"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add(s.remote, s.xff)
	}
	trusted, err := config.ParseTrustedProxies([]string{"10.0.0.0/8", "fd00::/8"})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, remote, xff string) {
		var (
			key    string
			ok     bool
			client netip.Addr
		)
		h := proxy.Forwarded(trusted)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			key, ok = ratelimit.ClientIPKey(r)
			client = proxy.ClientIP(r)
		}))
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		for _, line := range strings.Split(xff, "\n") {
			r.Header.Add("X-Forwarded-For", line)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)

		if ok != client.IsValid() {
			t.Fatalf("ok=%v for client %v", ok, client)
		}
		if !ok {
			if key != "" {
				t.Fatalf("key %q with ok=false", key)
			}
			return
		}
		if ip := client.Unmap(); ip.Is4() {
			if key != ip.String() {
				t.Fatalf("IPv4 client %v keyed %q", client, key)
			}
			return
		}
		p, err := netip.ParsePrefix(key)
		if err != nil || p.Bits() != 64 || p != p.Masked() || !p.Contains(client.WithZone("")) {
			t.Fatalf("IPv6 client %v keyed %q, want its /64", client, key)
		}
	})
}
