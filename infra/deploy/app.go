package deploy

import (
	"fmt"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	appUID = "65532:65532" // the nonroot user of app/Dockerfile
	// appGID owns the media volume's files, which the app writes with mode
	// 0640: the proxy, which serves them, is given this group.
	appGID    = "65532"
	appBinary = "/usr/local/bin/nbms"
	appAlias  = "app"
)

// App is the NBMS backend: the media and static volumes, the one-shot
// migrate and collectstatic runs, and the server.
type App struct {
	pulumi.ResourceState
	Container, Migrate, Collectstatic *docker.Container
	Static, Media                     *docker.Volume
	StaticName, MediaName             string
}

// newApp registers the App component with what other tiers need before
// the app runs: its volumes. startApp adds the containers.
func (d *deployment) newApp(ctx *pulumi.Context) (*App, error) {
	a := &App{}
	if err := ctx.RegisterComponentResource(typeApp, "app", a); err != nil {
		return nil, err
	}
	var err error
	if a.Media, a.MediaName, err = d.newVolume(ctx, a, "media", true); err != nil {
		return nil, err
	}
	// Static files are rebuilt by every collectstatic run; kept on delete
	// so nginx never serves an empty directory, but not protected.
	if a.Static, a.StaticName, err = d.newVolume(ctx, a, "static", false); err != nil {
		return nil, err
	}
	return a, nil
}

// The one-shot runs' arguments to the app image's nbms entrypoint. The live
// test runs the real binary with exactly these.
var (
	MigrateCommand       = []string{"migrate", "up"}
	CollectstaticCommand = []string{"collectstatic"}
)

// startApp registers the one-shot migrate and collectstatic runs and the
// server, which starts only once both succeeded.
func (d *deployment) startApp(ctx *pulumi.Context, a *App, image *docker.Image, net *Network, sec *Secrets, db *Database, cache *Cache, hook *pulumi.ResourceHook) error {
	media, static := a.Media, a.Static
	envs, err := d.appEnv(sec)
	if err != nil {
		return err
	}
	internal := attachment{network: net.Internal, name: net.InternalName}
	tmp := map[string]string{"/tmp": tmpfsOptions(64)}

	a.Migrate, err = d.newContainer(ctx, a, containerSpec{
		role: stacks.RoleMigrate, image: image.RepoDigest, user: appUID,
		command:     pulumi.ToStringArray(MigrateCommand),
		envs:        envs,
		healthcheck: oneShotHealthcheck(),
		networks:    []attachment{internal},
		tmpfs:       tmp,
		dependsOn:   []pulumi.Resource{db.Container, cache.Container},
	})
	if err != nil {
		return err
	}
	a.Collectstatic, err = d.newContainer(ctx, a, containerSpec{
		role: stacks.RoleCollectstatic, image: image.RepoDigest, user: appUID,
		command:     pulumi.ToStringArray(CollectstaticCommand),
		envs:        envs,
		healthcheck: oneShotHealthcheck(),
		networks:    []attachment{internal},
		volumes:     []volumeMount{{volume: static, name: a.StaticName, path: stacks.StaticRoot}},
		tmpfs:       tmp,
	})
	if err != nil {
		return err
	}

	// The server starts only once both one-shots succeeded: its image input
	// waits for their exit codes, and a failure stops the update here, with
	// the old server still running.
	gated := pulumi.All(image.RepoDigest, a.Migrate.ExitCode, a.Collectstatic.ExitCode).ApplyT(func(v []any) (string, error) {
		for i, role := range []string{stacks.RoleMigrate, stacks.RoleCollectstatic} {
			if code := v[i+1].(int); code != 0 {
				return "", fmt.Errorf("%s exited with status %d; the app was not replaced (see `docker logs %s`)", role, code, d.name(role))
			}
		}
		return v[0].(string), nil
	}).(pulumi.StringOutput)

	a.Container, err = d.newContainer(ctx, a, containerSpec{
		role: stacks.RoleApp, image: gated, user: appUID,
		command: pulumi.ToStringArray([]string{"serve"}),
		envs:    envs,
		// Liveness only: readiness (PostgreSQL, Redis) is the post-deploy
		// probe's job, and a DB blip must not mark the app unhealthy.
		healthcheck: healthcheck(checkTiming{10 * time.Second, 5 * time.Second, 20 * time.Second, 3}, appBinary, "healthcheck"),
		networks: []attachment{
			{network: net.Edge, name: net.EdgeName, aliases: []string{appAlias}, ipv4: d.cfg.AppEdgeAddress()},
			internal,
		},
		// Static is mounted too (read-write, as collectstatic wrote it) so
		// that `nbms predeploy-check` run in this container finds it.
		volumes: []volumeMount{
			{volume: media, name: a.MediaName, path: stacks.MediaRoot},
			{volume: static, name: a.StaticName, path: stacks.StaticRoot},
		},
		tmpfs: tmp,
		wait:  true,
		// SHUTDOWN_TIMEOUT (25s) plus the drain delay fit inside it.
		stopTimeout: 35,
		init:        true,
		dependsOn:   []pulumi.Resource{a.Migrate, a.Collectstatic},
		opts:        []pulumi.ResourceOption{hookBinding(hook)},
	})
	if err != nil {
		return err
	}
	return ctx.RegisterResourceOutputs(a, pulumi.Map{"container": a.Container.Name})
}

