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
	// cacheControlPath is the cache's control volume in the cache container
	// and in a release's cachelogin and cacheretire one-shots: Redis's Unix
	// socket, the admin password Redis's start makes, and the ACL file with
	// the app's logins. Whoever mounts it administers Redis's users, as
	// whoever reaches PostgreSQL's socket as postgres administers its roles.
	cacheControlPath = "/var/lib/nbms-cache"
	// cacheAdmin is the Redis user the control volume's password belongs
	// to: users (ACL, CLIENT KILL) and health (PING, INFO, CONFIG GET), no
	// data.
	cacheAdmin = "nbms-admin"
)

// Cache is Redis: memory only (no RDB, no AOF), for rate-limit counters and
// other data the app can rebuild. The app logs in as one of two ACL users,
// like the database's logins (cacheLogin), which each release grants; no
// secret of the stack is the cache container's, so a rotation of the app's
// password never restarts Redis.
type Cache struct {
	pulumi.ResourceState
	Container *docker.Container
	// image and control are what a release's cachelogin and cacheretire
	// one-shots run from and connect through.
	image   pulumi.StringInput
	control volumeMount
}

// cacheLogin is the Redis user the app logs in as with the Redis password
// of a generation (nbms:secretGenerations redisPassword): nbms_a for even
// generations, nbms_b for odd ones, taking turns as the database's logins
// do (dbLogin).
func cacheLogin(generation int) string {
	return "nbms_" + string(rune('a'+generation%2))
}

func (d *deployment) newCache(ctx *pulumi.Context, net *Network, image *docker.Image) (*Cache, error) {
	c := &Cache{}
	if err := ctx.RegisterComponentResource(typeCache, "cache", c); err != nil {
		return nil, err
	}
	// The logins Redis reloads at a restart are the ACL file's, so the
	// volume outlives the container (it is not data: the next release's
	// cachelogin grants its login again).
	control, controlName, err := d.newVolume(ctx, c, "cache-control", false)
	if err != nil {
		return nil, err
	}
	c.control = volumeMount{volume: control, name: controlName, path: cacheControlPath}
	maxMemory := d.cfg.Limits[stacks.RoleCache].MemoryMB * 3 / 4
	c.Container, err = d.newContainer(ctx, c, containerSpec{
		role:       stacks.RoleCache,
		image:      image.RepoDigest,
		user:       redisUID,
		entrypoint: []string{"/bin/sh", "-c", RedisScript, "redis"},
		command:    pulumi.ToStringArray([]string{strconv.Itoa(maxMemory) + "mb"}),
		// redis-cli exits 0 on an error reply, so look for the PONG.
		healthcheck: shellHealthcheck(checkTiming{10 * time.Second, 3 * time.Second, 10 * time.Second, 3}, RedisCLI+" ping | grep -q PONG"),
		networks:    []attachment{{network: net.Internal, name: net.InternalName, aliases: []string{cacheAlias}}},
		// /data is redis-server's working directory; nothing is persisted
		// there (no RDB, no AOF), so memory is enough.
		tmpfs:       map[string]string{"/data": tmpfsOptions(16), "/tmp": tmpfsOptions(16)},
		volumes:     []volumeMount{c.control},
		wait:        true,
		stopTimeout: 15,
	})
	if err != nil {
		return nil, err
	}
	c.image = image.RepoDigest
	return c, ctx.RegisterResourceOutputs(c, pulumi.Map{"container": c.Container.Name})
}

