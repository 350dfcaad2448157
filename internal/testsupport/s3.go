package testsupport

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// S3 is a real S3-compatible server for tests: versitygw (built into
// .tools by `make setup`) on its posix backend, over TLS with a
// certificate of a test CA. Each bucket is a directory under Root, each
// object a file in it, so that a test can read what a client stored.
type S3 struct {
	// Addr is where it listens (host:port).
	Addr string
	// Root holds one directory per bucket.
	Root                 string
	AccessKey, SecretKey string

	dir, meta  string
	on         *OtherHost
	chain, key string // the certificate StartS3 issued
	gw         *exec.Cmd
	log        SyncBuffer
}

// StartS3 starts an S3 server on listen (host:port) for the names the
// certificate from ca covers, with one empty bucket per name in buckets,
// its files under dir, on this machine or, when on is not nil, in that
// other host's namespace. The server stops at cleanup; its log is shown
// when the test failed.
func StartS3(t testing.TB, on *OtherHost, dir, listen string, ca *CA, names []string, buckets ...string) *S3 {
	t.Helper()
	s := &S3{
		Addr: listen, Root: filepath.Join(dir, "buckets"), AccessKey: "nbms-backup", SecretKey: "s3-secret-" + RandomWord(t),
		dir: dir, meta: filepath.Join(dir, "meta"), on: on,
	}
	for _, d := range []string{s.Root, s.meta} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range buckets {
		if err := os.Mkdir(filepath.Join(s.Root, b), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.chain, s.key = ca.Issue(t, names...)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw:\n%s", s.log.String())
		}
	})
	s.Serve(t, "", "")
	return s
}

// Stop stops the server, as a store that goes down: its files stay, and
// Serve starts it again.
func (s *S3) Stop() {
	if s.gw == nil {
		return
	}
	_ = s.gw.Process.Kill()
	_ = s.gw.Wait()
	s.gw = nil
}

// Serve (re)starts the server on the same address and files, showing
// clients chainPEM (the leaf first) with its key keyPEM, or, when both
// are empty, the certificate StartS3 issued. It returns once the server
// listens.
func (s *S3) Serve(t testing.TB, chainPEM, keyPEM string) {
	t.Helper()
	s.Stop()
	if chainPEM == "" && keyPEM == "" {
		chainPEM, keyPEM = s.chain, s.key
	}
	certFile, keyFile := filepath.Join(s.dir, "s3.crt"), filepath.Join(s.dir, "s3.key")
	if err := os.WriteFile(certFile, []byte(chainPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(keyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := []string{Tool(t, "versitygw"), "--port", s.Addr, "--cert", certFile, "--key", keyFile, "posix", "--sidecar", s.meta, s.Root}
	gw := exec.Command(argv[0], argv[1:]...)
	if s.on != nil {
		gw = s.on.Command(argv...)
	}
	gw.Env = []string{"ROOT_ACCESS_KEY_ID=" + s.AccessKey, "ROOT_SECRET_ACCESS_KEY=" + s.SecretKey}
	gw.Stdout, gw.Stderr = &s.log, &s.log
	if err := gw.Start(); err != nil {
		t.Fatalf("starting versitygw: %v", err)
	}
	s.gw = gw
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw does not listen on %s: %v\n%s", s.Addr, err, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Objects lists the files stored in bucket, relative to it.
func (s *S3) Objects(t testing.TB, bucket string) []string {
	t.Helper()
	var out []string
	base := filepath.Join(s.Root, bucket)
	err := filepath.Walk(base, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(base, path)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RandomWord is 16 random hex digits: a value no test can guess, for a
// seeded secret that is then searched for.
func RandomWord(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
