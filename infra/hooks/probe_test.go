package hooks_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/hooks"
)

// reply is one scripted answer.
type reply struct {
	status   int
	body     string
	location string
	hang     bool // block until the client goes away
}

// script decides the answer to the n-th request (1-based) for a path.
type script func(path string, n int) reply

// served records what a test server saw, in order.
type served struct {
	mu       sync.Mutex
	paths    []string
	hosts    []string
	times    []time.Time
	perPath  map[string]int
	uaSeen   string
	onSecond chan struct{} // closed at the second request, if non-nil
}

func (s *served) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perPath[path]
}

func (s *served) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

func handler(rec *served, sc script) http.Handler {
	rec.perPath = map[string]int{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.perPath[r.URL.Path]++
		n := rec.perPath[r.URL.Path]
		rec.paths = append(rec.paths, r.URL.Path)
		rec.hosts = append(rec.hosts, r.Host)
		rec.times = append(rec.times, time.Now())
		rec.uaSeen = r.UserAgent()
		if len(rec.paths) == 2 && rec.onSecond != nil {
			close(rec.onSecond)
		}
		rec.mu.Unlock()

		a := sc(r.URL.Path, n)
		if a.hang {
			<-r.Context().Done()
			return
		}
		if a.location != "" {
			w.Header().Set("Location", a.location)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		fmt.Fprint(w, a.body)
	})
}

func newServer(t *testing.T, sc script) (*httptest.Server, *served) {
	t.Helper()
	rec := &served{}
	srv := httptest.NewServer(handler(rec, sc))
	t.Cleanup(srv.Close)
	return srv, rec
}

const (
	okBody   = `{"status":"ok"}`
	failBody = `{"status":"fail","checks":{"postgres":{"status":"fail","error":"connection refused"}}}`
)

func always(status int, body string) script {
	return func(string, int) reply { return reply{status: status, body: body} }
}

// fast keeps tests quick: tiny backoffs, a short overall timeout.
func fast(base string) hooks.Options {
	return hooks.Options{
		BaseURL:        base,
		Timeout:        300 * time.Millisecond,
		RequestTimeout: 100 * time.Millisecond,
		InitialBackoff: time.Millisecond,
		MaxBackoff:     5 * time.Millisecond,
	}
}

