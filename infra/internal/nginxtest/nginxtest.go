// Package nginxtest is for tests only: the plumbing that infra/nginx's live
// test and infra/livetest share to run the real nginx on this machine. It
// writes a test certificate, runs nginx in the foreground
// as the unprivileged user nobody (the tests run as root; production runs
// nginx as a non-root container user), waits for a health URL and stops
// the processes at cleanup, and gives a client that reaches the site by
// name on 127.0.0.1.
package nginxtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// Bin is the real nginx the tests run (Debian's 1.22, as in ops-anchors).
const Bin = "/usr/sbin/nginx"

// Cert is a self-signed certificate for localhost and 127.0.0.1, written
// into a directory.
type Cert struct {
	CertPEM, KeyPEM   []byte
	CertPath, KeyPath string
}

// WriteCert makes a Cert and writes it into dir as cert.pem and key.pem,
// the key readable by nobody only (the nginx master reads the key, and it
// runs as nobody in these tests).
func WriteCert(t *testing.T, dir string) Cert {
	t.Helper()
	certPEM, keyPEM := testsupport.SelfSignedCert(t, "localhost", "127.0.0.1")
	c := Cert{
		CertPEM:  []byte(certPEM),
		KeyPEM:   []byte(keyPEM),
		CertPath: filepath.Join(dir, "cert.pem"),
		KeyPath:  filepath.Join(dir, "key.pem"),
	}
	require.NoError(t, os.WriteFile(c.CertPath, c.CertPEM, 0o644))
	require.NoError(t, os.WriteFile(c.KeyPath, c.KeyPEM, 0o600))
	ChownNobody(t, c.KeyPath)
	return c
}

// Pool is a certificate pool trusting only c.
func (c Cert) Pool(t *testing.T) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(c.CertPEM))
	return pool
}

// Nobody is the unprivileged account the tests run nginx as.
func Nobody(t *testing.T) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup("nobody")
	require.NoError(t, err)
	uid64, err := strconv.ParseUint(u.Uid, 10, 32)
	require.NoError(t, err)
	gid64, err := strconv.ParseUint(u.Gid, 10, 32)
	require.NoError(t, err)
	return uint32(uid64), uint32(gid64)
}

// ChownNobody gives path to nobody.
func ChownNobody(t *testing.T, path string) {
	t.Helper()
	uid, gid := Nobody(t)
	require.NoError(t, os.Chown(path, int(uid), int(gid)))
}

// RunAsNobody makes cmd run as nobody.
func RunAsNobody(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	uid, gid := Nobody(t)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
}

// NobodyDir is a temporary directory that nobody owns and everyone may
// traverse (t.TempDir's parent is private to root). It is removed at
// cleanup.
func NobodyDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbms-nginx-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	ChownNobody(t, dir)
	return dir
}

// NobodyFile creates a file for nginx's stdout and stderr, closed at
// cleanup. It must be a file nobody owns: "access_log /dev/stdout" reopens
// fd 1, and a pipe created by root refuses that (in Docker, runc hands the
// container user its stdio).
func NobodyFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	ChownNobody(t, path)
	return f
}

// StartNginx runs the real nginx with confPath in the foreground as
// nobody, with dir as its prefix and its output in dir/nginx.log (the
// returned path), and waits until healthURL answers 200 through client.
// t.Cleanup stops it gracefully.
func StartNginx(t *testing.T, dir, confPath, healthURL string, client *http.Client) (logPath string) {
	t.Helper()
	logPath = filepath.Join(dir, "nginx.log")
	logFile := NobodyFile(t, logPath)
	cmd := exec.Command(Bin, "-c", confPath, "-p", dir, "-g", "daemon off;")
	RunAsNobody(t, cmd)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// QUIT is nginx's graceful stop: the master waits for its workers.
	exited := Start(t, cmd, syscall.SIGQUIT, 5*time.Second)
	WaitHealthy(t, healthURL, client, exited, logPath)
	return logPath
}

// Start starts cmd and returns the channel its exit arrives on. t.Cleanup
// sends it stopSignal and kills it if it has not exited after grace.
func Start(t *testing.T, cmd *exec.Cmd, stopSignal syscall.Signal, grace time.Duration) <-chan error {
	t.Helper()
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(stopSignal)
		select {
		case <-exited:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return exited
}

// WaitHealthy waits until url answers 200 through client. It fails the
// test, showing the process's log, if the process exits first or the URL
// does not answer within 20 seconds.
func WaitHealthy(t *testing.T, url string, client *http.Client, exited <-chan error, logPath string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s: the process exited: %v\n%s", url, err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s never answered 200 (last error %v)\n%s", url, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NewClient returns a client that trusts roots, connects to 127.0.0.1
// whatever the URL's host (so "localhost" is both the SNI name and the
// Host) from the local address from (any, if nil), and does not follow
// redirects.
func NewClient(roots *x509.CertPool, from net.IP) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if from != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: from}
	}
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, "tcp4", "127.0.0.1:"+port)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Site is a running nginx reached through Client on its two ports.
type Site struct {
	HTTPPort, HTTPSPort int
	Client              *http.Client
}

// HTTPURL is path on the site over plain HTTP.
func (s *Site) HTTPURL(path string) string {
	return "http://localhost:" + strconv.Itoa(s.HTTPPort) + path
}

// HTTPSURL is path on the site over HTTPS.
func (s *Site) HTTPSURL(path string) string {
	return "https://localhost:" + strconv.Itoa(s.HTTPSPort) + path
}

// Do sends one request with the given headers and returns the response
// with its whole body read.
func (s *Site) Do(t *testing.T, method, url string, body io.Reader, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.Client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}
