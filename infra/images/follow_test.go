package images

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/stacks"
)

// This file runs the proxy image the way the program does (its supervisor
// under the files prologue, uid 101, read-only root, the rendered config
// with the switch's upstream file, restart unless-stopped) on a real edge
// network, in front of a stand-in for the app release, and moves the
// stand-in to other addresses the ways Docker does: a restart that finds
// its old address taken, a reconnect, a proxy that restarts while the app
// is stopped. nginx must follow the release's name each time, and its
// health path must report the outage in between.

// standInConf is the app release's stand-in: nginx (the proxy image's
// own, as uid 101) on the app's port, answering every path, /readyz and
// /healthz included, with the address the request came in on.
const standInConf = `worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {
    worker_connections 64;
}
http {
    access_log off;
    client_body_temp_path /tmp/client-body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen 8000;
        default_type text/plain;
        location / {
            return 200 "app at $server_addr\n";
        }
    }
}`

// followBound bounds each wait of this test: a failure, never a timing
// assertion (the supervisor resolves every 2 s; each wait takes a few).
const followBound = 60 * time.Second

func TestProxyFollowsTheApp(t *testing.T) {
	e, base, baseID := newEngine(t)
	suffix := randomHex(t, 4)
	name := func(role string) string { return namePrefix + suffix + "-" + role }
	container := func(role string) string {
		c := name(role)
		e.cleanup(t, "rm", "-f", "-v", c)
		return c
	}

	image := namePrefix + "nginx:" + suffix
	e.cleanup(t, "image", "rm", image)
	_, took, err := e.build(image, "nginx", nginxDockerfile, "", []string{"BASE_IMAGE=" + base, "BASE_IMAGE_ID=" + baseID}, nil)
	require.NoError(t, err)
	t.Logf("built %s in %s", image, took.Round(100*time.Millisecond))

	edge := name("edge")
	subnet := netip.MustParsePrefix(createEdgeNetwork(t, e, edge))
	control := name("proxy-control")
	e.run(t, nil, "volume", "create", control)
	e.cleanup(t, "volume", "rm", "-f", control)
	controlMount := control + ":/var/lib/nbms-proxy"

	// The release as the program names it, <stack>-app-<release>, started
	// at an address Docker picks.
	const releaseID = "0123456789ab"
	app := container("app-" + releaseID)
	e.run(t, nil, append(append(append([]string{"run", "-d", "--name", app, "--network", edge, "--restart", "unless-stopped", "--no-healthcheck"},
		hardened("101:101")...), tmpfs("/tmp", 8)...),
		prologue(image, [][2]string{{"/tmp/nbms/app.conf", standInConf}}, "nginx", "-e", "stderr", "-c", "/tmp/nbms/app.conf", "-g", "daemon off;")...)...)
	appIP := func() string {
		return e.run(t, nil, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+edge+`").IPAddress}}`, app)
	}
	firstIP := appIP()
	require.True(t, netip.MustParsePrefix((&stacks.Config{EdgeSubnet: subnet.String()}).EdgeDynamicRange()).Contains(netip.MustParseAddr(firstIP)),
		"%s: Docker's pick", firstIP)

	// The switch, as the program runs it: the release's container name.
	server := app + ":" + fmt.Sprint(stacks.AppPort)
	out := e.run(t, nil, append(append(append([]string{"run", "--name", container("switch-" + releaseID), "--network", edge, "-v", controlMount},
		hardened("101:101")...), tmpfs("/tmp", 8)...),
		"--entrypoint", "/usr/local/bin/nbms-switch", image, releaseID, "nbms.test", "30", server)...)
	require.Contains(t, out, "it will load the upstream of release "+releaseID+" ("+server+") when it starts")

	conf, err := nginx.Render(nginx.Params{
		ServerNames: []string{"nbms.test"}, HTTPPort: 80,
		UpstreamFile: "/var/lib/nbms-proxy/upstream.conf",
		StaticRoot:   stacks.StaticRoot, MediaRoot: stacks.MediaRoot,
		ClientMaxBodyBytes: 1 << 20, LoginRatePerMinute: 10,
		ProbePaths: config.ProbePaths(), WorkerProcesses: 1,
	})
	require.NoError(t, err)
	proxy := container("proxy")
	e.run(t, nil, append(append(append([]string{"run", "-d", "--name", proxy, "--network", edge, "--restart", "unless-stopped",
		"--health-interval", healthInterval, "--health-retries", "2",
		"--sysctl", "net.ipv4.ip_unprivileged_port_start=0", "-p", "127.0.0.1::80", "-v", controlMount},
		hardened("101:101")...), tmpfs("/tmp", 64)...),
		prologue(image, [][2]string{{proxyConf, conf}}, "/usr/local/bin/nbms-proxy", proxyConf)...)...)
	e.waitHealthy(t, proxy, followBound)
	published := e.run(t, nil, "port", proxy, "80/tcp")

	// A request that nginx sent on a kept connection to an address that
	// vanished (the reconnect below) waits for its read timeout: the
	// client gives up first and polls again.
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	// get answers GET path on the published port, Host host.
	get := func(path, host string) (int, string, error) {
		req, err := http.NewRequest("GET", "http://"+published+path, nil)
		if err != nil {
			return 0, "", err
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	site := func() string {
		status, body, err := get("/", "nbms.test")
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
	}
	servedFrom := func(ip string) string { return "200 app at " + ip }
	// health is /nginx-health as Docker's check asks it (any Host).
	health := func() int {
		status, _, err := get(nginx.HealthPath, "127.0.0.1")
		if err != nil {
			return 0 // nothing answers
		}
		return status
	}
	dockerHealth := func() string {
		return e.run(t, nil, "inspect", "--format", "{{.State.Health.Status}}", proxy)
	}
	eventually := func(t *testing.T, what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > followBound {
				t.Fatalf("%s: not after %s (the site: %s)\nproxy:\n%s", what, followBound, site(), e.logs(proxy))
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start)
	}

	step(t, "nginx sends to the release by its name", func(t *testing.T) {
		upstream := e.run(t, nil, "exec", proxy, "cat", "/var/lib/nbms-proxy/upstream.conf")
		assert.Equal(t, "# release "+releaseID+"\nserver "+server+" max_fails=0;", upstream)
		assert.Equal(t, servedFrom(firstIP), site())
		assert.Equal(t, http.StatusOK, health())
	})

	step(t, "the app restarts where its old address is taken: nginx follows it", func(t *testing.T) {
		stopped := time.Now()
		e.run(t, nil, "stop", app)
		status := 0
		eventually(t, "/nginx-health to fail with the app stopped", func() bool { status = health(); return status != http.StatusOK })
		down := time.Since(stopped)
		assert.Contains(t, []int{http.StatusBadGateway, http.StatusGatewayTimeout}, status, "nginx's own answer: it cannot reach the app")
		eventually(t, "Docker to call the proxy unhealthy", func() bool { return dockerHealth() == "unhealthy" })
		t.Logf("app stopped: /nginx-health answered %d %s after docker stop began, the proxy unhealthy after %s",
			status, down.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		eventually(t, "the supervisor to see the name go", func() bool {
			return strings.Contains(e.logs(proxy), "nbms-proxy: the upstream of release "+releaseID+", "+app+", does not resolve")
		})

		// Something else takes the old address; it does not serve the app.
		decoy := container("decoy")
		e.run(t, nil, append(append([]string{"run", "-d", "--name", decoy, "--network", edge, "--ip", firstIP, "--no-healthcheck"},
			hardened("101:101")...), "--entrypoint", "sleep", image, "infinity")...)
		assert.NotEqual(t, http.StatusOK, health())

		started := time.Now()
		e.run(t, nil, "start", app)
		secondIP := appIP()
		require.NotEqual(t, firstIP, secondIP, "the decoy holds the old address")
		eventually(t, "nginx to serve from "+secondIP, func() bool { return site() == servedFrom(secondIP) })
		t.Logf("app back at %s (was %s): served through nginx %s after docker start began", secondIP, firstIP, time.Since(started).Round(time.Millisecond))
		assert.Contains(t, e.logs(proxy), "nbms-proxy: the upstream of release "+releaseID+" moved to "+server+"="+secondIP+" (was "+server+"="+firstIP+"); nginx reloaded")
		// Eventually, not at once: during a reload the old worker, still on
		// the old address, accepts connections until it has taken its
		// QUIT (measured on a loaded machine: a 502 right after the new
		// worker had served).
		eventually(t, "/nginx-health to answer 200", func() bool { return health() == http.StatusOK })
		eventually(t, "Docker to call the proxy healthy again", func() bool { return dockerHealth() == "healthy" })
		t.Logf("the proxy healthy again after %s", time.Since(started).Round(time.Millisecond))
		e.run(t, nil, "rm", "-f", decoy)
	})

	// Outside Docker's range (the lower half of the subnet).
	static4 := subnet.Addr().As4()
	static4[3] = 10
	staticIP := netip.AddrFrom4(static4).String()
	step(t, "the running app moves to another address: nginx follows it", func(t *testing.T) {
		before := appIP()
		e.run(t, nil, "network", "disconnect", edge, app)
		e.run(t, nil, "network", "connect", "--ip", staticIP, edge, app)
		moved := time.Now()
		reloaded := "moved to " + server + "=" + staticIP + " (was " + server + "=" + before + "); nginx reloaded"
		eventually(t, "the supervisor to reload nginx", func() bool { return strings.Contains(e.logs(proxy), reloaded) })
		t.Logf("app moved from %s to %s: nginx reloaded within %s", before, staticIP, time.Since(moved).Round(time.Millisecond))
		// A poll that nginx sent on a kept connection to the old address
		// before the reload waits out the client's timeout.
		eventually(t, "nginx to serve from "+staticIP, func() bool { return site() == servedFrom(staticIP) })
		t.Logf("served through nginx %s after the move", time.Since(moved).Round(time.Millisecond))
		// Eventually, as after the restart above: an old worker, still on
		// the old address, may take one more request before its QUIT
		// (measured on a loaded machine: a 504 933 ms after the move, once
		// the new worker had served).
		eventually(t, "/nginx-health to answer 200", func() bool { return health() == http.StatusOK })
	})

	step(t, "a proxy restarted while the app is stopped waits for it, then serves it", func(t *testing.T) {
		const waiting = "does not resolve (is its container stopped?); nginx starts once it does"
		require.NotContains(t, e.logs(proxy), waiting)
		e.run(t, nil, "stop", app)
		e.run(t, nil, "restart", proxy)
		published = e.run(t, nil, "port", proxy, "80/tcp") // a new host port
		eventually(t, "the supervisor to wait for the app's name", func() bool { return strings.Contains(e.logs(proxy), waiting) })
		restarts := e.run(t, nil, "inspect", "--format", "{{.RestartCount}}", proxy)
		// Two resolve periods: it still waits, as PID 1, instead of exiting
		// into the restart policy's loop.
		time.Sleep(4 * time.Second)
		assert.Equal(t, "running false "+restarts, e.run(t, nil, "inspect", "--format", "{{.State.Status}} {{.State.Restarting}} {{.RestartCount}}", proxy))
		assert.Equal(t, 1, strings.Count(e.logs(proxy), waiting), "said once")
		assert.Zero(t, health(), "nothing listens before nginx can start")

		started := time.Now()
		e.run(t, nil, "start", app)
		eventually(t, "nginx to start and serve the app", func() bool { return site() == servedFrom(staticIP) })
		t.Logf("app started: served through the restarted proxy %s after docker start began", time.Since(started).Round(time.Millisecond))
		assert.Contains(t, e.logs(proxy), "nbms-proxy: the upstream resolves: "+server+"="+staticIP)
		assert.Equal(t, http.StatusOK, health())
		eventually(t, "Docker to call the proxy healthy", func() bool { return dockerHealth() == "healthy" })
	})
}