func TestProbeSucceeds(t *testing.T) {
	tests := []struct {
		name       string
		script     script
		basePath   string
		opts       func(*hooks.Options)
		wantSeen   []string
		wantPerTry map[string]int // attempts per path in the Result
	}{
		{
			name:       "ready immediately: healthz then readyz, one attempt each",
			script:     always(http.StatusOK, okBody),
			wantSeen:   []string{"/healthz", "/readyz"},
			wantPerTry: map[string]int{"/healthz": 1, "/readyz": 1},
		},
		{
			name: "ready late: readyz answers 503 three times, then 200",
			script: func(path string, n int) reply {
				if path == "/readyz" && n <= 3 {
					return reply{status: http.StatusServiceUnavailable, body: failBody}
				}
				return reply{status: http.StatusOK, body: okBody}
			},
			wantSeen:   []string{"/healthz", "/readyz", "/readyz", "/readyz", "/readyz"},
			wantPerTry: map[string]int{"/healthz": 1, "/readyz": 4},
		},
		{
			name: "healthz late: readyz is not asked before healthz is ready",
			script: func(path string, n int) reply {
				if path == "/healthz" && n <= 2 {
					return reply{status: http.StatusBadGateway, body: "<html>502 Bad Gateway</html>"}
				}
				return reply{status: http.StatusOK, body: okBody}
			},
			wantSeen:   []string{"/healthz", "/healthz", "/healthz", "/readyz"},
			wantPerTry: map[string]int{"/healthz": 3, "/readyz": 1},
		},
		{
			name:       "three consecutive 200s required: three requests per path",
			script:     always(http.StatusOK, okBody),
			opts:       func(o *hooks.Options) { o.SuccessesRequired = 3 },
			wantSeen:   []string{"/healthz", "/healthz", "/healthz", "/readyz", "/readyz", "/readyz"},
			wantPerTry: map[string]int{"/healthz": 3, "/readyz": 3},
		},
		{
			name:       "a path prefix in BaseURL is kept",
			script:     always(http.StatusOK, okBody),
			basePath:   "/nbms/",
			wantSeen:   []string{"/nbms/healthz", "/nbms/readyz"},
			wantPerTry: map[string]int{"/healthz": 1, "/readyz": 1},
		},
		{
			name:       "custom paths, in the given order",
			script:     always(http.StatusOK, okBody),
			opts:       func(o *hooks.Options) { o.Paths = []string{"/readyz", "/static/app.css"} },
			wantSeen:   []string{"/readyz", "/static/app.css"},
			wantPerTry: map[string]int{"/readyz": 1, "/static/app.css": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := newServer(t, tt.script)
			o := fast(srv.URL + tt.basePath)
			o.Timeout = 5 * time.Second // success must not depend on timing
			if tt.opts != nil {
				tt.opts(&o)
			}

			res, err := hooks.Probe(context.Background(), o)
			require.NoError(t, err)
			require.NotNil(t, res)

			assert.Equal(t, tt.wantSeen, rec.all())
			require.Len(t, res.Paths, len(tt.wantPerTry))
			for _, pr := range res.Paths {
				assert.True(t, pr.Ready, pr.Path)
				assert.Equal(t, tt.wantPerTry[pr.Path], pr.Attempts, pr.Path)
				assert.Equal(t, http.StatusOK, pr.LastStatus, pr.Path)
				assert.Equal(t, okBody, pr.LastBody, pr.Path)
				assert.Empty(t, pr.LastError, pr.Path)
				assert.Positive(t, pr.Duration, pr.Path)
			}
			assert.Positive(t, res.Duration)
			assert.Equal(t, "nbms-post-deploy-probe", rec.uaSeen)
		})
	}
}

