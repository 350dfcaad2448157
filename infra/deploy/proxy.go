package deploy

import (
	"net"
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
	proxyKeyPath   = "/tmp/nbms/tls/key.pem"
	proxyKeyEnv    = "NBMS_TLS_KEY"
)

// Proxy is nginx, the only container that publishes ports.
type Proxy struct {
	pulumi.ResourceState
	Container *docker.Container
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
		CertPath: proxyCertPath, KeyPath: proxyKeyPath,
		// The app's fixed address, not its name: nginx keeps connections to
		// it open, and a replaced app container comes back at the same one.
		Upstream:   net.JoinHostPort(cfg.AppEdgeAddress(), strconv.Itoa(stacks.AppPort)),
		StaticRoot: stacks.StaticRoot, MediaRoot: stacks.MediaRoot,
		ClientMaxBodyBytes: cfg.App.MaxUploadBytes,
		LoginRatePerMinute: cfg.App.LoginRatePerMinute, LoginBurst: cfg.App.LoginBurst,
		SecurityHeaders:       headers,
		AcceptClientRequestID: cfg.App.AcceptClientRequestID,
		PublicCacheSeconds:    cfg.App.EdgeCacheSeconds,
		PublicPrefix:          config.PublicAPIPrefix,
		ProbePaths:            config.ProbePaths(),
	}, nil
}

func (d *deployment) newProxy(ctx *pulumi.Context, net *Network, app *App, image *docker.Image, hook *pulumi.ResourceHook) (*Proxy, error) {
	p := &Proxy{}
	if err := ctx.RegisterComponentResource(typeProxy, "proxy", p); err != nil {
		return nil, err
	}
	files := []renderedFile{{path: proxyConfPath, content: d.rendered.nginxConf}}
	var secretEnv map[string]pulumi.StringInput
	ports := docker.ContainerPortArray{docker.ContainerPortArgs{
		Internal: pulumi.Int(proxyHTTPPort), External: pulumi.Int(d.cfg.HTTPPort),
		Ip: pulumi.String(d.cfg.BindAddress), Protocol: pulumi.String("tcp"),
	}}
	if d.cfg.TLS() {
		files = append(files,
			renderedFile{path: proxyCertPath, content: d.cfg.TLSCertificate},
			renderedFile{path: proxyKeyPath, fromEnv: proxyKeyEnv})
		secretEnv = map[string]pulumi.StringInput{proxyKeyEnv: d.cfg.TLSKeyOutput()}
		ports = append(ports, docker.ContainerPortArgs{
			Internal: pulumi.Int(proxyHTTPSPort), External: pulumi.Int(d.cfg.HTTPSPort),
			Ip: pulumi.String(d.cfg.BindAddress), Protocol: pulumi.String("tcp"),
		})
	}
	// nginx runs directly on the rendered file; -e stderr keeps it from
	// opening its compiled-in error log (/var/log/nginx, read-only here)
	// before it has read the file.
	entry, cmd := withFiles(files, "nginx", "-e", "stderr", "-c", proxyConfPath, "-g", "daemon off;")
	var err error
	p.Container, err = d.newContainer(ctx, p, containerSpec{
		role: stacks.RoleProxy, image: image.RepoDigest, user: proxyUID,
		// The media volume's uploads are the app's, mode 0640.
		groups:     []string{appGID},
		entrypoint: entry, command: cmd,
		envs: envList(nil, secretEnv),
		healthcheck: healthcheck(checkTiming{10 * time.Second, 3 * time.Second, 5 * time.Second, 3},
			"wget", "-q", "-O", "/dev/null", "http://127.0.0.1:"+strconv.Itoa(proxyHTTPPort)+nginx.HealthPath),
		networks: []attachment{{network: net.Edge, name: net.EdgeName}},
		volumes: []volumeMount{
			{volume: app.Static, name: app.StaticName, path: stacks.StaticRoot, readOnly: true},
			{volume: app.Media, name: app.MediaName, path: stacks.MediaRoot, readOnly: true},
		},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(64)},
		sysctls:     map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		ports:       ports,
		wait:        true,
		stopTimeout: 15,
		dependsOn:   []pulumi.Resource{app.Container},
		opts:        []pulumi.ResourceOption{hookBinding(hook)},
	})
	if err != nil {
		return nil, err
	}
	return p, ctx.RegisterResourceOutputs(p, pulumi.Map{"container": p.Container.Name})
}
