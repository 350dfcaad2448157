package deploy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/hooks"
	"github.com/nbms-deploy/nbms/stacks"
)

// The post-deploy resource hooks. Each fails the update, with the prober's
// message, when what it probes does not become ready.
const (
	// AppHookName probes a new or changed app container itself, on its
	// edge-network address: the app is ready before anything relies on it,
	// and on a first deployment nginx does not exist yet.
	AppHookName = "nbms-app-readiness-probe"
	// HookName probes the public entry point (nginx) after the proxy
	// container is created or changed, as a visitor of the domain would.
	HookName = "nbms-post-deploy-probe"
)

// HookNames are the names of every post-deploy hook.
var HookNames = []string{AppHookName, HookName}

// stackHooks are the program's registered hooks.
type stackHooks struct{ app, public *pulumi.ResourceHook }

func (d *deployment) registerHooks(ctx *pulumi.Context) (stackHooks, error) {
	var h stackHooks
	var err error
	if h.app, err = ctx.RegisterResourceHook(AppHookName, d.probeApp, nil); err != nil {
		return h, err
	}
	h.public, err = ctx.RegisterResourceHook(HookName, d.probePublic, nil)
	return h, err
}

// hookBinding runs a hook after the container is created (including a
// replacement) or updated in place.
func hookBinding(hook *pulumi.ResourceHook) pulumi.ResourceOption {
	return pulumi.ResourceHooks(&pulumi.ResourceHookBinding{
		AfterCreate: []*pulumi.ResourceHook{hook},
		AfterUpdate: []*pulumi.ResourceHook{hook},
	})
}

// probeTiming is what every probe of a stack shares: the stack's overall
// timeout, and two 200s in a row per path, so that a container still
// settling does not pass once by luck.
func probeTiming(cfg *stacks.Config) (hooks.Options, error) {
	timeout, err := time.ParseDuration(cfg.Probe.Timeout)
	if err != nil {
		return hooks.Options{}, fmt.Errorf("nbms:probe.timeout: %w", err)
	}
	return hooks.Options{
		Paths: hooks.DefaultPaths(), Host: cfg.Domain, Timeout: timeout,
		InitialBackoff: time.Second, MaxBackoff: 10 * time.Second, SuccessesRequired: 2,
	}, nil
}

// ProbeOptions are the post-deploy probe's options for a stack: through
// the published entry point, as a visitor of the domain would arrive.
func ProbeOptions(cfg *stacks.Config) (hooks.Options, error) {
	opts, err := probeTiming(cfg)
	if err != nil {
		return opts, err
	}
	opts.BaseURL = cfg.Probe.BaseURL
	if opts.BaseURL == "" {
		// A specific address (the stack refuses 0.0.0.0), reachable from the
		// host running `pulumi up`; override with nbms:probe.baseUrl otherwise.
		opts.BaseURL = cfg.Scheme() + "://" + net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.PublicPort()))
	}
	if cfg.TLS() {
		// Trust the configured chain as well as the system roots, so a
		// certificate from a private CA verifies too; never skip verification.
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		roots.AppendCertsFromPEM([]byte(cfg.TLSCertificate))
		opts.HTTPClient = hooks.DefaultClient(cfg.Domain, roots)
	}
	return opts, nil
}

// AppProbeOptions are the options of the app container's own readiness
// probe: plain HTTP to the app's port on its edge-network address, which
// the host running `pulumi up` reaches on the Docker host's bridge. The
// probe paths answer there without the HTTPS redirect, for the domain.
func AppProbeOptions(cfg *stacks.Config, addr string) (hooks.Options, error) {
	opts, err := probeTiming(cfg)
	if err != nil {
		return opts, err
	}
	opts.BaseURL = "http://" + net.JoinHostPort(addr, strconv.Itoa(stacks.AppPort))
	return opts, nil
}

// probePublic is the proxy's hook. Hooks get no deadline; the prober's own
// Timeout bounds it.
func (d *deployment) probePublic(args *pulumi.ResourceHookArgs) error {
	opts, err := ProbeOptions(d.cfg)
	if err != nil {
		return err
	}
	if _, err := hooks.Probe(context.Background(), opts); err != nil {
		return fmt.Errorf("post-deploy probe of %s after %s: %w", opts.BaseURL, args.Name, err)
	}
	return nil
}

// probeApp is the app's hook.
func (d *deployment) probeApp(args *pulumi.ResourceHookArgs) error {
	addr, err := networkAddress(args.NewOutputs, conventions.EdgeNetwork(d.cfg.Stack))
	if err != nil {
		return fmt.Errorf("readiness probe of the new %s container: %w", args.Name, err)
	}
	opts, err := AppProbeOptions(d.cfg, addr)
	if err != nil {
		return err
	}
	if _, err := hooks.Probe(context.Background(), opts); err != nil {
		return fmt.Errorf("readiness probe of the new %s container (%s): %w", args.Name, opts.BaseURL, err)
	}
	return nil
}

// networkAddress is a container's IPv4 address on a network, from the
// docker provider's networkDatas output.
func networkAddress(outputs resource.PropertyMap, network string) (string, error) {
	datas := outputs["networkDatas"]
	if !datas.IsArray() {
		return "", errors.New("the provider reported no network addresses")
	}
	for _, v := range datas.ArrayValue() {
		if !v.IsObject() {
			continue
		}
		o := v.ObjectValue()
		if name, ip := o["networkName"], o["ipAddress"]; name.IsString() && name.StringValue() == network && ip.IsString() && ip.StringValue() != "" {
			return ip.StringValue(), nil
		}
	}
	return "", fmt.Errorf("no address on network %s", network)
}