func TestProbeFails(t *testing.T) {
	bigBody := `{"status":"fail","detail":"` + strings.Repeat("x", 2000) + `"}`
	alternate := func(path string, n int) reply {
		if path == "/readyz" && n%2 == 0 {
			return reply{status: http.StatusServiceUnavailable, body: failBody}
		}
		return reply{status: http.StatusOK, body: okBody}
	}
	redirect := func(path string, n int) reply {
		if path == "/readyz" {
			return reply{status: http.StatusFound, location: "/login/?next=/readyz", body: "Found"}
		}
		return reply{status: http.StatusOK, body: okBody}
	}
	tests := []struct {
		name   string
		script script
		opts   func(*hooks.Options)
		// wantIn must all appear in the error message.
		wantIn      []string
		wantNotIn   []string
		wantReached int // len(Result.Paths)
		check       func(t *testing.T, last hooks.PathResult)
	}{
		{
			name:        "never ready: names the path, last status and body",
			script:      always(http.StatusServiceUnavailable, failBody),
			wantIn:      []string{"post-deploy check failed: /healthz not ready after 300ms (", "attempts): last answer 503 " + failBody},
			wantReached: 1,
			check: func(t *testing.T, last hooks.PathResult) {
				assert.Equal(t, http.StatusServiceUnavailable, last.LastStatus)
				assert.Equal(t, failBody, last.LastBody)
				assert.False(t, last.Ready)
			},
		},
		{
			name: "healthz fine, readyz never: names readyz",
			script: func(path string, _ int) reply {
				if path == "/readyz" {
					return reply{status: http.StatusServiceUnavailable, body: failBody}
				}
				return reply{status: http.StatusOK, body: okBody}
			},
			wantIn:      []string{"/readyz not ready after 300ms", "last answer 503 " + failBody},
			wantNotIn:   []string{"/healthz"},
			wantReached: 2,
		},
		{
			name:   "flapping with three 200s required: says it flapped",
			script: alternate,
			opts:   func(o *hooks.Options) { o.SuccessesRequired = 3 },
			// The failing answer is in the message even when the very last one was a 200.
			wantIn:      []string{"/readyz flapped (", "never answered 200 3 times in a row", "after 300ms", "503 " + failBody},
			wantReached: 2,
			check: func(t *testing.T, last hooks.PathResult) {
				assert.Positive(t, last.Flaps)
				assert.False(t, last.Ready)
			},
		},
		{
			name:        "a redirect is not readiness",
			script:      redirect,
			wantIn:      []string{"/readyz not ready", "last answer 302 redirect to /login/?next=/readyz (a redirect is not readiness) Found"},
			wantReached: 2,
			check: func(t *testing.T, last hooks.PathResult) {
				assert.Equal(t, http.StatusFound, last.LastStatus)
				assert.Equal(t, "/login/?next=/readyz", last.LastLocation)
			},
		},
		{
			name:   "a redirect is not readiness even with a caller client that follows redirects",
			script: redirect,
			opts: func(o *hooks.Options) {
				o.HTTPClient = &http.Client{} // follows up to 10 redirects by default
			},
			wantIn:      []string{"last answer 302 redirect to /login/"},
			wantReached: 2,
		},
		{
			name:        "a long body is cut to 512 bytes",
			script:      always(http.StatusServiceUnavailable, bigBody),
			wantIn:      []string{"last answer 503 " + bigBody[:512] + " …(truncated)"},
			wantNotIn:   []string{bigBody[:513]},
			wantReached: 1,
			check: func(t *testing.T, last hooks.PathResult) {
				assert.Len(t, last.LastBody, 512)
				assert.True(t, last.LastBodyTruncated)
			},
		},
		{
			name:        "an empty body is said to be empty",
			script:      always(http.StatusInternalServerError, ""),
			wantIn:      []string{"last answer 500 (empty body)"},
			wantReached: 1,
		},
		{
			name:   "a 200 seen once then the deadline: not enough in a row",
			script: always(http.StatusOK, okBody),
			opts: func(o *hooks.Options) {
				o.SuccessesRequired = 2
				o.InitialBackoff, o.MaxBackoff = time.Hour, time.Hour // the confirmation never comes in time
			},
			wantIn:      []string{"/healthz answered 200 only 1 of the 2 times in a row required after 300ms (1 attempt): last answer 200 " + okBody},
			wantReached: 1,
		},
		{
			name: "an answer slower than RequestTimeout is no answer",
			script: func(string, int) reply {
				time.Sleep(150 * time.Millisecond)
				return reply{status: http.StatusOK, body: okBody}
			},
			opts:        func(o *hooks.Options) { o.RequestTimeout = 50 * time.Millisecond },
			wantIn:      []string{"/healthz not ready after 300ms", "last error: ", "no answer within 50ms (RequestTimeout)"},
			wantReached: 1,
			check: func(t *testing.T, last hooks.PathResult) {
				assert.Zero(t, last.LastStatus)
				assert.Empty(t, last.LastBody)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case waits out its own 300ms timeout
			srv, rec := newServer(t, tt.script)
			o := fast(srv.URL)
			if tt.opts != nil {
				tt.opts(&o)
			}

			res, err := hooks.Probe(context.Background(), o)
			require.Error(t, err)
			for _, s := range tt.wantIn {
				assert.Contains(t, err.Error(), s)
			}
			for _, s := range tt.wantNotIn {
				assert.NotContains(t, err.Error(), s)
			}
			assert.False(t, errors.Is(err, context.Canceled), "our own timeout is not the caller's cancellation")

			require.NotNil(t, res)
			require.Len(t, res.Paths, tt.wantReached)
			last := res.Paths[len(res.Paths)-1]
			assert.False(t, last.Ready)
			// The message reports the attempts the Result records, and the
			// server saw no request the Result does not count. It may have
			// seen fewer: on a loaded machine an attempt can end (deadline,
			// RequestTimeout) before its request reaches the handler, so
			// how many fewer is timing, not behaviour.
			assert.Contains(t, err.Error(), fmt.Sprintf("(%d attempt", last.Attempts))
			seen := rec.count(last.Path)
			assert.LessOrEqual(t, seen, last.Attempts,
				"server saw %d requests for %s, Result says %d attempts", seen, last.Path, last.Attempts)
			if tt.check != nil {
				tt.check(t, last)
			}
		})
	}
}

func TestProbeConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there any more

	res, err := hooks.Probe(context.Background(), fast("http://"+addr))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "post-deploy check failed: /healthz not ready after 300ms")
	assert.Contains(t, err.Error(), "last error: ")
	assert.Contains(t, err.Error(), "connection refused")
	require.Len(t, res.Paths, 1)
	assert.Zero(t, res.Paths[0].LastStatus)
	assert.Contains(t, res.Paths[0].LastError, "connection refused")
	assert.Greater(t, res.Paths[0].Attempts, 1, "a refused connection is retried")
}

func TestProbeStopsWhenContextEnds(t *testing.T) {
	tests := []struct {
		name   string
		script script
		// callerTimeout, when set, is the caller's own deadline; otherwise the
		// caller cancels once the server has seen two requests.
		callerTimeout time.Duration
		wantErr       error
	}{
		{
			name:    "cancelled between attempts",
			script:  always(http.StatusServiceUnavailable, failBody),
			wantErr: context.Canceled,
		},
		{
			name: "cancelled during an attempt that hangs",
			script: func(_ string, n int) reply {
				return reply{status: http.StatusServiceUnavailable, body: failBody, hang: n >= 2}
			},
			wantErr: context.Canceled,
		},
		{
			name:          "the caller's deadline, shorter than Timeout, wins",
			script:        always(http.StatusServiceUnavailable, failBody),
			callerTimeout: 100 * time.Millisecond,
			wantErr:       context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := newServer(t, tt.script)
			rec.onSecond = make(chan struct{})
			o := fast(srv.URL)
			o.Timeout, o.RequestTimeout = time.Minute, 30*time.Second
			o.InitialBackoff, o.MaxBackoff = 10*time.Millisecond, 10*time.Millisecond

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.callerTimeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.callerTimeout)
				defer cancel()
			} else {
				go func() {
					<-rec.onSecond
					cancel()
				}()
			}

			type outcome struct {
				res *hooks.Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := hooks.Probe(ctx, o)
				done <- outcome{res, err}
			}()
			select {
			case got := <-done:
				require.Error(t, got.err)
				assert.ErrorIs(t, got.err, tt.wantErr)
				assert.Contains(t, got.err.Error(), "post-deploy check interrupted while /healthz was not ready")
				assert.Contains(t, got.err.Error(), "last answer 503 "+failBody)
				require.Len(t, got.res.Paths, 1)
				assert.GreaterOrEqual(t, got.res.Paths[0].Attempts, 2)
			case <-time.After(time.Second):
				// Generous: prompt means well under a second, against a
				// Timeout of a minute and a RequestTimeout of 30s.
				t.Fatal("Probe did not return after its context ended")
			}
		})
	}
}

func TestProbeTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(handler(&served{}, always(http.StatusOK, okBody)))
	// The refused handshakes are the point of some cases; keep them out of the log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	testCA := x509.NewCertPool()
	testCA.AddCert(srv.Certificate())

	tests := []struct {
		name    string
		client  *http.Client
		host    string
		wantErr []string // empty: success
	}{
		{
			name:    "default client verifies TLS: a self-signed test cert is refused",
			wantErr: []string{"/healthz not ready", "certificate"},
		},
		{
			name:   "a client trusting the test CA passes",
			client: srv.Client(),
		},
		{
			name:   "default client with the test CA and a Host override verifies the Host's name",
			client: hooks.DefaultClient("example.com", testCA), // the name in httptest's cert
			host:   "example.com",
		},
		{
			name:    "default client with the test CA refuses a cert not valid for the Host",
			client:  hooks.DefaultClient("nbms.example.org", testCA),
			host:    "nbms.example.org",
			wantErr: []string{"/healthz not ready", "not nbms.example.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fast(srv.URL)
			o.HTTPClient, o.Host = tt.client, tt.host
			res, err := hooks.Probe(context.Background(), o)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				require.Len(t, res.Paths, 2)
				assert.True(t, res.Paths[1].Ready)
				return
			}
			require.Error(t, err)
			for _, s := range tt.wantErr {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

func TestProbeSendsHostOverride(t *testing.T) {
	srv, rec := newServer(t, always(http.StatusOK, okBody))
	o := fast(srv.URL)
	o.Host = "nbms.example.org"
	_, err := hooks.Probe(context.Background(), o)
	require.NoError(t, err)
	assert.Equal(t, []string{"nbms.example.org", "nbms.example.org"}, rec.hosts)
}

// The following tests replace the package's jitter, so they are not parallel.

func TestProbeBackoffSchedule(t *testing.T) {
	const initial, maxWait = 2 * time.Millisecond, 16 * time.Millisecond
	tests := []struct {
		name      string
		script    script
		successes int
		// wantWaits is the exact sequence of backoff ceilings asked of the
		// jitter; the fixed waits between confirmations are not jittered.
		wantWaits []time.Duration
		wantSeen  int
		checkGaps bool
	}{
		{
			name: "doubling from InitialBackoff, capped at MaxBackoff",
			script: func(path string, n int) reply {
				if path == "/healthz" && n <= 7 {
					return reply{status: http.StatusServiceUnavailable}
				}
				return reply{status: http.StatusOK}
			},
			successes: 1,
			wantWaits: []time.Duration{2, 4, 8, 16, 16, 16, 16},
			wantSeen:  9, // 8 for healthz, 1 for readyz
			checkGaps: true,
		},
		{
			name: "the schedule restarts after a 200",
			script: func(path string, n int) reply {
				// healthz: 503 503 503 200 503 503 200 200
				if path == "/healthz" && n != 4 && n < 7 {
					return reply{status: http.StatusServiceUnavailable}
				}
				return reply{status: http.StatusOK}
			},
			successes: 2,
			wantWaits: []time.Duration{2, 4, 8, 2, 4},
			wantSeen:  8 + 2,
		},
		{
			name: "each path starts its own schedule",
			script: func(_ string, n int) reply {
				if n <= 2 {
					return reply{status: http.StatusServiceUnavailable}
				}
				return reply{status: http.StatusOK}
			},
			successes: 1,
			wantWaits: []time.Duration{2, 4, 2, 4},
			wantSeen:  6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []time.Duration
			hooks.SetJitter(t, func(ceiling time.Duration) time.Duration {
				mu.Lock()
				defer mu.Unlock()
				asked = append(asked, ceiling/time.Millisecond)
				return ceiling // the longest wait full jitter allows
			})
			srv, rec := newServer(t, tt.script)
			o := fast(srv.URL)
			o.Timeout = 10 * time.Second
			o.InitialBackoff, o.MaxBackoff = initial, maxWait
			o.SuccessesRequired = tt.successes

			_, err := hooks.Probe(context.Background(), o)
			require.NoError(t, err)
			assert.Equal(t, tt.wantWaits, asked)
			assert.Len(t, rec.all(), tt.wantSeen)

			// Timers never fire early, so each gap the server saw is at least
			// the wait that preceded it (a lower bound only: not a timing race).
			if tt.checkGaps {
				for i, w := range tt.wantWaits {
					gap := rec.times[i+1].Sub(rec.times[i])
					assert.GreaterOrEqual(t, gap, w*time.Millisecond, "gap before request %d", i+2)
				}
			}
		})
	}
}

func TestProbeNeverSleepsPastTheDeadline(t *testing.T) {
	hooks.SetJitter(t, func(ceiling time.Duration) time.Duration { return ceiling })
	srv, rec := newServer(t, always(http.StatusServiceUnavailable, failBody))
	o := fast(srv.URL)
	o.Timeout = 200 * time.Millisecond
	o.InitialBackoff, o.MaxBackoff = time.Hour, time.Hour

	done := make(chan error, 1)
	go func() {
		_, err := hooks.Probe(context.Background(), o)
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "/healthz not ready after 200ms (1 attempt): last answer 503")
		assert.Equal(t, 1, rec.count("/healthz"), "an hour's backoff allows exactly one attempt")
	case <-time.After(5 * time.Second):
		t.Fatal("Probe slept past its deadline")
	}
}

func TestFullJitterStaysBelowTheCeiling(t *testing.T) {
	const ceiling = 100 * time.Millisecond
	distinct := map[time.Duration]bool{}
	for range 1000 {
		d := hooks.FullJitter(ceiling)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, ceiling)
		distinct[d] = true
	}
	assert.Greater(t, len(distinct), 100, "full jitter spreads the waits")
	assert.Zero(t, hooks.FullJitter(0))
}

