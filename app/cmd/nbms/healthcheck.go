package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// runHealthcheck is the container HEALTHCHECK: the final image has no curl,
// so the binary probes itself. It talks to the loopback address of the
// configured port over plain HTTP; the probe paths are exempt from the
// host allowlist and the HTTPS redirect for exactly this reason.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("path", config.LivenessPath, "probe path: "+config.LivenessPath+" (liveness) or "+config.ReadinessPath+" (readiness)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path != config.LivenessPath && *path != config.ReadinessPath {
		fmt.Fprintln(stderr, "nbms healthcheck: --path must be /healthz or /readyz")
		return exitUsage
	}
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	_, port, err := net.SplitHostPort(s.HTTPAddr)
	if err != nil {
		fmt.Fprintln(stderr, "nbms healthcheck: HTTP_ADDR:", err)
		return exitFail
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort("127.0.0.1", port) + *path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(stderr, "nbms healthcheck:", err)
		return exitFail
	}
	client := &http.Client{
		// A redirect would mean the probe is not reaching the handler.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "nbms healthcheck:", err)
		return exitFail
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "nbms healthcheck: %s answered %d\n", *path, res.StatusCode)
		return exitFail
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return exitOK
}
