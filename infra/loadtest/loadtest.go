// Package loadtest measures an NBMS stack under load from the outside with
// wrk (Debian's package): the same request through the edge (nginx over
// TLS), straight to the app, and to a bare net/http server that serves the
// bytes the app answered, each in the same run on the same machine, so the
// figures are read as ratios against that baseline. It reports; it never
// decides whether a figure is good enough.
//
// Traffic is the other kind of load: a few paced request streams that keep
// a deployed stack busy while it is changed (a deployment, a database
// restart) and count every request that failed.
package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// SeedIndicatorsSQL inserts $1 published indicators LOAD-0001... into the
// app's database: the data the load benchmark reads.
const SeedIndicatorsSQL = `INSERT INTO indicators (code, title, description, unit, framework_target, published)
SELECT 'LOAD-' || lpad(n::text, 4, '0'), 'Load indicator ' || n, 'Seeded for the load benchmark',
       '%', 'GBF Target ' || (n % 23 + 1), true
FROM generate_series(1, $1) AS n
ON CONFLICT DO NOTHING`

// Indicators is how many indicators the benchmark seeds.
const Indicators = 1000

// Path is the request under load: the first page of the public indicator
// list, as a portal asks for it.
const Path = "/api/public/indicators?limit=50"

// Target is one place the load goes.
type Target struct {
	Name string
	// URL is what wrk requests. Its host must resolve and, for https, be
	// the name the server's certificate and nginx's server_name carry (wrk
	// sends it as SNI and does not verify the certificate).
	URL string
	// Header is sent with every request (a Host for an address URL).
	Header http.Header
}

// Options shape every measurement of a run.
type Options struct {
	// Wrk is the wrk binary; default "wrk" from PATH.
	Wrk string
	// Connections and Threads are wrk's -c and -t.
	Connections, Threads int
	// Duration is each measured run; Warmup is one unmeasured run first.
	Duration, Warmup time.Duration
	// Runs is how many measured runs give the median.
	Runs int
}

// Result is what one wrk run reported.
type Result struct {
	RequestsPerSec float64
	P50, P99       time.Duration
	Requests       int
	// Non2xx counts non-2xx/3xx answers; Errors socket errors. A
	// measurement with either is of something else than the target.
	Non2xx, Errors int
}

// Measurement is a target's runs and their medians.
type Measurement struct {
	Target Target
	Runs   []Result
	Median Result
}

// Run measures targets one after the other: a warm-up, then opts.Runs runs
// each, and the medians.
func Run(ctx context.Context, opts Options, targets ...Target) ([]Measurement, error) {
	if opts.Wrk == "" {
		opts.Wrk = "wrk"
	}
	var out []Measurement
	for _, t := range targets {
		if opts.Warmup > 0 {
			if _, err := runWrk(ctx, opts, t, opts.Warmup); err != nil {
				return out, fmt.Errorf("%s: warm-up: %w", t.Name, err)
			}
		}
		m := Measurement{Target: t}
		for range max(opts.Runs, 1) {
			r, err := runWrk(ctx, opts, t, opts.Duration)
			if err != nil {
				return out, fmt.Errorf("%s: %w", t.Name, err)
			}
			m.Runs = append(m.Runs, r)
		}
		m.Median = median(m.Runs)
		out = append(out, m)
	}
	return out, nil
}

func runWrk(ctx context.Context, opts Options, t Target, d time.Duration) (Result, error) {
	args := []string{
		"-c", strconv.Itoa(opts.Connections), "-t", strconv.Itoa(max(opts.Threads, 1)),
		"-d", strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1)) + "s", "--latency",
	}
	for name, values := range t.Header {
		for _, v := range values {
			args = append(args, "-H", name+": "+v)
		}
	}
	cmd := exec.CommandContext(ctx, opts.Wrk, append(args, t.URL)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return Parse(string(out))
}

