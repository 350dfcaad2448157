package images

import (
	"bytes"
	"errors"
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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// This file runs the nginx image's two scripts, nbms-proxy (the proxy
// container's PID 1) and nbms-switch (the one-shot switch container), for
// real, with the machine's nginx (Debian's, the image's package) and
// without Docker: a temp dir stands for the control volume, two Go
// backends for the blue and the green release.

const (
	hostNginx    = "/usr/sbin/nginx"
	proxyScript  = "nginx/nbms-proxy"
	switchScript = "nginx/nbms-switch"
	switchHost   = "nbms.test"
	switchWait   = 10 * time.Second // for what polls, never a timed assertion
)

// hostTools fails the test unless the scripts' tools are here (make setup
// installs nginx); it returns the PATH the scripts run with.
func hostTools(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(hostNginx); err != nil {
		t.Fatalf("these tests run the image's scripts with Debian's nginx at %s (make setup installs it): %v", hostNginx, err)
	}
	for _, tool := range []string{"wget", "stat", "date", "touch", "mv", "cp", "tr", "getent", "timeout", "cut", "sort"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("nbms-switch and nbms-proxy need %s: %v", tool, err)
		}
	}
	return filepath.Dir(hostNginx) + string(os.PathListSeparator) + os.Getenv("PATH")
}

// backend is a release's app: /readyz answers ready (200) or 503, /slow
// holds its answer until release is closed, anything else answers name.
type backend struct {
	name    string
	srv     *httptest.Server
	entered chan struct{} // a /slow request arrived
	release chan struct{} // let it finish
}

func newBackend(t *testing.T, name string, ready bool) *backend {
	t.Helper()
	b := &backend{name: name, entered: make(chan struct{}, 1), release: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if r.Host != switchHost {
				http.Error(w, "wrong host "+r.Host, http.StatusMisdirectedRequest)
			} else if !ready {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
			} else {
				_, _ = io.WriteString(w, "ready\n")
			}
		case "/slow":
			b.entered <- struct{}{}
			<-b.release
			_, _ = io.WriteString(w, name+" slow")
		default:
			_, _ = io.WriteString(w, name)
		}
	}))
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		b.srv.Close()
	})
	return b
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

// proxyRig is the control directory, the nginx config and the supervisor.
type proxyRig struct {
	dir, control, conf, pidFile, url, path string

	cmd  *exec.Cmd
	log  *testsupport.SyncBuffer
	done chan struct{} // closed when the supervisor has exited
	err  error         // its Wait error, once done is closed
}