func TestProbeProgressLinesCarryNoBody(t *testing.T) {
	const secretish = `{"status":"fail","error":"password authentication failed for user nbms: hunter2"}`
	srv, _ := newServer(t, func(path string, n int) reply {
		if n <= 2 {
			return reply{status: http.StatusServiceUnavailable, body: secretish}
		}
		return reply{status: http.StatusOK, body: okBody}
	})
	var mu sync.Mutex
	var lines []string
	o := fast(srv.URL)
	o.Timeout = 5 * time.Second
	o.Logf = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	_, err := hooks.Probe(context.Background(), o)
	require.NoError(t, err)

	require.Len(t, lines, 6) // healthz 503, 503, ready; readyz 503, 503, ready
	assert.Contains(t, lines[0], "/healthz attempt 1: 503; next attempt in")
	assert.Contains(t, lines[2], "/healthz ready (attempt 3)")
	assert.Contains(t, lines[5], "/readyz ready (attempt 3)")
	for _, l := range lines {
		assert.NotContains(t, l, "hunter2")
		assert.NotContains(t, l, "password")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    hooks.Options
		wantErr []string // empty: valid
	}{
		{name: "just a BaseURL", opts: hooks.Options{BaseURL: "https://nbms.example.org"}},
		{name: "IP with Host override and port", opts: hooks.Options{BaseURL: "https://127.0.0.1:8443", Host: "nbms.example.org:443"}},
		{name: "everything set", opts: hooks.Options{
			BaseURL: "http://127.0.0.1:8080/nbms", Paths: []string{"/healthz"}, Timeout: time.Second,
			RequestTimeout: time.Second, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, SuccessesRequired: 3,
		}},
		{name: "MaxBackoff below the default InitialBackoff", opts: hooks.Options{BaseURL: "http://x", MaxBackoff: 100 * time.Millisecond}},
		{name: "InitialBackoff above the default MaxBackoff", opts: hooks.Options{BaseURL: "http://x", InitialBackoff: time.Minute}},
		{name: "Timeout below the default RequestTimeout", opts: hooks.Options{BaseURL: "http://x", Timeout: time.Second}},

		{name: "no BaseURL", opts: hooks.Options{}, wantErr: []string{`BaseURL "" is not a URL`}},
		{name: "relative BaseURL", opts: hooks.Options{BaseURL: "nbms.example.org"}, wantErr: []string{"must use http or https", "has no host"}},
		{name: "ftp BaseURL", opts: hooks.Options{BaseURL: "ftp://nbms.example.org"}, wantErr: []string{"must use http or https"}},
		{name: "credentials in BaseURL", opts: hooks.Options{BaseURL: "https://admin:s3cret@nbms.example.org"}, wantErr: []string{"must not contain credentials"}},
		{name: "query in BaseURL", opts: hooks.Options{BaseURL: "https://nbms.example.org/?token=1"}, wantErr: []string{"must not have a query or fragment"}},
		{name: "path without slash", opts: hooks.Options{BaseURL: "http://x", Paths: []string{"readyz"}}, wantErr: []string{`path "readyz" must start with /`}},
		{name: "path with query", opts: hooks.Options{BaseURL: "http://x", Paths: []string{"/readyz?verbose"}}, wantErr: []string{`path "/readyz?verbose"`}},
		{name: "Host with a scheme", opts: hooks.Options{BaseURL: "http://x", Host: "https://nbms.example.org"}, wantErr: []string{"must be a host name with an optional port"}},
		{name: "Host with only a port", opts: hooks.Options{BaseURL: "http://x", Host: ":443"}, wantErr: []string{"has no host name"}},
		{name: "negative durations", opts: hooks.Options{BaseURL: "http://x", Timeout: -1, RequestTimeout: -1, InitialBackoff: -1, MaxBackoff: -1}, wantErr: []string{
			"Timeout must not be negative", "RequestTimeout must not be negative", "InitialBackoff must not be negative", "MaxBackoff must not be negative",
		}},
		{name: "RequestTimeout longer than Timeout", opts: hooks.Options{BaseURL: "http://x", Timeout: time.Second, RequestTimeout: 2 * time.Second}, wantErr: []string{"RequestTimeout 2s is longer than Timeout 1s"}},
		{name: "InitialBackoff longer than MaxBackoff", opts: hooks.Options{BaseURL: "http://x", InitialBackoff: 2 * time.Second, MaxBackoff: time.Second}, wantErr: []string{"InitialBackoff 2s is longer than MaxBackoff 1s"}},
		{name: "negative SuccessesRequired", opts: hooks.Options{BaseURL: "http://x", SuccessesRequired: -1}, wantErr: []string{"SuccessesRequired must not be negative"}},
		{name: "every problem at once", opts: hooks.Options{BaseURL: "ftp://x", Paths: []string{"x"}, SuccessesRequired: -2}, wantErr: []string{
			"must use http or https", `path "x"`, "SuccessesRequired",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "post-deploy probe options: "), err.Error())
			for _, s := range tt.wantErr {
				assert.Contains(t, err.Error(), s)
			}
			assert.NotContains(t, err.Error(), "s3cret", "credentials never reach the message")

			// Probe refuses the same options before sending anything.
			res, perr := hooks.Probe(context.Background(), tt.opts)
			assert.Nil(t, res)
			assert.Equal(t, err.Error(), perr.Error())
		})
	}
}