// RedisScript starts redis-server; its first argument is maxmemory.
//
// Every start makes a new admin password (24 random bytes, in hex) into the
// control volume (mode 0600, for the redis user), and the ACL file there
// keeps the app's logins as the last ACL SAVE wrote them (their passwords
// as SHA-256 hashes), with two lines of this start: the admin's (its hash)
// and the default user's, off with no password (no anonymous or legacy
// AUTH; and since it is not "nopass", protected mode lets the app connect
// from the network). Redis listens on the network for the app and on a
// Unix socket in the control volume for the admin. No password is on a
// command line or in the environment.
const RedisScript = `set -eu
ctl=` + cacheControlPath + `
umask 077
admin=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ ${#admin} -eq 48 ] || { echo "redis: could not make the admin password" >&2; exit 1; }
printf '%s\n' "$admin" >"$ctl/admin.new"
mv "$ctl/admin.new" "$ctl/admin"
hash=$(printf '%s' "$admin" | sha256sum | cut -d ' ' -f 1)
touch "$ctl/users.acl"
grep -v -e '^user default ' -e '^user ` + cacheAdmin + ` ' "$ctl/users.acl" >"$ctl/users.acl.new" || true
printf 'user default off resetpass nocommands resetkeys resetchannels\nuser ` + cacheAdmin + ` on #%s nocommands +ping +info +acl +config|get +client|kill resetkeys resetchannels\n' "$hash" >>"$ctl/users.acl.new"
mv "$ctl/users.acl.new" "$ctl/users.acl"
exec redis-server --save '' --appendonly no --protected-mode yes --maxmemory "$1" --maxmemory-policy volatile-lru \
	--aclfile "$ctl/users.acl" --unixsocket "$ctl/redis.sock" --unixsocketperm 700`

// RedisCLI is redis-cli as the admin, over the control volume's socket,
// in a shell of the cache image that mounts it (the cache container, a
// release's cache one-shots); the password is in REDISCLI_AUTH for this
// one command.
const RedisCLI = `REDISCLI_AUTH="$(cat ` + cacheControlPath + `/admin)" redis-cli --no-auth-warning --user ` + cacheAdmin + ` -s ` + cacheControlPath + `/redis.sock`

// CacheLoginScript grants (grant) or retires (retire) the app's Redis
// logins, as the database's nbms-db-login does its roles: grant gives
// NBMS_CACHE_LOGIN the password in the file REDIS_PASSWORD_FILE names (on
// redis-cli's standard input, -x) and the app's rights (every key and
// channel, every command but the dangerous ones); retire turns every other
// user that can still log in off, with no password (the admin and the
// default user aside):
// connections already open keep working until the previous release goes,
// a new AUTH with the previous password fails. Each ends with ACL SAVE, so
// that a restart of Redis keeps them. redis-cli exits 0 on an error reply:
// every answer is checked.
const CacheLoginScript = `set -eu
login=${NBMS_CACHE_LOGIN:?NBMS_CACHE_LOGIN names the login}
fail() { echo "nbms-cache-login: $*" >&2; exit 1; }
cli() { ` + RedisCLI + ` "$@"; }
expect_ok() { [ "$1" = OK ] || fail "$2: $1"; }
case "${1:-}" in
grant)
	password=$(cat "${REDIS_PASSWORD_FILE:?REDIS_PASSWORD_FILE names the file with the password}")
	[ -n "$password" ] || fail "$REDIS_PASSWORD_FILE is empty"
	echo "nbms-cache-login: granting login $login its password" >&2
	expect_ok "$(printf '>%s' "$password" | cli -x ACL SETUSER "$login" reset on '~*' '&*' +@all -@dangerous)" "ACL SETUSER $login"
	;;
retire)
	retired=''
	# Every user that can still log in (on, or with a password): ACL LIST
	# prints "user <name> on|off <rules>", passwords as #<sha256>.
	for user in $(cli ACL LIST | awk '$3 == "on" || / (#[0-9a-f]+|nopass)( |$)/ { print $2 }'); do
		case "$user" in default | ` + cacheAdmin + ` | "$login") continue ;; esac
		expect_ok "$(cli ACL SETUSER "$user" off resetpass)" "ACL SETUSER $user off"
		retired="$retired $user"
	done
	echo "nbms-cache-login: retired every login but $login:${retired:- none (already retired)}" >&2
	;;
*) fail "usage: grant|retire" ;;
esac
expect_ok "$(cli ACL SAVE)" "ACL SAVE"
echo "nbms-cache-login: done" >&2`

// redisURL is the app's REDIS_URL (secret): the login of the password's
// generation.
func redisURL(sec *Secrets, generation int) pulumi.StringOutput {
	return pulumi.Sprintf("redis://%s:%s@%s:6379/0", cacheLogin(generation), sec.RedisPassword, cacheAlias)
}

// cacheLoginPasswordFile is the release's secret file cachelogin reads the
// login's password from.
const cacheLoginPasswordFile = "REDIS_PASSWORD"
