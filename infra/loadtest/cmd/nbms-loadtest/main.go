// Command nbms-loadtest measures a running NBMS stack with wrk: the public
// indicator list through the edge, straight to the app, and from a bare
// net/http server serving the bytes the app answered, in one run, as
// medians and ratios (package infra/loadtest). It seeds nothing: load the
// indicators first (infra/loadtest.SeedIndicatorsSQL, e.g. with psql in
// the db container). The app's per-client public API limit answers one
// client's load with 429s; the report counts them (non-2xx).
//
//	nbms-loadtest --edge https://nbms.example.org --app http://172.30.0.2:8000 --host nbms.example.org
//
// Exit status: 0 measured, 1 a target failed, 2 usage.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nbms-deploy/nbms/infra/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("nbms-loadtest", flag.ContinueOnError)
	edge := fs.String("edge", "", "the public entry, e.g. https://nbms.example.org (its name must resolve to the edge)")
	app := fs.String("app", "", "the app itself, e.g. http://<app container's edge address>:8000 (optional)")
	host := fs.String("host", "", "Host header for --app (the site's name; default: --edge's host)")
	caFile := fs.String("ca", "", "PEM CA certificate(s) that --edge's certificate chains to, when not a public one")
	opts := loadtest.Options{Threads: 2}
	fs.IntVar(&opts.Connections, "connections", 32, "wrk connections")
	fs.DurationVar(&opts.Duration, "duration", 15*time.Second, "each measured run")
	fs.DurationVar(&opts.Warmup, "warmup", 5*time.Second, "the unmeasured run before a target's")
	fs.IntVar(&opts.Runs, "runs", 3, "measured runs per target (the median is reported)")
	if err := fs.Parse(args); err != nil || *edge == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: nbms-loadtest --edge URL [--app URL --host NAME] [--ca FILE] [--connections N --duration D --warmup D --runs N]")
		return 2
	}
	client := http.DefaultClient
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nbms-loadtest:", err)
			return 2
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "nbms-loadtest: no certificate in", *caFile)
			return 2
		}
		client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	targets := []loadtest.Target{{Name: "edge", URL: strings.TrimSuffix(*edge, "/") + loadtest.Path}}
	if *app != "" {
		name := *host
		if name == "" {
			name = strings.Split(strings.TrimPrefix(strings.TrimPrefix(*edge, "https://"), "http://"), ":")[0]
		}
		targets = append(targets, loadtest.Target{Name: "app", URL: strings.TrimSuffix(*app, "/") + loadtest.Path,
			Header: http.Header{"Host": {name}, "X-Forwarded-Proto": {"https"}}})
	}
	body, header, err := loadtest.Fetch(ctx, client, targets[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "nbms-loadtest:", err)
		return 1
	}
	bareURL, stopBare, err := loadtest.Bare(body, header)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nbms-loadtest:", err)
		return 1
	}
	defer stopBare()
	targets = append(targets, loadtest.Target{Name: "bare", URL: bareURL + loadtest.Path})
	ms, err := loadtest.Run(ctx, opts, targets...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nbms-loadtest:", err)
		return 1
	}
	if err := loadtest.Report(os.Stdout, opts, "bare", ms); err != nil {
		return 1
	}
	return 0
}
