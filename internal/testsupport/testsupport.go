// Package testsupport holds what several packages' tests share: where the
// machine's real PostgreSQL and Redis are, a port and an address where
// nothing is, a TCP forwarder that can cut a dependency off, a log buffer
// safe for concurrent writers, a self-signed certificate, a way to build
// the module's binaries and a machine-wide lock on Docker builds. It sits
// at the module root so that app, infra, stacks and docs tests can all
// import it; it is imported by tests only.
package testsupport

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
)

// PostgresAddr is the test PostgreSQL (NBMS_TEST_POSTGRES_ADDR overrides).
func PostgresAddr() string { return env("NBMS_TEST_POSTGRES_ADDR", "127.0.0.1:5432") }

// RedisAddr is the test Redis (NBMS_TEST_REDIS_ADDR overrides).
func RedisAddr() string { return env("NBMS_TEST_REDIS_ADDR", "127.0.0.1:6379") }

// DatabaseURL is a URL of the test database (trust auth; a password in the
// URL is ignored by the server, which lets tests seed one and search for it).
func DatabaseURL() string {
	return env("NBMS_TEST_DATABASE_URL", "postgres://root@"+PostgresAddr()+"/test?sslmode=disable")
}

// RedisURL is a URL of the test Redis.
func RedisURL() string { return env("NBMS_TEST_REDIS_URL", "redis://"+RedisAddr()+"/0") }

// ClosedAddr is a loopback host:port nothing listens on: a dependency
// that is down.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort is a loopback TCP port nothing listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("free port: %v", err)
	}
	return port
}

// LongLivedPort is a loopback TCP port nothing listens on right now, from
// below the kernel's ephemeral range (32768-60999), for a listener that
// starts long after it is picked (a deployed stack's published ports): a
// port from FreePort can meanwhile become the local end of another
// process's outgoing connection, which the suite's parallel packages make
// by the thousand. Nothing hands ports out from 20000-32767 by itself.
func LongLivedPort(t testing.TB) int {
	t.Helper()
	b := make([]byte, 2)
	for range 100 {
		if _, err := rand.Read(b); err != nil {
			t.Fatalf("long-lived port: %v", err)
		}
		port := 20000 + (int(b[0])<<8|int(b[1]))%12768
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Fatalf("long-lived port: %v", err)
		}
		return port
	}
	t.Fatal("long-lived port: no free port in 20000-32767 after 100 tries")
	return 0
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// Forwarder is a TCP proxy the test can cut and restore, making a real
// dependency unreachable without touching the shared server.
type Forwarder struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
}

// NewForwarder listens on a free loopback port and forwards to target.
func NewForwarder(t testing.TB, target string) *Forwarder {
	f := &Forwarder{t: t, target: target, conns: map[net.Conn]struct{}{}}
	f.listen("127.0.0.1:0")
	t.Cleanup(f.Stop)
	return f
}

// Addr is host:port of the forwarder.
func (f *Forwarder) Addr() string { return f.addr }

func (f *Forwarder) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatalf("forwarder: %v", err)
	}
	f.mu.Lock()
	f.ln, f.addr = ln, ln.Addr().String()
	f.mu.Unlock()
	go f.serve(ln)
}

func (f *Forwarder) serve(ln net.Listener) {
	for {
		down, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		f.mu.Lock()
		f.conns[down], f.conns[up] = struct{}{}, struct{}{}
		f.mu.Unlock()
		go pipe(down, up)
		go pipe(up, down)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// Stop closes the listener and cuts every live connection, like the
// dependency crashing.
func (f *Forwarder) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}

// Restart listens again on the same port, like the dependency coming back.
func (f *Forwarder) Restart() { f.listen(f.addr) }

// SyncBuffer collects output written from several goroutines.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// UniqueClientIP returns an IPv6 client address in a /64 no other test run
// uses, for tests that go through the app's Redis rate limits: their
// buckets outlive a test run (the limiter keys IPv6 clients by /64).
func UniqueClientIP() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], 0, 0, 0, 1}).String()
}
