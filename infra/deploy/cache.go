package deploy

import (
	"strconv"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/stacks"
)

const (
	cacheAlias = "cache"
	redisUID   = "998:998" // the redis user of infra/images/redis
)

// Cache is Redis: password-protected, memory only (no RDB, no AOF). It
// holds rate-limit counters and other data the app can rebuild.
type Cache struct {
	pulumi.ResourceState
	Container *docker.Container
}

func (d *deployment) newCache(ctx *pulumi.Context, net *Network, sec *Secrets, image *docker.Image) (*Cache, error) {
	c := &Cache{}
	if err := ctx.RegisterComponentResource(typeCache, "cache", c); err != nil {
		return nil, err
	}
	files := []secretFile{{name: "REDIS_PASSWORD", value: sec.RedisPassword}}
	secrets, err := d.newSecretVolume(ctx, c, "secrets-cache", image.RepoDigest, redisUID, []string{"/bin/true"}, files)
	if err != nil {
		return nil, err
	}
	maxMemory := d.cfg.Limits[stacks.RoleCache].MemoryMB * 3 / 4
	c.Container, err = d.newContainer(ctx, c, containerSpec{
		role:       stacks.RoleCache,
		image:      image.RepoDigest,
		user:       redisUID,
		entrypoint: []string{"/bin/sh", "-c", RedisScript, "redis"},
		command:    pulumi.ToStringArray([]string{strconv.Itoa(maxMemory) + "mb"}),
		envs:       envList(fileEnv(files)),
		// redis-cli exits 0 on an error reply, so look for the PONG. It
		// reads the password from REDISCLI_AUTH, set for this one command.
		healthcheck: shellHealthcheck(checkTiming{10 * time.Second, 3 * time.Second, 10 * time.Second, 3}, RedisCLIAuth+" redis-cli ping | grep -q PONG"),
		networks:    []attachment{{network: net.Internal, name: net.InternalName, aliases: []string{cacheAlias}}},
		// /data is redis-server's working directory; nothing is persisted
		// there (no RDB, no AOF), so memory is enough.
		tmpfs:       map[string]string{"/data": tmpfsOptions(16), "/tmp": tmpfsOptions(16)},
		volumes:     []volumeMount{secrets.mount},
		wait:        true,
		stopTimeout: 15,
		dependsOn:   []pulumi.Resource{secrets.holder},
		opts:        []pulumi.ResourceOption{secrets.replaceOnChange},
	})
	if err != nil {
		return nil, err
	}
	return c, ctx.RegisterResourceOutputs(c, pulumi.Map{"container": c.Container.Name})
}

// RedisScript starts redis-server; its first argument is maxmemory. The
// password, read from the file REDIS_PASSWORD_FILE names, reaches
// redis-server through a config read on stdin, so it is on no command line.
// An unreadable or empty file stops the start: Redis without its password
// would serve anyone on the network.
const RedisScript = `set -eu
password=$(cat "$REDIS_PASSWORD_FILE")
[ -n "$password" ] || { echo "redis: $REDIS_PASSWORD_FILE is empty" >&2; exit 1; }
exec redis-server --save '' --appendonly no --protected-mode yes --maxmemory "$1" --maxmemory-policy volatile-lru - <<EOF
requirepass $password
EOF`

// RedisCLIAuth prefixes a redis-cli command in the cache container's shell
// with the password, for that command alone.
const RedisCLIAuth = `REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")"`

// redisURL is the app's REDIS_URL (secret).
func redisURL(sec *Secrets) pulumi.StringOutput {
	return pulumi.Sprintf("redis://:%s@%s:6379/0", sec.RedisPassword, cacheAlias)
}