func FuzzOneLine(f *testing.F) {
	for _, s := range []string{"", okBody, "a\nb\r\n\tc", "\xff\xfe", "é"[:1], "  x  ", "\x00\x1b[31mred"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := hooks.OneLine(b)
		require.True(t, strings.ToValidUTF8(s, "") == s, "valid UTF-8")
		require.LessOrEqual(t, len(s), len(b))
		require.False(t, strings.ContainsAny(s, "\r\n\x00"), "one line")
		require.Equal(t, strings.TrimSpace(s), s)
	})
}

func FuzzValidateNeverPanics(f *testing.F) {
	f.Add("https://nbms.example.org", "", "/readyz")
	f.Add("http://127.0.0.1:8080/x/", "nbms.example.org:443", "/healthz")
	f.Add("https://u:p@h/?q#f", "[::1]:443", "readyz")
	f.Add("%zz", "a b", "/x?y")
	f.Fuzz(func(t *testing.T, base, host, path string) {
		o := hooks.Options{BaseURL: base, Host: host, Paths: []string{path}}
		if err := o.Validate(); err != nil {
			assert.NotEmpty(t, err.Error())
			return
		}
		// A valid probe target is http(s) with a host and a rooted path.
		lower := strings.ToLower(base)
		assert.True(t, strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://"), base)
		assert.NotContains(t, base, "@", "no credentials")
		assert.True(t, strings.HasPrefix(path, "/"), path)
	})
}