// Parse reads wrk --latency's report.
func Parse(report string) (Result, error) {
	var r Result
	var seen struct{ rps, p50, p99 bool }
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk report: %q: %w", sc.Text(), err)
			}
			r.RequestsPerSec, seen.rps = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseLatency(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk report: %q: %w", sc.Text(), err)
			}
			if f[0] == "50%" {
				r.P50, seen.p50 = d, true
			} else {
				r.P99, seen.p99 = d, true
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.Atoi(f[0])
		case strings.HasPrefix(sc.Text(), "  Non-2xx or 3xx responses:"):
			r.Non2xx, _ = strconv.Atoi(f[len(f)-1])
		case len(f) > 0 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				r.Errors += n
			}
		}
	}
	if !seen.rps || !seen.p50 || !seen.p99 {
		return r, errors.New("wrk report without Requests/sec and the 50%/99% latencies (was --latency given?)")
	}
	return r, nil
}

// parseLatency reads wrk's "313.00us", "6.23ms", "1.02s", "2.00m".
func parseLatency(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("unknown latency unit in %q", s)
}

// median takes each figure's median over the runs (the errors: the worst).
func median(runs []Result) Result {
	pick := func(get func(Result) float64) float64 {
		vs := make([]float64, len(runs))
		for i, r := range runs {
			vs[i] = get(r)
		}
		slices.Sort(vs)
		if len(vs)%2 == 1 {
			return vs[len(vs)/2]
		}
		return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	var m Result
	m.RequestsPerSec = pick(func(r Result) float64 { return r.RequestsPerSec })
	m.P50 = time.Duration(pick(func(r Result) float64 { return float64(r.P50) }))
	m.P99 = time.Duration(pick(func(r Result) float64 { return float64(r.P99) }))
	m.Requests = int(pick(func(r Result) float64 { return float64(r.Requests) }))
	for _, r := range runs {
		m.Non2xx = max(m.Non2xx, r.Non2xx)
		m.Errors = max(m.Errors, r.Errors)
	}
	return m
}

// Bare serves, on a loopback port, exactly body with header, for every
// request: the baseline a stack is compared with, as fast as net/http
// answers those bytes. It returns its URL and a stop function.
func Bare(body []byte, header http.Header) (url string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			for name, values := range header {
				w.Header()[name] = values
			}
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(lis) }()
	return "http://" + lis.Addr().String(), func() { _ = srv.Close() }, nil
}

// Fetch gets what a target answers (once, with http.Client): the body and
// content headers the bare baseline serves.
func Fetch(ctx context.Context, client *http.Client, t Target) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", t.URL, nil)
	if err != nil {
		return nil, nil, err
	}
	for name, values := range t.Header {
		req.Header[name] = values
	}
	if host := t.Header.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s answered %d: %.200s", t.URL, resp.StatusCode, body)
	}
	h := http.Header{}
	for _, name := range []string{"Content-Type", "Cache-Control", "Etag", "Vary"} {
		if v := resp.Header.Values(name); len(v) > 0 {
			h[name] = v
		}
	}
	return body, h, nil
}

// Report writes the medians as a table, with each target's requests per
// second and p50 as a ratio of the baseline's (the target named baseline).
func Report(w io.Writer, opts Options, baseline string, ms []Measurement) error {
	var base *Result
	for i := range ms {
		if ms[i].Target.Name == baseline {
			base = &ms[i].Median
		}
	}
	fmt.Fprintf(w, "medians of %d × %s runs after a %s warm-up, %d connections, %d threads\n",
		max(opts.Runs, 1), opts.Duration, opts.Warmup, opts.Connections, max(opts.Threads, 1))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tp50\tp99\tnon-2xx\terrors\treq/s vs "+baseline+"\t")
	for _, m := range ms {
		ratio := "-"
		if base != nil && base.RequestsPerSec > 0 {
			ratio = fmt.Sprintf("%.2f", m.Median.RequestsPerSec/base.RequestsPerSec)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%d\t%s\t\n", m.Target.Name, m.Median.RequestsPerSec,
			m.Median.P50.Round(10*time.Microsecond), m.Median.P99.Round(10*time.Microsecond), m.Median.Non2xx, m.Median.Errors, ratio)
	}
	return tw.Flush()
}