// appEnv is the environment of the app, migrate and collectstatic
// containers: AppEnv with the generated secrets, secret as a whole.
func (d *deployment) appEnv(sec *Secrets) (pulumi.StringArrayInput, error) {
	secret := map[string]pulumi.StringInput{
		"SECRET_KEY":   sec.SecretKey,
		"DATABASE_URL": databaseURL(sec),
		"REDIS_URL":    redisURL(sec),
	}
	if d.cfg.SentryDSN.IsSet() {
		secret["SENTRY_DSN"] = d.cfg.SentryDSN.Output()
	}
	plain, err := AppEnv(d.cfg, secret)
	if err != nil {
		return nil, err
	}
	return envList(plain, secret), nil
}

// AppEnv returns the plain part of the app's environment for a stack (the
// variables stacks.Config.AppSettings decides) after checking it, together
// with the names in secret, against the env contract: every variable the
// profile requires is set, no secret variable is plain text, and nothing
// outside the contract is set. secret holds the secret variables' values
// (Pulumi outputs in the program, plain strings in a live test); AppEnv
// only reads its keys. It is the one place the app's environment is
// decided, so a test that runs the real binary with it runs what the
// program deploys.
func AppEnv[S any](cfg *stacks.Config, secret map[string]S) (map[string]string, error) {
	plain := cfg.AppSettings()
	profile := config.Profile(cfg.Profile)
	declared := map[string]bool{}
	for _, v := range config.Vars() {
		declared[v.Name] = true
		_, isPlain := plain[v.Name]
		_, isSecret := secret[v.Name]
		if v.Secret && isPlain {
			return nil, fmt.Errorf("deploy: %s is a secret variable but was built as plain text", v.Name)
		}
		if !v.Secret && isSecret {
			return nil, fmt.Errorf("deploy: %s is not a secret variable; the stack sets it in plain text", v.Name)
		}
		if v.RequiredIn(profile) && !isPlain && !isSecret {
			return nil, fmt.Errorf("deploy: %s is required in %s but the stack does not set it", v.Name, profile)
		}
	}
	for name := range plain {
		if !declared[name] {
			return nil, fmt.Errorf("deploy: %s is not in the env contract", name)
		}
	}
	for name := range secret {
		if !declared[name] {
			return nil, fmt.Errorf("deploy: %s is not in the env contract", name)
		}
	}
	return plain, nil
}

// oneShotHealthcheck satisfies "every container has a health check" for a
// run-to-completion container: it proves the binary starts (`nbms help`
// exits 0) without probing a server that a one-shot never runs.
func oneShotHealthcheck() *docker.ContainerHealthcheckArgs {
	return healthcheck(checkTiming{30 * time.Second, 5 * time.Second, 5 * time.Second, 1}, appBinary, "help")
}
