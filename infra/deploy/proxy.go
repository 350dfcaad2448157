package deploy

import (
	"math"
	"strconv"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/stacks"
)

// In infra/images/nginx (Debian's nginx) nginx runs as uid 101 with no
// capability. It still listens on 80 and 443 inside the container (what the
// policy pack and CIS 5.8's proxy exception expect): the container's
// net.ipv4.ip_unprivileged_port_start is 0, which Docker >= 20.10 sets by
// default and the program sets explicitly.
const (
	proxyUID       = "101:101"
	proxyHTTPPort  = 80
	proxyHTTPSPort = 443
	proxyConfPath  = "/tmp/nbms/nginx.conf"
	proxyCertPath  = "/tmp/nbms/tls/cert.pem"
	// proxyKeyFile is the TLS private key's name on the proxy's secrets
	// volume (see secretfiles.go).
	proxyKeyFile = "TLS_KEY"
	// proxyControlDir is where the control volume is mounted in the proxy
	// and the switch: the live upstream file and the switch's handshake
	// with the proxy's supervisor (infra/images/nginx/nbms-proxy).
	proxyControlDir    = "/var/lib/nbms-proxy"
	proxyUpstreamFile  = proxyControlDir + "/upstream.conf"
	proxySupervisor    = "/usr/local/bin/nbms-proxy"
	proxySwitchCommand = "/usr/local/bin/nbms-switch"
)

// Proxy is nginx, the only container that publishes ports, and the switch
// that points it at the live app release.
type Proxy struct {
	pulumi.ResourceState
	Container, Switch *docker.Container
	// Control is the volume the switch and nginx's supervisor share.
	Control *docker.Volume
	// Switched is the release nginx sends to once the switch succeeded;
	// it fails with the reason otherwise. The stack's app output is it, so
	// a failed switch fails the update before the engine deletes the
	// previous release (dropped resources go only after a program that
	// ended without an error).
	Switched pulumi.StringOutput
}

// NginxParams maps the stack config to the renderer's parameters, as the
// proxy container runs them. A live test overrides only what is local to
// the container (ports, paths, the upstream address) and keeps the rest.
// The security headers are the app's own, from the app's configuration as
// the stack sets it: nginx sends exactly what the app sends.
func NginxParams(cfg *stacks.Config) (nginx.Params, error) {
	app, err := cfg.AppConfig()
	if err != nil {
		return nginx.Params{}, err
	}
	var headers []nginx.Header
	for _, h := range app.SecurityHeaders() {
		headers = append(headers, nginx.Header{Name: h.Name, Value: h.Value})
	}
	return nginx.Params{
		ServerNames: cfg.PublicHosts(),
		HTTPPort:    proxyHTTPPort, HTTPSPort: proxyHTTPSPort, PublicPort: cfg.PublicPort(),
		TLS:      cfg.TLS(),
		CertPath: proxyCertPath, KeyPath: secretPath(proxyKeyFile),
		// The live release's container name, written by the switch: nginx
		// keeps connections to it open, a new release goes live with a
		// graceful reload, and so does a new address of the live one.
		UpstreamFile: proxyUpstreamFile,
		StaticRoot:   stacks.StaticRoot, MediaRoot: stacks.MediaRoot,
		ClientMaxBodyBytes: cfg.App.MaxUploadBytes,
		LoginRatePerMinute: cfg.App.LoginRatePerMinute, LoginBurst: cfg.App.LoginBurst,
		SecurityHeaders:       headers,
		AcceptClientRequestID: cfg.App.AcceptClientRequestID,
		PublicCacheSeconds:    cfg.App.EdgeCacheSeconds,
		PublicPrefix:          config.PublicAPIPrefix,
		ProbePaths:            config.ProbePaths(),
		WorkerProcesses:       ProxyWorkers(cfg.Limits[stacks.RoleProxy].CPUs),
		UpstreamReadTimeout:   upstreamReadTimeout(app.WriteTimeout),
	}, nil
}

// upstreamReadTimeout is how long nginx waits for the app's answer: the
// renderer's default (60 s), or longer when the app may take longer
// (HTTP_WRITE_TIMEOUT raised by the stack), in whole seconds. Zero keeps
// the default.
func upstreamReadTimeout(appWrite time.Duration) time.Duration {
	if appWrite <= nginx.DefaultUpstreamReadTimeout {
		return 0
	}
	whole := appWrite.Truncate(time.Second)
	if whole < appWrite {
		whole += time.Second
	}
	return whole
}

// ProxyWorkers is nginx's worker_processes for the proxy's CPU limit: one
// worker per whole CPU the limit allows, at least one. "auto" would start
// one per host core, each then throttled under the container's CPU quota,
// which only adds context switches and memory.
func ProxyWorkers(cpus float64) int {
	return max(1, int(math.Ceil(cpus)))
}

