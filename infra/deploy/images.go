package deploy

import (
	"maps"
	"path/filepath"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Where the Dockerfiles live, relative to the repository root. The app's
// build context is the root (it needs go.mod; .dockerignore narrows it),
// the others' their own directory.
const (
	appDockerfile     = "app/Dockerfile"
	dbImageContext    = "infra/images/db"
	proxyImageContext = "infra/images/nginx"
	cacheImageContext = "infra/images/redis"
)

// Images are the five images of a stack, all built on this Docker host from
// the stack's one pinned base image (nbms:images.base): a single
// third-party image to pin, verify and patch, and Debian's own packages for
// nginx, PostgreSQL/PostGIS, pgBackRest and Redis. Containers run the built
// images by image ID (RepoDigest), never by tag.
type Images struct {
	pulumi.ResourceState
	// Base is the pinned base image: found on the host (a local image ID)
	// or pulled by digest, and kept when the stack is destroyed.
	Base *docker.RemoteImage
	// BaseTag names Base for the builds: BuildKit cannot build FROM an image
	// ID (moby/buildkit#2204), so the Dockerfiles build FROM this
	// stack-owned local tag, which points at exactly Base.
	BaseTag *docker.Tag
	// DB (PostgreSQL) and Backup (the backup scheduler) are two targets of
	// one Dockerfile: only Backup holds the app's binary, so only Backup
	// is rebuilt by an app release, and PostgreSQL keeps running.
	App, DB, Backup, Proxy, Cache *docker.Image
	AppName, BaseLocalName        string
}

// baseLocalName is the local tag of the stack's base image.
func baseLocalName(stack string) string { return "nbms-base:" + stack }

func (d *deployment) newImages(ctx *pulumi.Context) (*Images, error) {
	im := &Images{AppName: "nbms-app:" + d.cfg.Stack, BaseLocalName: baseLocalName(d.cfg.Stack)}
	if err := ctx.RegisterComponentResource(typeImages, "images", im); err != nil {
		return nil, err
	}
	var err error
	im.Base, err = docker.NewRemoteImage(ctx, "base-image", &docker.RemoteImageArgs{
		Name: pulumi.String(d.cfg.Images.Base),
		// The base belongs to the operator (or scripts/base-image.sh), not
		// to the stack.
		KeepLocally: pulumi.Bool(true),
	}, pulumi.Parent(im))
	if err != nil {
		return nil, err
	}
	im.BaseTag, err = docker.NewTag(ctx, "base-tag", &docker.TagArgs{
		SourceImage: im.Base.ImageId,
		TargetImage: pulumi.String(im.BaseLocalName),
	}, pulumi.Parent(im))
	if err != nil {
		return nil, err
	}
	// BASE_IMAGE names the base for FROM; BASE_IMAGE_ID changes with the
	// base, so a new base rebuilds every image (and lands in a label).
	base := pulumi.StringMap{"BASE_IMAGE": im.BaseTag.TargetImage, "BASE_IMAGE_ID": im.Base.ImageId}
	// Only the app's builder downloads over HTTPS (the Go toolchain and
	// modules); the others install Debian's signed packages.
	appArgs := maps.Clone(base)
	if d.cfg.BuildCACertificates != "" {
		appArgs["BUILD_CA_CERTS"] = pulumi.String(d.cfg.BuildCACertificates)
	}
	if d.cfg.Images.AppVersion != "" {
		appArgs["NBMS_VERSION"] = pulumi.String(d.cfg.Images.AppVersion)
	}
	if im.App, err = d.buildImage(ctx, im, "app-image", im.AppName, ".", appDockerfile, "", appArgs); err != nil {
		return nil, err
	}
	// PostgreSQL's image depends on the base alone: a new app build must
	// not rebuild it, or every app release would replace the database
	// container (a database restart).
	dbDockerfile := filepath.Join(dbImageContext, "Dockerfile")
	if im.DB, err = d.buildImage(ctx, im, "db-image", "nbms-db:"+d.cfg.Stack, dbImageContext, dbDockerfile, "db", base); err != nil {
		return nil, err
	}
	// The backup image (the db stage plus the app binary, whose
	// backup-schedule subcommand is the scheduler) copies the nbms binary
	// out of the app image. BuildKit cannot use an image ID in FROM either,
	// so APP_IMAGE is the app's local tag; APP_IMAGE_ID, the ID that tag
	// points to, changes with every app build and so rebuilds this image
	// whenever the binary changes.
	backupArgs := maps.Clone(base)
	backupArgs["APP_IMAGE"], backupArgs["APP_IMAGE_ID"] = im.App.ImageName, im.App.RepoDigest
	if im.Backup, err = d.buildImage(ctx, im, "backup-image", "nbms-backup:"+d.cfg.Stack, dbImageContext, dbDockerfile, "backup", backupArgs); err != nil {
		return nil, err
	}
	if im.Proxy, err = d.buildImage(ctx, im, "proxy-image", "nbms-nginx:"+d.cfg.Stack, proxyImageContext, filepath.Join(proxyImageContext, "Dockerfile"), "", base); err != nil {
		return nil, err
	}
	if im.Cache, err = d.buildImage(ctx, im, "cache-image", "nbms-redis:"+d.cfg.Stack, cacheImageContext, filepath.Join(cacheImageContext, "Dockerfile"), "", base); err != nil {
		return nil, err
	}
	return im, ctx.RegisterResourceOutputs(im, pulumi.Map{
		"base": im.Base.ImageId, "app": im.App.RepoDigest, "db": im.DB.RepoDigest,
		"backup": im.Backup.RepoDigest, "proxy": im.Proxy.RepoDigest, "cache": im.Cache.RepoDigest,
	})
}

// buildImage builds one image with BuildKit on the Docker host; it never
// leaves the host (SkipPush), so its RepoDigest is the local image ID.
// Build paths are relative to the repository root; target is the
// Dockerfile stage to build, "" for its last.
func (d *deployment) buildImage(ctx *pulumi.Context, parent pulumi.Resource, name, tag, context, dockerfile, target string, args pulumi.StringMap) (*docker.Image, error) {
	build := &docker.DockerBuildArgs{
		Context:        pulumi.String(d.path(context)),
		Dockerfile:     pulumi.String(d.path(dockerfile)),
		Platform:       pulumi.String(d.cfg.Images.Platform),
		BuilderVersion: docker.BuilderVersionBuilderBuildKit,
		Args:           args,
	}
	if target != "" {
		build.Target = pulumi.String(target)
	}
	return docker.NewImage(ctx, name, &docker.ImageArgs{
		ImageName: pulumi.String(tag),
		Build:     build,
		SkipPush:  pulumi.Bool(true),
	}, pulumi.Parent(parent))
}
