package deploy

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	appUID = "65532:65532" // the nonroot user of app/Dockerfile
	// appGID owns the media volume's files, which the app writes with mode
	// 0640: the proxy, which sends a file once the app has authorised its
	// download (X-Accel-Redirect), is given this group.
	appGID    = "65532"
	appBinary = "/usr/local/bin/nbms"
)

// App is the NBMS backend: the media and static volumes, the one-shot
// migrate and collectstatic runs, and the server.
type App struct {
	pulumi.ResourceState
	// Container is the server of Release; the switch hands nginx its
	// name, which Docker's DNS resolves on the edge network.
	Container, Migrate, Collectstatic *docker.Container
	// Logins gave the release's database and Redis logins their passwords
	// before Migrate ran (dblogin, cachelogin); Retires close every other
	// login once the release is live (dbretire, cacheretire, registered by
	// retireLogins after the switch).
	Logins, Retires       map[string]*docker.Container
	retires               []containerSpec
	Release               string
	Static, Media         *docker.Volume
	StaticName, MediaName string
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
// server of the current release, which starts only once both succeeded,
// beside the release that is live.
//
// Blue/green: the release's containers (the one-shots, the server, and the
// proxy's switch) are named by the release (a hash of everything that
// decides what the server runs, see releaseInputs), so a new release is a
// set of new resources and the live one's simply stop being declared: no
// replacement, so no delete-before-replace that would take dependents
// (the live server) down with it.
// The engine deletes a resource the program no longer declares only after
// the program has run to its end without an error: the new release must
// pass migrate, its health check, the readiness hook and the switch (which
// points nginx at it) before the old one is stopped, drained and removed.
// Any failure on the way leaves the live release serving, and the next
// `up` starts from there.
func (d *deployment) startApp(ctx *pulumi.Context, a *App, image *docker.Image, net *Network, sec *Secrets, db *Database, cache *Cache, hook *pulumi.ResourceHook) error {
	files := d.appSecretFiles(sec)
	plainEnv, err := d.appEnv(files)
	if err != nil {
		return err
	}
	settings, err := d.cfg.AppConfig()
	if err != nil {
		return err
	}
	in := releaseIn{
		env: envList(plainEnv), stopTimeout: appStopTimeout(settings),
		image: image.RepoDigest, net: net, app: a,
		db: db, dbLogin: dbLogin(d.cfg.SecretGenerations.AppDBPassword),
		cache: cache, cacheLogin: cacheLogin(d.cfg.SecretGenerations.RedisPassword),
	}
	// The release is a hash of what its containers will be, written with
	// a stand-in for the release itself (their names and labels carry it).
	stand := in.specs(releaseStandIn, volumeMount{name: d.name(Instance(appSecrets, releaseStandIn)), path: conventions.SecretsDir, readOnly: true})
	if a.Release, err = d.appRelease(stand, files); err != nil {
		return err
	}

	// The release names the image by its build inputs (releaseInputs), so
	// the image ID itself never decides a replacement of a release's
	// container: a rebuild of the same inputs (a cold build cache, a
	// rollback to the live release's inputs after a broken one) may produce
	// another ID, and must leave a live release's containers as they are.
	// Different inputs are a new release: new containers, blue/green.
	sameImage := pulumi.IgnoreChanges([]string{"image"})

	// The release's secret files, on a volume of its own: a release never
	// reads another's, and the old one goes with its release.
	// The logins' password files go with them.
	gen := d.cfg.SecretGenerations
	loginPasswords := []secretFile{
		{name: dbLoginPasswordFile, value: sec.AppDBPassword, generation: gen.AppDBPassword},
		{name: cacheLoginPasswordFile, value: sec.RedisPassword, generation: gen.RedisPassword},
	}
	secrets, err := d.newSecretVolume(ctx, a, Instance(appSecrets, a.Release), image.RepoDigest, appUID,
		[]string{appBinary, "version"}, append(files, loginPasswords...), sameImage)
	if err != nil {
		return err
	}
	specs := in.specs(a.Release, secrets.mount)
	specs.dblogin.dependsOn = []pulumi.Resource{db.Container, secrets.holder}
	specs.cachelogin.dependsOn = []pulumi.Resource{cache.Container, secrets.holder}
	a.Logins = map[string]*docker.Container{}
	specs.migrate.dependsOn = []pulumi.Resource{secrets.holder}
	for _, login := range []containerSpec{specs.dblogin, specs.cachelogin} {
		login.opts = []pulumi.ResourceOption{secrets.replaceOnChange, sameImage}
		c, err := d.newContainer(ctx, a, login)
		if err != nil {
			return err
		}
		a.Logins[login.role] = c
		specs.migrate.dependsOn = append(specs.migrate.dependsOn, c)
	}
	a.retires = []containerSpec{specs.dbretire, specs.cacheretire}

	// migrate runs once the release's logins have their passwords: its
	// image input waits for their exit codes.
	specs.migrate.image = d.afterOneShots(a.Release, image.RepoDigest, a.Logins)
	specs.migrate.opts = []pulumi.ResourceOption{secrets.replaceOnChange, sameImage}
	if a.Migrate, err = d.newContainer(ctx, a, specs.migrate); err != nil {
		return err
	}
	specs.collectstatic.dependsOn = []pulumi.Resource{secrets.holder}
	specs.collectstatic.opts = []pulumi.ResourceOption{secrets.replaceOnChange, sameImage}
	if a.Collectstatic, err = d.newContainer(ctx, a, specs.collectstatic); err != nil {
		return err
	}

	// The server starts only once both one-shots succeeded: its image input
	// waits for their exit codes, and a failure stops the update here, with
	// the live release still serving.
	specs.server.image = d.afterOneShots(a.Release, image.RepoDigest, map[string]*docker.Container{
		stacks.RoleMigrate: a.Migrate, stacks.RoleCollectstatic: a.Collectstatic,
	})
	specs.server.dependsOn = []pulumi.Resource{a.Migrate, a.Collectstatic}
	specs.server.opts = []pulumi.ResourceOption{hookBinding(hook), secrets.replaceOnChange, sameImage}
	if a.Container, err = d.newContainer(ctx, a, specs.server); err != nil {
		return err
	}
	return ctx.RegisterResourceOutputs(a, pulumi.Map{"container": a.Container.Name, "release": pulumi.String(a.Release)})
}

// appStopTimeout is how long Docker waits, in whole seconds, between the
// server's SIGTERM and its SIGKILL: the drain delay and the shutdown
// timeout the app runs with (SHUTDOWN_DRAIN_DELAY, SHUTDOWN_TIMEOUT; 5 s
// and 25 s by default) and 5 s to exit, never below 35 s. A stack that
// raises either gets the time it asks for instead of a kill mid-drain.
func appStopTimeout(s *config.Settings) int {
	need := s.DrainDelay + s.ShutdownTimeout + 5*time.Second
	return max(minAppStopTimeout, int(math.Ceil(need.Seconds())))
}

const minAppStopTimeout = 35

// appSecrets names a release's secrets volume and its holder
// (Instance(appSecrets, release)).
const appSecrets = "secrets-app"

// releaseStandIn stands for the release in the containers the release
// hash is computed from.
const releaseStandIn = "<release>"

// releaseIn is what a release's containers are made of besides the release.
type releaseIn struct {
	env         pulumi.StringArrayInput
	stopTimeout int
	image       pulumi.StringInput
	net         *Network
	app         *App
	db          *Database
	cache       *Cache
	// dbLogin and cacheLogin are the database role and the Redis user the
	// release logs in as.
	dbLogin, cacheLogin string
}

// releaseContainers are the containers of one app release.
type releaseContainers struct {
	dblogin, cachelogin, migrate, collectstatic, server, dbretire, cacheretire containerSpec
}

// specs are the release's containers, named and labelled by release, with
// its secrets volume mounted, as they are registered (dependencies and
// resource options aside, which are not container settings). Both the
// release hash and the registration use them: one declaration.
func (in releaseIn) specs(release string, secrets volumeMount) releaseContainers {
	labels := map[string]string{LabelRelease: release}
	internal := attachment{network: in.net.Internal, name: in.net.InternalName}
	tmp := map[string]string{"/tmp": tmpfsOptions(64)}
	static := volumeMount{volume: in.app.Static, name: in.app.StaticName, path: stacks.StaticRoot}
	oneShot := func(role string, command []string, volumes ...volumeMount) containerSpec {
		return containerSpec{
			role: role, instance: Instance(role, release), labels: labels,
			image: in.image, user: appUID,
			command:     pulumi.ToStringArray(command),
			envs:        in.env,
			healthcheck: oneShotHealthcheck(),
			networks:    []attachment{internal},
			volumes:     volumes,
			tmpfs:       tmp,
		}
	}
	// The logins' one-shots, on no network: the db image's script as
	// postgres over the database's socket (peer authentication), and
	// redis-cli as the cache's admin over its control volume's socket.
	// grant reads the login's password from the release's secrets.
	loginOneShot := func(role, command string, tier loginTier) containerSpec {
		env := maps.Clone(tier.env)
		volumes := []volumeMount{tier.control}
		if command == "grant" {
			env[tier.passwordFile+"_FILE"] = secretPath(tier.passwordFile)
			volumes = append(volumes, secrets)
		}
		return containerSpec{
			role: role, instance: Instance(role, release), labels: labels,
			image: tier.image, user: tier.user,
			entrypoint:  tier.entrypoint,
			command:     pulumi.ToStringArray([]string{command}),
			envs:        envList(env),
			healthcheck: healthcheck(checkTiming{30 * time.Second, 5 * time.Second, 5 * time.Second, 1}, "test", "-x", tier.check),
			volumes:     volumes,
			tmpfs:       map[string]string{"/tmp": tmpfsOptions(8)},
			noNetwork:   true,
		}
	}
	db := loginTier{
		image: in.db.image, user: pgUID, control: in.db.socket,
		entrypoint: []string{dbLoginCommand}, check: dbLoginCommand, passwordFile: dbLoginPasswordFile,
		env: map[string]string{"NBMS_DB_OWNER": appDBOwner, "NBMS_DB_LOGIN": in.dbLogin, "PGHOST": pgSocketPath},
	}
	cache := loginTier{
		image: in.cache.image, user: redisUID, control: in.cache.control,
		entrypoint: []string{"/bin/sh", "-c", CacheLoginScript, "nbms-cache-login"}, check: "/usr/bin/redis-cli", passwordFile: cacheLoginPasswordFile,
		env: map[string]string{"NBMS_CACHE_LOGIN": in.cacheLogin},
	}
	return releaseContainers{
		dblogin:       loginOneShot(stacks.RoleDBLogin, "grant", db),
		cachelogin:    loginOneShot(stacks.RoleCacheLogin, "grant", cache),
		dbretire:      loginOneShot(stacks.RoleDBRetire, "retire", db),
		cacheretire:   loginOneShot(stacks.RoleCacheRetire, "retire", cache),
		migrate:       oneShot(stacks.RoleMigrate, MigrateCommand, secrets),
		collectstatic: oneShot(stacks.RoleCollectstatic, CollectstaticCommand, static, secrets),
		server: containerSpec{
			role: stacks.RoleApp, instance: Instance(stacks.RoleApp, release), labels: labels,
			image: in.image, user: appUID,
			command: pulumi.ToStringArray([]string{"serve"}),
			envs:    in.env,
			// Liveness only: readiness (PostgreSQL, Redis) is the readiness
			// hook's and the switch's job, and a DB blip must not mark the
			// app unhealthy.
			healthcheck: healthcheck(checkTiming{10 * time.Second, 5 * time.Second, 20 * time.Second, 3}, appBinary, "healthcheck"),
			networks: []attachment{
				// Docker picks its edge address anew at every start: the
				// switch hands nginx its name, which nginx's supervisor
				// resolves again.
				{network: in.net.Edge, name: in.net.EdgeName},
				internal,
			},
			// Static is mounted too (read-write, as collectstatic wrote it)
			// so that `nbms predeploy-check` run in this container finds it.
			volumes: []volumeMount{
				{volume: in.app.Media, name: in.app.MediaName, path: stacks.MediaRoot},
				static, secrets,
			},
			tmpfs:       tmp,
			wait:        true,
			stopTimeout: in.stopTimeout,
			init:        true,
		},
	}
}

// appRelease is the release of the app the stack declares: a hash of the
// image's build inputs, the operator's secrets (by digest) and every
// setting newContainer writes into the release's containers.
func (d *deployment) appRelease(stand releaseContainers, files []secretFile) (string, error) {
	digest, err := contextDigest(d.root)
	if err != nil {
		return "", err
	}
	var args []*docker.ContainerArgs
	for _, spec := range []containerSpec{stand.dblogin, stand.cachelogin, stand.migrate, stand.collectstatic, stand.server, stand.dbretire, stand.cacheretire} {
		a, _ := d.containerArgs(spec)
		args = append(args, a)
	}
	return releaseID(releaseInputs{
		ContextDigest: digest,
		BuildArgs: map[string]string{
			"BASE_IMAGE": d.cfg.Images.Base, "PLATFORM": d.cfg.Images.Platform,
			"BUILD_CA_CERTS": d.cfg.BuildCACertificates, "NBMS_VERSION": d.cfg.Images.AppVersion,
			"DOCKERFILE": appDockerfile,
		},
		Containers: settingsDigest(args...),
		Secrets:    d.releaseSecrets(files),
	})
}

// releaseSecrets stand in the release hash for the app's secret files:
// the operator's Sentry DSN by its digest (the value is nowhere in the
// hash's inputs), and the generated ones by their generation
// (nbms:secretGenerations), since their values are unknown until the
// random provider makes them. So a new value of any of them is a new
// release, which goes live blue/green. Generation 0 is left out: a stack's
// releases keep their names until it first rotates a secret.
func (d *deployment) releaseSecrets(files []secretFile) map[string]string {
	secrets := map[string]string{"SENTRY_DSN": d.cfg.SentryDSN.Digest()}
	for _, f := range files {
		if f.generation > 0 {
			secrets[f.name] = "generation " + strconv.Itoa(f.generation)
		}
	}
	return secrets
}

// Instance is the resource name of a release's container of a role (see
// conventions.PerRelease), and the suffix of its Docker name.
func Instance(role, release string) string { return role + "-" + release }

// releaseContainerURN matches the URN of a release's container.
var releaseContainerURN = regexp.MustCompile(`\$docker:index/container:Container::(` +
	strings.Join(conventions.ReleaseRoles, "|") +
	`)-[0-9a-f]{` + strconv.Itoa(releaseIDLength) + `}$`)

// IsReleaseContainer reports whether urn is a release's container: a
// failure there (a health check that never passes, say) kept the release
// from going live.
func IsReleaseContainer(urn string) bool { return releaseContainerURN.MatchString(urn) }

// notLive is the error of a gate that kept a release from going live.
func notLive(release, format string, args ...any) error {
	return fmt.Errorf("%s %s: %s", NotLivePrefix, release, fmt.Sprintf(format, args...))
}

// NotLivePrefix begins the error of every gate that kept a new release
// from going live (migrate, collectstatic, the switch's readiness check):
// the driver maps it to the probe's exit code.
const NotLivePrefix = "the live app release was kept; it was not replaced by release"

// appSecretFiles are the app's secrets, delivered as files (see
// secretfiles.go): the generated ones and the operator's Sentry DSN.
func (d *deployment) appSecretFiles(sec *Secrets) []secretFile {
	gen := d.cfg.SecretGenerations
	files := []secretFile{
		{name: "SECRET_KEY", value: sec.SecretKey, generation: gen.SecretKey},
		{name: "DATABASE_URL", value: databaseURL(sec, gen.AppDBPassword), generation: gen.AppDBPassword},
		{name: "REDIS_URL", value: redisURL(sec, gen.RedisPassword), generation: gen.RedisPassword},
	}
	if d.cfg.SentryDSN.IsSet() {
		files = append(files, secretFile{name: "SENTRY_DSN", value: d.cfg.SentryDSN.Output()})
	}
	return files
}

// appEnv is the whole environment of the app, migrate and collectstatic
// containers, all of it plain: AppEnv's settings and, for each secret,
// NAME_FILE naming its file. No secret value is in it, so Docker's
// metadata holds none and the policy pack reads every entry.
func (d *deployment) appEnv(files []secretFile) (map[string]string, error) {
	secret := make(map[string]pulumi.StringInput, len(files))
	for _, f := range files {
		secret[f.name] = f.value
	}
	plain, err := AppEnv(d.cfg, secret)
	if err != nil {
		return nil, err
	}
	maps.Copy(plain, fileEnv(files))
	return plain, nil
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

// loginTier is what a tier's login one-shots are made of.
type loginTier struct {
	image pulumi.StringInput
	user  string
	// control is the volume whose socket administers the tier's logins.
	control    volumeMount
	entrypoint []string
	// check is the file the health check finds executable.
	check string
	// passwordFile is the release's secret file with the login's password.
	passwordFile string
	env          map[string]string
}

// afterOneShots is image once each of the release's one-shots (a role's
// container) exited 0: a container whose image input it is starts only
// then, and a failure stops the update there, with the live release
// still serving.
func (d *deployment) afterOneShots(release string, image pulumi.StringInput, oneShots map[string]*docker.Container) pulumi.StringOutput {
	roles := slices.Sorted(maps.Keys(oneShots))
	inputs := []any{image}
	for _, role := range roles {
		inputs = append(inputs, oneShots[role].ExitCode)
	}
	return pulumi.All(inputs...).ApplyT(func(v []any) (string, error) {
		for i, role := range roles {
			if code := v[i+1].(int); code != 0 {
				return "", notLive(release, "%s exited with status %d (see `docker logs %s`)", role, code, d.name(Instance(role, release)))
			}
		}
		return v[0].(string), nil
	}).(pulumi.StringOutput)
}

// retireLogins registers the release's dbretire and cacheretire one-shots:
// once the switch has made the release live, every database and Redis
// login but the release's own stops working (a rotated password's
// predecessor among them).
func (d *deployment) retireLogins(ctx *pulumi.Context, a *App, p *Proxy) error {
	a.Retires = map[string]*docker.Container{}
	for _, spec := range a.retires {
		spec.image = pulumi.All(spec.image, p.Switched).ApplyT(func(v []any) string { return v[0].(string) }).(pulumi.StringOutput)
		spec.dependsOn = []pulumi.Resource{p.Switch}
		spec.opts = []pulumi.ResourceOption{pulumi.IgnoreChanges([]string{"image"})}
		c, err := d.newContainer(ctx, a, spec)
		if err != nil {
			return err
		}
		a.Retires[spec.role] = c
	}
	return nil
}

// liveLogins are the logins the live release uses, once its retire
// one-shots closed every other: a failed retire fails the update (the
// release is live, but a previous password may still work), naming the
// container to read.
func (d *deployment) liveLogins(a *App, dbLogin, cacheLogin string) pulumi.StringMapOutput {
	roles := slices.Sorted(maps.Keys(a.Retires))
	var codes []any
	for _, role := range roles {
		codes = append(codes, a.Retires[role].ExitCode)
	}
	return pulumi.All(codes...).ApplyT(func(v []any) (map[string]string, error) {
		for i, role := range roles {
			if code := v[i].(int); code != 0 {
				return nil, fmt.Errorf("release %s is live, but %s exited with status %d (see `docker logs %s`): a previous password may still work; run the update again",
					a.Release, role, code, d.name(Instance(role, a.Release)))
			}
		}
		return map[string]string{"db": dbLogin, "cache": cacheLogin}, nil
	}).(pulumi.StringMapOutput)
}