func (d *deployment) newProxy(ctx *pulumi.Context, net *Network, app *App, image *docker.Image, hook *pulumi.ResourceHook) (*Proxy, error) {
	p := &Proxy{}
	if err := ctx.RegisterComponentResource(typeProxy, "proxy", p); err != nil {
		return nil, err
	}
	var controlName string
	var err error
	// Not data: the next switch writes it again.
	if p.Control, controlName, err = d.newVolume(ctx, p, "proxy-control", false); err != nil {
		return nil, err
	}
	control := volumeMount{volume: p.Control, name: controlName, path: proxyControlDir}
	// The switch probes as the hooks do: the stack's timeout, the domain.
	probe, err := probeTiming(d.cfg)
	if err != nil {
		return nil, err
	}

	// The switch: checks the new release's /readyz itself (two answers in
	// a row, from inside the edge network), then hands nginx's supervisor
	// the release's container name and waits until nginx has reloaded onto
	// it. A name, not the address Docker picked: a restarted container
	// (docker restart, dockerd's restart, the restart policy) may come back
	// elsewhere, and the supervisor resolves the name again every 2 s and
	// follows it. Each release has its own switch, so it runs once per
	// release.
	p.Switch, err = d.newContainer(ctx, p, containerSpec{
		role: stacks.RoleSwitch, instance: Instance(stacks.RoleSwitch, app.Release),
		labels: map[string]string{LabelRelease: app.Release},
		image:  image.RepoDigest, user: proxyUID,
		entrypoint: []string{proxySwitchCommand},
		command: pulumi.StringArray{
			pulumi.String(app.Release), pulumi.String(probe.Host),
			// Whole seconds, at least one (the script's unit).
			pulumi.String(strconv.Itoa(max(1, int(math.Ceil(probe.Timeout.Seconds()))))),
			pulumi.Sprintf("%s:%d", app.Container.Name, stacks.AppPort),
		},
		healthcheck: healthcheck(checkTiming{30 * time.Second, 5 * time.Second, 5 * time.Second, 1}, "test", "-x", proxySwitchCommand),
		networks:    []attachment{{network: net.Edge, name: net.EdgeName}},
		volumes:     []volumeMount{control},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(8)},
		dependsOn:   []pulumi.Resource{app.Container},
	})
	if err != nil {
		return nil, err
	}
	// The switch's exit code decides the update (see Switched). nginx only
	// depends on the switch (it starts on the upstream the switch wrote):
	// an input computed from the switch's outputs would make the engine
	// replace nginx with every release.
	p.Switched = p.Switch.ExitCode.ApplyT(func(code int) (string, error) {
		if code != 0 {
			return "", notLive(app.Release, "the switch exited with status %d (see `docker logs %s`)", code, d.name(Instance(stacks.RoleSwitch, app.Release)))
		}
		return app.Release, nil
	}).(pulumi.StringOutput)

	files := []renderedFile{{path: proxyConfPath, content: d.rendered.nginxConf}}
	volumes := []volumeMount{
		{volume: app.Static, name: app.StaticName, path: stacks.StaticRoot, readOnly: true},
		{volume: app.Media, name: app.MediaName, path: stacks.MediaRoot, readOnly: true},
		control,
	}
	deps := []pulumi.Resource{p.Switch}
	opts := []pulumi.ResourceOption{hookBinding(hook)}
	ports := docker.ContainerPortArray{docker.ContainerPortArgs{
		Internal: pulumi.Int(proxyHTTPPort), External: pulumi.Int(d.cfg.HTTPPort),
		Ip: pulumi.String(d.cfg.BindAddress), Protocol: pulumi.String("tcp"),
	}}
	if d.cfg.TLS() {
		files = append(files, renderedFile{path: proxyCertPath, content: d.cfg.TLSCertificate})
		// nginx reads the key from the file itself (ssl_certificate_key).
		secrets, err := d.newSecretVolume(ctx, p, "secrets-proxy", image.RepoDigest, proxyUID, []string{"/bin/true"},
			[]secretFile{{name: proxyKeyFile, value: d.cfg.TLSKeyOutput()}})
		if err != nil {
			return nil, err
		}
		volumes = append(volumes, secrets.mount)
		deps = append(deps, secrets.holder)
		opts = append(opts, secrets.replaceOnChange)
		ports = append(ports, docker.ContainerPortArgs{
			Internal: pulumi.Int(proxyHTTPSPort), External: pulumi.Int(d.cfg.HTTPSPort),
			Ip: pulumi.String(d.cfg.BindAddress), Protocol: pulumi.String("tcp"),
		})
	}
	// The supervisor runs nginx on the rendered file (-e stderr keeps nginx
	// from opening its compiled-in error log, read-only here, before it
	// has read the file) and applies the switch's upstream changes.
	entry, cmd := withFiles(files, proxySupervisor, proxyConfPath)
	p.Container, err = d.newContainer(ctx, p, containerSpec{
		role: stacks.RoleProxy, image: image.RepoDigest, user: proxyUID,
		// The media volume's uploads are the app's, mode 0640. nginx reads
		// them (read-only mount) to send the ones the app authorises: no
		// location serves the volume to clients directly.
		groups:     []string{appGID},
		entrypoint: entry, command: cmd,
		// nginx's health path answers with the live release's /healthz
		// through the upstream (nginx.HealthPath): the proxy is unhealthy
		// while nginx cannot reach the app, which nginx alone would not be.
		healthcheck: healthcheck(checkTiming{10 * time.Second, 3 * time.Second, 5 * time.Second, 3},
			"wget", "-q", "-O", "/dev/null", "http://127.0.0.1:"+strconv.Itoa(proxyHTTPPort)+nginx.HealthPath),
		networks:    []attachment{{network: net.Edge, name: net.EdgeName}},
		volumes:     volumes,
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(64)},
		sysctls:     map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		ports:       ports,
		wait:        true,
		stopTimeout: 15,
		dependsOn:   deps,
		opts:        opts,
	})
	if err != nil {
		return nil, err
	}
	return p, ctx.RegisterResourceOutputs(p, pulumi.Map{"container": p.Container.Name, "switch": p.Switch.Name})
}