func newProxyRig(t *testing.T) *proxyRig {
	t.Helper()
	path := hostTools(t)
	dir := t.TempDir()
	// As root, nginx runs its workers as nobody: let them in.
	require.NoError(t, os.Chmod(dir, 0o755))
	r := &proxyRig{dir: dir, control: filepath.Join(dir, "control"), conf: filepath.Join(dir, "nginx.conf"),
		pidFile: filepath.Join(dir, "nginx.pid"), path: path, log: &testsupport.SyncBuffer{}}
	require.NoError(t, os.Mkdir(r.control, 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "tmp"), 0o755))
	port := testsupport.FreePort(t)
	r.url = "http://127.0.0.1:" + strconv.Itoa(port)
	conf := fmt.Sprintf(`worker_processes 2;
pid %[1]s/nginx.pid;
error_log stderr notice;

events {
    worker_connections 256;
}

http {
    access_log off;
    client_body_temp_path %[1]s/tmp/client-body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;

    upstream nbms_app {
        include %[2]s/upstream.conf;
        keepalive 8;
    }

    server {
        listen 127.0.0.1:%[3]d;
        location / {
            proxy_pass http://nbms_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, r.control, port)
	require.NoError(t, os.WriteFile(r.conf, []byte(conf), 0o644))
	return r
}

func (r *proxyRig) env() []string {
	return append(os.Environ(), "PATH="+r.path, "NBMS_PROXY_CONTROL="+r.control)
}

// runSwitch runs nbms-switch to completion.
func (r *proxyRig) runSwitch(t *testing.T, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{switchScript}, args...)...)
	cmd.Env = r.env()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("nbms-switch: %v", err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// startProxy starts nbms-proxy in a process group of its own (nginx stays
// in it: daemon off), which the cleanup kills whatever happened.
func (r *proxyRig) startProxy(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command("sh", proxyScript, r.conf)
	r.cmd.Env = r.env()
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, r.cmd.Start())
	done, cmd := make(chan struct{}), r.cmd
	r.done = done
	go func() {
		r.err = cmd.Wait()
		close(done)
	}()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	})
}

func (r *proxyRig) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond until it holds; it fails at once if the supervisor
// exits meanwhile (unless exitOK), and after switchWait.
func (r *proxyRig) waitFor(t *testing.T, what string, exitOK bool, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(switchWait)
	for !cond() {
		if !exitOK && r.cmd != nil && r.exited() {
			t.Fatalf("waiting for %s: nbms-proxy exited (%v):\n%s", what, r.err, r.log)
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %s; nbms-proxy log:\n%s", what, switchWait, r.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *proxyRig) file(name string) string {
	b, err := os.ReadFile(filepath.Join(r.control, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func (r *proxyRig) exists(name string) bool {
	_, err := os.Stat(filepath.Join(r.control, name))
	return err == nil
}

// oneShot is a client with a new connection per request, so that an
// answer comes from whichever nginx workers accept now.
var oneShot = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

func getBody(url string) (int, string, error) {
	resp, err := oneShot.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// answers is whether nginx answers / with want.
func (r *proxyRig) answers(want string) bool {
	status, body, err := getBody(r.url + "/")
	return err == nil && status == http.StatusOK && body == want
}

// requireAnswers waits until nginx answers want, then asserts it keeps
// doing so.
func (r *proxyRig) requireAnswers(t *testing.T, want string) {
	t.Helper()
	r.waitFor(t, "nginx to answer "+want, false, func() bool { return r.answers(want) })
	for range 20 {
		status, body, err := getBody(r.url + "/")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, want, body)
	}
}

func upstreamFile(release string, addrs ...string) string {
	var b strings.Builder
	b.WriteString("# release " + release + "\n")
	for _, a := range addrs {
		b.WriteString("server " + a + " max_fails=0;\n")
	}
	return b.String()
}

// step runs one stage of a story whose later stages need the earlier ones.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

func TestProxySwitchesUpstreams(t *testing.T) {
	r := newProxyRig(t)
	blue := newBackend(t, "blue", true)
	green := newBackend(t, "green", true)
	notReady := newBackend(t, "not-ready", false)

	step(t, "first start: the switch leaves the upstream for the proxy", func(t *testing.T) {
		out, errOut, code := r.runSwitch(t, "blue-1", switchHost, "20", blue.addr())
		require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
		assert.Contains(t, out, "it will load the upstream of release blue-1 ("+blue.addr()+") when it starts")
		assert.Equal(t, upstreamFile("blue-1", blue.addr()), r.file("upstream.next"))
		assert.False(t, r.exists("upstream.conf"))
		assert.False(t, r.exists("upstream.next.tmp"))
	})

	r.startProxy(t) // here: it lives until the end of the test

	step(t, "first start: the proxy starts on that upstream", func(t *testing.T) {
		r.requireAnswers(t, "blue")
		assert.Equal(t, upstreamFile("blue-1", blue.addr()), r.file("upstream.conf"), "promoted")
		assert.False(t, r.exists("upstream.next"))
		assert.Equal(t, "ok blue-1\n", r.file("ack"))
		assert.True(t, r.exists("alive"), "heartbeat")
		assert.Contains(t, r.log.String(), "nbms-proxy: starting on the upstream of release blue-1")
	})

	step(t, "switch to green under load, no request lost", func(t *testing.T) {
		// The steady client: keep-alive connections, as browsers and
		// other proxies hold them, which the old workers close when they
		// go.
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, Proxy: nil}}
		defer client.CloseIdleConnections()
		var (
			total, blues, greens atomic.Int64
			failed               atomic.Int64
			failMu               sync.Mutex
			failures             []string
			stop                 = make(chan struct{})
			wg                   sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					total.Add(1)
					status, body := 0, []byte(nil)
					resp, err := client.Get(r.url + "/")
					if err == nil {
						status = resp.StatusCode
						body, err = io.ReadAll(resp.Body)
						_ = resp.Body.Close()
					}
					switch {
					case err != nil || status != http.StatusOK:
						failed.Add(1)
						failMu.Lock()
						if len(failures) < 10 {
							failures = append(failures, fmt.Sprintf("%d %q %v", status, body, err))
						}
						failMu.Unlock()
					case string(body) == "blue":
						blues.Add(1)
					case string(body) == "green":
						greens.Add(1)
					default:
						failed.Add(1)
					}
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
		defer func() {
			select {
			case <-stop:
			default:
				close(stop)
			}
			wg.Wait()
		}()
		r.waitFor(t, "requests through nginx before the switch", false, func() bool { return blues.Load() >= 100 })

		out, errOut, code := r.runSwitch(t, "green-2", switchHost, "20", green.addr())
		require.Equal(t, 0, code, "stdout: %s\nstderr: %s\nproxy:\n%s", out, errOut, r.log)
		assert.Equal(t, "nbms-switch: nginx now sends to release green-2 ("+green.addr()+")\n", out)
		assert.Equal(t, "ok green-2\n", r.file("ack"))
		assert.Equal(t, upstreamFile("green-2", green.addr()), r.file("upstream.conf"))
		assert.False(t, r.exists("upstream.next"))
		assert.False(t, r.exists("upstream.prev"))

		afterSwitch := greens.Load()
		r.waitFor(t, "the steady client to get green", false, func() bool { return greens.Load() >= afterSwitch+100 })
		close(stop)
		wg.Wait()
		t.Logf("%d requests during the switch: %d blue, %d green, %d failed", total.Load(), blues.Load(), greens.Load(), failed.Load())
		assert.Zero(t, failed.Load(), "requests lost during the switch: %v\nproxy:\n%s", failures, r.log)
		assert.Equal(t, total.Load(), blues.Load()+greens.Load())
		r.requireAnswers(t, "green")
		assert.Contains(t, r.log.String(), "nbms-proxy: switched upstream to release green-2")
	})

	step(t, "a release that is not ready is not switched to", func(t *testing.T) {
		before := r.file("upstream.conf")
		out, errOut, code := r.runSwitch(t, "not-ready-3", switchHost, "2", notReady.addr())
		assert.Equal(t, 1, code, "stdout: %s\nstderr: %s", out, errOut)
		assert.Equal(t, "nbms-switch: release not-ready-3 is not ready at http://"+notReady.addr()+"/readyz after 2s; the upstream was not switched\n", errOut)
		assert.Empty(t, out)
		assert.Equal(t, before, r.file("upstream.conf"))
		assert.False(t, r.exists("upstream.next"), "nothing written")
		assert.Equal(t, "ok green-2\n", r.file("ack"), "nothing written")
		r.requireAnswers(t, "green")
	})

	step(t, "an upstream nginx refuses is put back", func(t *testing.T) {
		before := r.file("upstream.conf")
		tmp := filepath.Join(r.control, "upstream.next.tmp")
		require.NoError(t, os.WriteFile(tmp, []byte("# release bad\nserver not a valid line;\n"), 0o644))
		require.NoError(t, os.Rename(tmp, filepath.Join(r.control, "upstream.next")))
		r.waitFor(t, "the proxy's answer", false, func() bool { return strings.HasPrefix(r.file("ack"), "refused bad:") })
		ack := r.file("ack")
		assert.Contains(t, ack, `invalid parameter "a"`, "nginx -t's message")
		assert.Equal(t, 1, strings.Count(ack, "\n"), "one line: %q", ack)
		assert.Equal(t, before, r.file("upstream.conf"), "put back")
		assert.False(t, r.exists("upstream.next"))
		assert.False(t, r.exists("upstream.prev"))
		assert.Contains(t, r.log.String(), "nbms-proxy: refused the upstream of release bad:")
		r.requireAnswers(t, "green")
	})

	step(t, "SIGQUIT stops nginx gracefully", func(t *testing.T) {
		var master int
		r.waitFor(t, "nginx's pid file", false, func() bool {
			b, err := os.ReadFile(r.pidFile)
			master, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return err == nil && master > 0
		})
		require.NoError(t, syscall.Kill(master, 0), "nginx master %d runs", master)

		// A request in flight when the stop comes finishes.
		type result struct {
			status int
			body   string
			err    error
		}
		slow := make(chan result, 1)
		go func() {
			status, body, err := getBody(r.url + "/slow")
			slow <- result{status, body, err}
		}()
		select {
		case <-green.entered:
		case <-time.After(switchWait):
			t.Fatalf("the slow request never reached green:\n%s", r.log)
		}

		require.NoError(t, r.cmd.Process.Signal(syscall.SIGQUIT))
		r.waitFor(t, "nginx to begin its graceful stop", false, func() bool {
			return strings.Contains(r.log.String(), "signal 3 (SIGQUIT) received")
		})
		assert.False(t, r.exited(), "nginx waits for the request in flight")
		close(green.release)
		res := <-slow
		require.NoError(t, res.err)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, "green slow", res.body)

		r.waitFor(t, "nbms-proxy to exit", true, r.exited)
		assert.NoError(t, r.err, "nbms-proxy exits with nginx's status, 0:\n%s", r.log)
		assert.ErrorIs(t, syscall.Kill(master, 0), syscall.ESRCH, "the nginx master is gone")
		assert.NoFileExists(t, r.pidFile, "nginx removed its pid file on a clean exit")
		assert.False(t, r.exists("alive"), "no heartbeat left behind")
		_, err := net.DialTimeout("tcp", strings.TrimPrefix(r.url, "http://"), time.Second)
		assert.Error(t, err, "nothing listens any more")
	})
}

// A running proxy (a fresh heartbeat) that never answers: the switch gives
// up after its timeout and withdraws its request. 2 s, not 1: the
// readiness gate's two probes are a second apart and its deadline is in
// whole seconds, so with 1 s a start late in a second ran out after the
// first probe.
func TestSwitchWithoutAnAck(t *testing.T) {
	r := newProxyRig(t)
	blue := newBackend(t, "blue", true)
	require.NoError(t, os.WriteFile(filepath.Join(r.control, "alive"), nil, 0o644))
	out, errOut, code := r.runSwitch(t, "blue-1", switchHost, "2", blue.addr())
	assert.Equal(t, 1, code, "stdout: %s\nstderr: %s", out, errOut)
	assert.Contains(t, errOut, "nbms-switch: the proxy did not answer the switch to release blue-1 within 2s")
	assert.Contains(t, errOut, r.control)
	assert.False(t, r.exists("upstream.next"), "withdrawn")
	assert.False(t, r.exists("ack"))
}

// A proxy that cannot start says why and exits 1.
func TestProxyWithoutAnUpstream(t *testing.T) {
	r := newProxyRig(t)
	r.startProxy(t)
	r.waitFor(t, "nbms-proxy to exit", true, r.exited)
	var exit *exec.ExitError
	require.ErrorAs(t, r.err, &exit)
	assert.Equal(t, 1, exit.ExitCode())
	assert.Contains(t, r.log.String(), "nbms-proxy: no upstream: "+filepath.Join(r.control, "upstream.conf")+" does not exist")
	assert.NoFileExists(t, r.pidFile, "nginx never started")
}

// nginx stopping by itself ends the supervisor, with nginx's status.
func TestProxyEndsWithNginx(t *testing.T) {
	r := newProxyRig(t)
	blue := newBackend(t, "blue", true)
	require.NoError(t, os.WriteFile(filepath.Join(r.control, "upstream.conf"), []byte(upstreamFile("blue-1", blue.addr())), 0o644))
	r.startProxy(t)
	r.requireAnswers(t, "blue")
	var master int
	r.waitFor(t, "nginx's pid file", false, func() bool {
		b, err := os.ReadFile(r.pidFile)
		master, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && master > 0
	})
	require.NotEqual(t, r.cmd.Process.Pid, master, "nginx is the supervisor's child, not the supervisor")
	require.NoError(t, syscall.Kill(master, syscall.SIGTERM), "a stop the supervisor did not ask for")
	r.waitFor(t, "nbms-proxy to exit", true, r.exited)
	assert.NoError(t, r.err, "nginx's status, 0:\n%s", r.log)
	assert.Contains(t, r.log.String(), "nbms-proxy: nginx exited with status 0")
}

// An upstream nginx refuses at start: the supervisor exits 1 with the
// previous upstream put back, so that a restart serves the live release.
func TestProxyRefusesABadUpstreamAtStart(t *testing.T) {
	r := newProxyRig(t)
	blue := newBackend(t, "blue", true)
	good := upstreamFile("blue-1", blue.addr())
	require.NoError(t, os.WriteFile(filepath.Join(r.control, "upstream.conf"), []byte(good), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(r.control, "upstream.next"), []byte("# release bad\nserver not a valid line;\n"), 0o644))
	r.startProxy(t)
	r.waitFor(t, "nbms-proxy to exit", true, r.exited)
	var exit *exec.ExitError
	require.ErrorAs(t, r.err, &exit, "log:\n%s", r.log)
	assert.Equal(t, 1, exit.ExitCode())
	assert.Contains(t, r.log.String(), "nbms-proxy: nginx refuses "+r.conf+":")
	assert.True(t, strings.HasPrefix(r.file("ack"), "refused bad:"), "ack: %q", r.file("ack"))
	assert.Equal(t, good, r.file("upstream.conf"), "put back")
	assert.False(t, r.exists("upstream.next"))
	assert.False(t, r.exists("upstream.prev"))

	r.startProxy(t) // the restart
	r.requireAnswers(t, "blue")
}

// A live upstream whose name does not resolve at start (its container is
// stopped): nginx would refuse it, so the supervisor waits, says so once,
// and neither exits (a restart loop) nor starts nginx; a switch that
// arrives meanwhile is the upstream it starts on.
func TestProxyWaitsForItsUpstreamToResolve(t *testing.T) {
	r := newProxyRig(t)
	blue := newBackend(t, "blue", true)
	const gone = "nbms-test-app-gone.invalid"
	require.NoError(t, os.WriteFile(filepath.Join(r.control, "upstream.conf"), []byte(upstreamFile("gone-1", gone+":8000")), 0o644))
	r.startProxy(t)
	want := "nbms-proxy: the upstream of release gone-1, " + gone + ", does not resolve (is its container stopped?); nginx starts once it does"
	r.waitFor(t, "the supervisor to say it waits", false, func() bool { return strings.Contains(r.log.String(), want) })
	// Two resolve periods: still waiting, nothing started, said once.
	time.Sleep(4 * time.Second)
	require.False(t, r.exited(), "the supervisor waits instead of exiting:\n%s", r.log)
	assert.NoFileExists(t, r.pidFile, "nginx is not started on an upstream it would refuse")
	assert.False(t, r.exists("alive"), "no heartbeat: nothing answers a switch yet")
	assert.Equal(t, 1, strings.Count(r.log.String(), "does not resolve"), r.log.String())

	out, errOut, code := r.runSwitch(t, "blue-2", switchHost, "20", blue.addr())
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out, errOut)
	r.requireAnswers(t, "blue")
	assert.Equal(t, upstreamFile("blue-2", blue.addr()), r.file("upstream.conf"))
	assert.Equal(t, "ok blue-2\n", r.file("ack"))
	assert.Contains(t, r.log.String(), "nbms-proxy: the upstream resolves: "+blue.addr()+"="+strings.Split(blue.addr(), ":")[0])
	assert.Contains(t, r.log.String(), "nbms-proxy: starting on the upstream of release blue-2")
}
