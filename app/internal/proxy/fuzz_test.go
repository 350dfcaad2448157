package proxy_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/nbms-deploy/nbms/app/internal/proxy"
)

// FuzzResolve checks Resolve's safety properties on arbitrary input: it
// never panics, an untrusted peer's client IP is always the peer, and the
// client IP is otherwise the peer or an address taken from X-Forwarded-For.
func FuzzResolve(f *testing.F) {
	seeds := []struct{ remote, xff, proto, host, port string }{
		{"10.0.0.5:1234", "198.51.100.7", "https", "www.example.org", "443"},
		{"203.0.113.9:1234", "6.6.6.6, 10.0.0.1", "https", "evil.example", "8443"},
		{"10.0.0.5:1234", "6.6.6.6, 198.51.100.7, 10.1.1.1\n10.2.2.2", "http", "", ""},
		{"[fd00::1]:443", "[2001:db8::2]:4711, fe80::1%eth0, ::ffff:10.0.0.9", "HTTPS", "[::1]:8080", "80"},
		{"[::ffff:10.0.0.5]:80", "garbage,,unknown, 1.2.3.4:99999", "ftp", "a/b", "x"},
		{"@", "198.51.100.7", "https", "www.example.org", "443"},
		{"", "", "", "", ""},
		{"127.0.0.1:9", "[", "https,", "[::1", ":"},
	}
	for _, s := range seeds {
		f.Add(s.remote, s.xff, s.proto, s.host, s.port)
	}
	trusted := mustPrefixes(f, "10.0.0.0/8", "fd00::/8", "127.0.0.0/8")

	f.Fuzz(func(t *testing.T, remote, xff, proto, host, port string) {
		r := &http.Request{RemoteAddr: remote, Host: "app.internal", Header: http.Header{}}
		for _, line := range strings.Split(xff, "\n") {
			r.Header.Add("X-Forwarded-For", line)
		}
		r.Header.Set("X-Forwarded-Proto", proto)
		r.Header.Set("X-Forwarded-Host", host)
		r.Header.Set("X-Forwarded-Port", port)

		info := proxy.Resolve(r, trusted)

		if info.Scheme != "http" && info.Scheme != "https" {
			t.Fatalf("scheme %q", info.Scheme)
		}
		if info.Secure != (info.Scheme == "https") {
			t.Fatalf("secure %v with scheme %q", info.Secure, info.Scheme)
		}
		if info.ClientIP.Zone() != "" || info.ClientIP.Is4In6() {
			t.Fatalf("client IP %v not normalised", info.ClientIP)
		}
		peer := fuzzPeer(remote)
		peerTrusted := false
		for _, p := range trusted {
			peerTrusted = peerTrusted || (peer.IsValid() && p.Contains(peer))
		}
		if info.ViaTrustedProxy != peerTrusted {
			t.Fatalf("ViaTrustedProxy=%v for peer %v", info.ViaTrustedProxy, peer)
		}
		if !peerTrusted {
			if info.ClientIP != peer || info.Host != r.Host || info.Scheme != "http" {
				t.Fatalf("untrusted peer %q changed the result: %+v", remote, info)
			}
			return
		}
		if info.ClientIP == peer {
			return
		}
		for _, entry := range strings.FieldsFunc(xff, func(c rune) bool { return c == ',' || c == '\n' }) {
			if fuzzHop(entry) == info.ClientIP {
				return
			}
		}
		t.Fatalf("client IP %v is neither the peer %v nor in X-Forwarded-For %q", info.ClientIP, peer, xff)
	})
}

// fuzzPeer and fuzzHop parse addresses the plain way, independently of the
// package, to state the fuzz invariants.
func fuzzPeer(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

func fuzzHop(entry string) netip.Addr {
	entry = strings.Trim(entry, " \t")
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	entry = strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]")
	if a, err := netip.ParseAddr(entry); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}
