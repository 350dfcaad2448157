// Package stacks is the typed configuration of an NBMS deployment stack: the
// `nbms:*` keys of Pulumi.<stack>.yaml, their defaults, and the rules a
// stack must satisfy before the infra program registers a single resource.
//
// Validation reuses the app's env contract (package app/config) instead of
// copying it: origins go through config.CheckOrigin, hosts through the
// ALLOWED_HOSTS rule, and the app environment the stack would produce is
// parsed by config.Parse, so a stack that deploys is a stack the app accepts.
package stacks

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
)

// Namespace is the Pulumi config namespace of every key (the project name).
const Namespace = "nbms"

// TLS modes.
const (
	// TLSOff serves plain HTTP only (dev stacks on a laptop).
	TLSOff = "off"
	// TLSProvided serves HTTPS with the operator's certificate (nbms:tlsCertificate)
	// and key (nbms:tlsKey, a secret).
	TLSProvided = "provided"
)

// Container roles, as carried by the nbms.role label and as keys of Limits
// (declared in package conventions, shared with the policy pack).
const (
	RoleApp           = conventions.RoleApp
	RoleMigrate       = conventions.RoleMigrate
	RoleCollectstatic = conventions.RoleCollectstatic
	RoleProxy         = conventions.RoleProxy
	RoleDB            = conventions.RoleDB
	RoleCache         = conventions.RoleCache
	RoleBackup        = conventions.RoleBackup
	RoleSwitch        = conventions.RoleSwitch
	RoleSecrets       = conventions.RoleSecrets
	RoleDBLogin       = conventions.RoleDBLogin
	RoleDBRetire      = conventions.RoleDBRetire
	RoleCacheLogin    = conventions.RoleCacheLogin
	RoleCacheRetire   = conventions.RoleCacheRetire
)

// Roles lists every container role in deployment order.
var Roles = conventions.Roles

// Config is one stack's configuration. JSON names are the Pulumi config keys
// (without the "nbms:" namespace); object keys are set with
// `pulumi config set --path 'nbms:limits.app.memoryMb' 512`.
type Config struct {
	// Stack is the Pulumi stack name; it prefixes every Docker object name.
	Stack string `json:"-"`

	Profile            string   `json:"profile" validate:"oneof=prod dev"`
	Domain             string   `json:"domain" validate:"required,hostname_rfc1123"`
	AllowedHosts       []string `json:"allowedHosts"`
	CSRFTrustedOrigins []string `json:"csrfTrustedOrigins"`
	CORSOrigins        []string `json:"corsOrigins"`

	BindAddress string `json:"bindAddress" validate:"required,ip"`
	HTTPPort    int    `json:"httpPort" validate:"min=1,max=65535"`
	HTTPSPort   int    `json:"httpsPort" validate:"min=1,max=65535,nefield=HTTPPort"`

	TLSMode        string `json:"tlsMode" validate:"oneof=off provided"`
	TLSCertificate string `json:"tlsCertificate"`
	// TLSKey is the private key of TLSCertificate (secret config only).
	TLSKey Secret `json:"tlsKey" secret:"true"`
	// SentryDSN enables error reporting (secret config only; optional).
	SentryDSN Secret `json:"sentryDsn" secret:"true"`

	EdgeSubnet     string `json:"edgeSubnet" validate:"required,cidrv4"`
	InternalSubnet string `json:"internalSubnet" validate:"required,cidrv4"`
	// BackupSubnet is the backup network's (the database, the backup
	// scheduler and the backup relay), which a stack has only with
	// backup.offHost: fixed like the others, because the relay's address
	// in it (BackupRelayAddress) is written into the database's hosts file.
	BackupSubnet   string `json:"backupSubnet" validate:"required,cidrv4"`
	ProtectVolumes bool   `json:"protectVolumes"`
	// BackupS3Key and BackupS3KeySecret are the off-host repository's
	// access key (secret config only; required with backup.offHost).
	BackupS3Key       Secret `json:"backupS3Key" secret:"true"`
	BackupS3KeySecret Secret `json:"backupS3KeySecret" secret:"true"`
	// BackupCipherPass is the off-host repository's passphrase when the
	// operator gives it instead of the program generating it (secret
	// config only; with backup.offHost): a stack recovered without its
	// state reads its repository with the passphrase kept off the host.
	// Once given, it is given at every up (nbms-deploy refuses an up
	// without it): a generated one would not open the repository.
	BackupCipherPass Secret `json:"backupCipherPass" secret:"true"`
	// Recover rebuilds the database from the off-host repository when
	// the stack's data volume is created: "latest" (every transaction in
	// the archive) or an RFC 3339 time (the last transaction committed
	// before it); "": no recovery. `nbms-deploy recover` sets it for one
	// up of a stack with no database in its state (see the backup
	// runbook); the driver refuses it in a stack file.
	Recover string `json:"recover"`

	Images Images `json:"images"`
	// BuildCACertificates are extra certificate authorities (PEM) that the
	// app image's builder trusts for its HTTPS downloads (the Go toolchain
	// and modules), for a Docker host whose egress goes through a
	// TLS-inspecting proxy. They never reach a running image.
	BuildCACertificates string           `json:"buildCaCertificates"`
	Limits              map[string]Limit `json:"limits" validate:"required,dive"`
	Backup              Backup           `json:"backup"`
	Logs                Logs             `json:"logs"`
	App                 App              `json:"app"`
	// AppEnv tunes the env contract's stack-tunable variables by name
	// (`pulumi config set --path 'nbms:appEnv.RATE_LIMIT_PUBLIC_API' 600/1m`):
	// every variable whose declaration in app/config has no typed key here,
	// is not the program's and is not a secret (config.Var.StackTunable).
	// Each value is validated by the contract's own rules; unset, the
	// contract's default applies.
	AppEnv map[string]string `json:"appEnv"`
	Probe  Probe             `json:"probe"`
	// SecretGenerations rotates the secrets the program generates.
	SecretGenerations SecretGenerations `json:"secretGenerations"`
}

// SecretGenerations number the values of the secrets the program
// generates: 0 is the first; raising one generates that secret anew on the
// next up (`pulumi config set --path 'nbms:secretGenerations.secretKey' 1`).
// Any change generates a new value, a lower number too: the old value is
// gone, so only ever raise them.
type SecretGenerations struct {
	// SecretKey is the app's SECRET_KEY: a new app release, which goes live
	// blue/green like any other.
	SecretKey int `json:"secretKey" validate:"min=0"`
	// AppDBPassword is the password of the app's PostgreSQL login, and
	// RedisPassword of its Redis login: a new app release, whose login
	// (nbms_a for even generations, nbms_b for odd ones) gets the new
	// password while PostgreSQL and Redis keep running; the previous login
	// is turned off once the release is live.
	AppDBPassword int `json:"appDbPassword" validate:"min=0"`
	RedisPassword int `json:"redisPassword" validate:"min=0"`
	// DBSuperuserPassword is the postgres superuser's password: PostgreSQL
	// restarts with it (its entrypoint sets it at every start).
	DBSuperuserPassword int `json:"dbSuperuserPassword" validate:"min=0"`
}

// Images says what every image is built from. The program builds all four
// images (app, nginx, PostgreSQL/PostGIS/pgBackRest, Redis) from this one
// Debian base with Debian's packages (infra/images, app/Dockerfile), so a
// stack has exactly one third-party image to pin and to patch.
type Images struct {
	// Base is the Debian bookworm image every Dockerfile starts FROM, pinned
	// by content: name:tag@sha256:<manifest digest> to pull from a registry,
	// or sha256:<image ID> for an image already on the Docker host (what
	// scripts/base-image.sh makes where no registry is reachable).
	Base     string `json:"base" validate:"required,pinned"`
	Platform string `json:"platform" validate:"oneof=linux/amd64"` // of the built images: the db image copies the app image's binary
	// AppVersion is the app's version label, stamped into the binary and
	// the image (app/Dockerfile's NBMS_VERSION). A new value is a new
	// release, which goes live blue/green. Empty: "unversioned".
	AppVersion string `json:"appVersion,omitempty" validate:"omitempty,version"`
}

// Limit bounds one container.
type Limit struct {
	MemoryMB int     `json:"memoryMb" validate:"min=32,max=262144"`
	CPUs     float64 `json:"cpus" validate:"gt=0,lte=128"`
	// Nproc is the RLIMIT_NPROC ulimit: pulumi-docker v4.10 has no pids
	// limit, so this is the available bound on fork bombs. It counts every
	// process and thread of the container's UID on the host.
	Nproc int `json:"nproc" validate:"min=16,max=65536"`
}

// Backup is the pgBackRest schedule and retention.
type Backup struct {
	FullCron      string `json:"fullCron" validate:"required,cron"`
	DiffCron      string `json:"diffCron" validate:"required,cron"`
	RetentionFull int    `json:"retentionFull" validate:"min=1,max=9999999"`
	RetentionDiff int    `json:"retentionDiff" validate:"min=1,max=9999999"`
	ProcessMax    int    `json:"processMax" validate:"min=1,max=64"`
	// ArchiveTimeout is PostgreSQL's archive_timeout: with writes, a WAL
	// segment is archived at least this often, which bounds what a lost
	// host takes with it (the recovery point objective). Whole seconds,
	// from 10s to 1h.
	ArchiveTimeout string `json:"archiveTimeout" validate:"required,duration"`
	// DrillCron is when the backup scheduler runs a restore drill: the
	// latest backup of the off-host repository (the local one without
	// it) restored into a scratch instance beside the database, its
	// tables counted and its indexes checked with amcheck. 5-field cron,
	// UTC; empty: never, which the policy pack refuses in production.
	DrillCron string `json:"drillCron" validate:"omitempty,cron"`
	// OffHost is the second repository (pgBackRest's repo2), on
	// S3-compatible object storage away from this host; nil: none, and
	// the policy pack refuses a production stack without one.
	OffHost *OffHost `json:"offHost,omitempty"`
}

// OffHost is an S3-compatible repository away from the Docker host (AWS
// S3, Ceph RGW, MinIO, ...). Backups and WAL go there encrypted
// (aes-256-cbc) with a passphrase the program generates; its keys are
// secret config (nbms:backupS3Key, nbms:backupS3KeySecret). The database
// reaches it only through the backup relay, so it gets no route off the
// host.
type OffHost struct {
	// Endpoint is the service's host name, as its TLS certificate names
	// it, e.g. s3.eu-west-1.amazonaws.com.
	Endpoint string `json:"endpoint"`
	// Port is its HTTPS port; 0: 443.
	Port int `json:"port,omitempty"`
	// Address is the IPv4 address the relay connects to; empty: the
	// relay resolves Endpoint itself (again every 30 s). For a service
	// the Docker host's DNS does not know.
	Address string `json:"address,omitempty" validate:"omitempty,ipv4"`
	Bucket  string `json:"bucket"`
	Region  string `json:"region"`
	// Path is the repository's directory in the bucket, e.g. /nbms/prod.
	Path string `json:"path"`
	// PathStyle addresses the bucket in the URL path instead of a host
	// name per bucket: what most on-premises stores need.
	PathStyle bool `json:"pathStyle,omitempty"`
	// CACertificates (PEM) verify the service's certificate; empty: the
	// database image's system CAs (Debian's ca-certificates).
	CACertificates string `json:"caCertificates,omitempty"`
	// RetentionFull and RetentionDiff are this repository's own; 0: the
	// local repository's.
	RetentionFull int `json:"retentionFull,omitempty" validate:"min=0,max=9999999"`
	RetentionDiff int `json:"retentionDiff,omitempty" validate:"min=0,max=9999999"`
}

// Bounds of nbms:backup.archiveTimeout: below, a mostly idle database
// fills the repositories with nearly empty 16 MB segments; above, a lost
// host can take an hour of work with it.
const (
	minArchiveTimeout = 10 * time.Second
	maxArchiveTimeout = time.Hour
)

// ArchiveTimeoutDuration is ArchiveTimeout parsed (call it on a validated
// configuration).
func (b Backup) ArchiveTimeoutDuration() time.Duration {
	d, _ := time.ParseDuration(b.ArchiveTimeout)
	return d
}

func (b Backup) archiveTimeoutProblem() string {
	d, err := time.ParseDuration(b.ArchiveTimeout)
	switch {
	case err != nil || d <= 0:
		return "" // the field rule's
	case d%time.Second != 0 || d < minArchiveTimeout || d > maxArchiveTimeout:
		return fmt.Sprintf("is %s; want whole seconds from %s to %s", b.ArchiveTimeout, minArchiveTimeout, maxArchiveTimeout)
	}
	return ""
}

// HTTPSPort is the repository's port: Port, or S3's default.
func (o *OffHost) HTTPSPort() int { return cmp.Or(o.Port, pgbackrest.DefaultS3Port) }

// OffHostRepo is the off-host repository as pgBackRest's renderer takes
// it, with the program's paths inside the containers (caFile: "" for the
// system's CAs; spoolPath: archive-async's spool). Call it only when
// OffHost is set.
func (b Backup) OffHostRepo(caFile, spoolPath string) pgbackrest.S3Repo {
	o := b.OffHost
	if o.CACertificates == "" {
		caFile = ""
	}
	return pgbackrest.S3Repo{
		Endpoint: o.Endpoint, Port: o.HTTPSPort(), Bucket: o.Bucket, Region: o.Region, Path: o.Path,
		PathStyle: o.PathStyle, CAFile: caFile, SpoolPath: spoolPath,
		RetentionFull: cmp.Or(o.RetentionFull, b.RetentionFull), RetentionDiff: cmp.Or(o.RetentionDiff, b.RetentionDiff),
	}
}

// offHostKeys maps pgbackrest.S3Repo's fields to their stack keys; the
// ones missing are the program's (paths inside the containers).
var offHostKeys = map[string]string{
	"Endpoint": "endpoint", "Port": "port", "Bucket": "bucket", "Region": "region", "Path": "path",
	"RetentionFull": "retentionFull", "RetentionDiff": "retentionDiff",
}

func (c *Config) offHostProblems() []Problem {
	var out []Problem
	add := func(key, reason string) { out = append(out, Problem{Key: Namespace + ":" + key, Reason: reason}) }
	keys := []struct {
		key    string
		secret Secret
	}{{"backupS3Key", c.BackupS3Key}, {"backupS3KeySecret", c.BackupS3KeySecret}}
	if c.Backup.OffHost == nil {
		for _, k := range append(keys, struct {
			key    string
			secret Secret
		}{"backupCipherPass", c.BackupCipherPass}) {
			if key, s := k.key, k.secret; s.IsSet() {
				add(key, "is set, but nbms:backup.offHost is not: it belongs to an off-host repository")
			}
		}
		if c.Recover != "" {
			add("recover", "recovers from the off-host repository, and nbms:backup.offHost names none")
		}
		return out
	}
	if p := c.BackupCipherPass.value; p != "" && (!pgbackrest.ValidSecret(p) || len(p) < minCipherPassLength) {
		add("backupCipherPass", fmt.Sprintf("must be at least %d printable characters without spaces (the program generates 64)", minCipherPassLength))
	}
	switch _, err := time.Parse(time.RFC3339Nano, c.Recover); {
	case c.Recover == "" || c.Recover == RecoverLatest:
	case err != nil:
		add("recover", fmt.Sprintf("is %q; want %q or an RFC 3339 time such as 2026-12-07T14:05:00Z", c.Recover, RecoverLatest))
	}
	if c.Recover != "" && !c.BackupCipherPass.IsSet() {
		add("recover", "reads the off-host repository, which only its passphrase opens: give it as nbms:backupCipherPass (a new stack's generated one would not)")
	}
	// The renderer's own rules, so that both refuse the same values.
	inherited := map[string]bool{"RetentionFull": c.Backup.OffHost.RetentionFull == 0, "RetentionDiff": c.Backup.OffHost.RetentionDiff == 0}
	for _, p := range c.Backup.OffHostRepo("/ca.pem", "/spool").Problems() {
		// An inherited retention is the local one's, reported there.
		if key, ok := offHostKeys[p.Field]; ok && !inherited[p.Field] {
			add("backup.offHost."+key, p.Reason)
		}
	}
	if err := CheckCACertificates(c.Backup.OffHost.CACertificates); err != nil {
		add("backup.offHost.caCertificates", err.Error())
	}
	for _, k := range keys {
		if key, s := k.key, k.secret; !s.IsSet() {
			add(key, fmt.Sprintf("required with backup.offHost: `pulumi config set --secret nbms:%s <value>`", key))
		} else if !pgbackrest.ValidSecret(s.value) {
			add(key, "must be printable characters without spaces")
		}
	}
	backup, err := netip.ParsePrefix(c.BackupSubnet)
	if err != nil {
		return out // reported by the field rule
	}
	if backup.Bits() > maxBackupSubnetBits {
		add("backupSubnet", fmt.Sprintf("is a /%d; it needs at least a /%d: Docker hands out only its upper half, and the relay's address is fixed in the lower", backup.Bits(), maxBackupSubnetBits))
	}
	for _, other := range []struct{ key, subnet string }{{"edgeSubnet", c.EdgeSubnet}, {"internalSubnet", c.InternalSubnet}} {
		if p, err := netip.ParsePrefix(other.subnet); err == nil && backup.Overlaps(p) {
			add("backupSubnet", fmt.Sprintf("%s overlaps %s %s", c.BackupSubnet, other.key, other.subnet))
		}
	}
	return out
}

// RecoverLatest is nbms:recover's value for a recovery of every
// transaction the off-host repository's archive holds.
const RecoverLatest = "latest"

// minCipherPassLength is the shortest passphrase nbms:backupCipherPass
// takes: the generated ones have 64 characters.
const minCipherPassLength = 20

// maxBackupSubnetBits is the smallest backup subnet (a /28: the gateway
// and the relay in its lower half, eight addresses for Docker to hand out).
const maxBackupSubnetBits = 28

// BackupRelayAddress is the backup relay's fixed address: the second of
// the backup subnet (Docker's gateway takes the first), below the upper
// half Docker hands out (BackupDynamicRange).
func (c *Config) BackupRelayAddress() string {
	a := netip.MustParsePrefix(c.BackupSubnet).Masked().Addr() // validated
	return a.Next().Next().String()
}

// BackupDynamicRange is the upper half of the backup subnet, where Docker
// picks the database's and the scheduler's addresses.
func (c *Config) BackupDynamicRange() string { return upperHalf(c.BackupSubnet) }

// Logs is the json-file log rotation of every container.
type Logs struct {
	MaxSize string `json:"maxSize" validate:"required,logsize"`
	MaxFile int    `json:"maxFile" validate:"min=1,max=100"`
}

// App holds the app settings the stack decides (the rest keep the env
// contract's defaults).
type App struct {
	HSTSSeconds         int    `json:"hstsSeconds" validate:"gte=0"`
	HSTSPreload         bool   `json:"hstsPreload"`
	MaxUploadBytes      int64  `json:"maxUploadBytes" validate:"gt=0"`
	MaxRequestBodyBytes int64  `json:"maxRequestBodyBytes" validate:"gt=0"`
	LogLevel            string `json:"logLevel" validate:"oneof=debug info warn error"`
	DBMaxConns          int    `json:"dbMaxConns" validate:"min=1,max=1000"`
	LoginRatePerMinute  int    `json:"loginRatePerMinute" validate:"min=1,max=6000"`
	LoginBurst          int    `json:"loginBurst" validate:"min=0,max=1000"`
	// AcceptClientRequestID keeps a client's well-formed X-Request-ID at
	// the edge, so a caller can trace its own request through the logs.
	AcceptClientRequestID bool `json:"acceptClientRequestId"`
	// EdgeCacheSeconds is how long nginx answers repeats of a public
	// answer itself (0: never): a burst of identical anonymous reads costs
	// the app one request a second.
	EdgeCacheSeconds int `json:"edgeCacheSeconds" validate:"min=0,max=60"`
}

// Probe configures the post-deploy readiness probe.
type Probe struct {
	// BaseURL overrides where the probe connects (default: the published
	// bind address and port, with Host set to the domain).
	BaseURL string `json:"baseUrl" validate:"omitempty,url"`
	Timeout string `json:"timeout" validate:"required,duration"`
}

// Secret is a secret config value. It never prints, marshals or logs its
// value; Output hands it to Pulumi as a secret.
type Secret struct{ value string }

// NewSecret wraps a value read from secret config.
func NewSecret(v string) Secret { return Secret{value: v} }

// IsSet reports whether a value was given.
func (s Secret) IsSet() bool { return s.value != "" }

// Output returns the value as a Pulumi secret.
func (s Secret) Output() pulumi.StringOutput {
	return pulumi.ToSecret(pulumi.String(s.value)).(pulumi.StringOutput)
}

// Digest is the SHA-256 of the value, in hex ("" when unset): what a
// release hash may cover without carrying the value.
func (s Secret) Digest() string {
	if s.value == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s.value))
	return hex.EncodeToString(sum[:])
}

// String hides the value from fmt and logs.
func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return "[secret]"
}

// MarshalJSON hides the value from JSON dumps.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// DefaultBaseImage is the production base image (see Images.Base).
const DefaultBaseImage = "debian:bookworm-slim@sha256:4b50eb66f977b4062683ff434ef18ac191da862dbe966961bc11990cf5791a8d"

// Paths inside the containers that the app settings and the renderers share.
const (
	StaticRoot = "/srv/nbms/static"
	MediaRoot  = "/srv/nbms/media"
	AppPort    = 8000
)

// Defaults is the one place defaults live: production-safe values. The
// project schema in Pulumi.yaml is generated from it (ProjectYAML) and the
// dev stack file overrides what a laptop needs.
func Defaults() Config {
	return Config{
		Profile: "prod",
		// Loopback until the operator names the public interface: the
		// policy pack refuses 0.0.0.0 / :: (CIS 5.14).
		BindAddress: "127.0.0.1",
		HTTPPort:    80,
		HTTPSPort:   443,
		TLSMode:     TLSProvided,
		// Both networks have fixed subnets, outside Docker's default
		// address pools (172.17-31.0.0/16, 192.168.0.0/16): a network Docker
		// numbers itself can then never take a range the stack needs.
		EdgeSubnet:     "172.16.238.0/24",
		InternalSubnet: "172.16.239.0/24",
		BackupSubnet:   "172.16.237.0/27",
		// Protected volumes survive `pulumi destroy` and a replace.
		ProtectVolumes: true,
		Images: Images{
			// Debian's bookworm-slim, by the digest of its multi-platform
			// index. Re-check before changing it:
			//   docker buildx imagetools inspect debian:bookworm-slim
			Base:     DefaultBaseImage,
			Platform: "linux/amd64",
		},
		Limits: map[string]Limit{
			RoleApp:           {MemoryMB: 512, CPUs: 1, Nproc: 256},
			RoleMigrate:       {MemoryMB: 256, CPUs: 0.5, Nproc: 128},
			RoleCollectstatic: {MemoryMB: 128, CPUs: 0.5, Nproc: 128},
			// RLIMIT_NPROC counts every process of the container's UID on the
			// host, not the container's own: nginx's uid 101 (the proxy, the
			// switch, the relay) is also Debian's postgres on a host that
			// runs PostgreSQL, every backend of which counts (the CI
			// machine, whose PostgreSQL serves the test suite, refused a
			// secrets holder's /bin/true with EAGAIN at a limit of 16).
			// Hence room for the host's processes too.
			RoleProxy:   {MemoryMB: 128, CPUs: 0.5, Nproc: 1024},
			RoleSwitch:  {MemoryMB: 64, CPUs: 0.5, Nproc: 1024},
			RoleSecrets: {MemoryMB: 32, CPUs: 0.1, Nproc: 1024},
			// psql over the socket: one client process and its shell.
			RoleDBLogin:  {MemoryMB: 64, CPUs: 0.25, Nproc: 1024},
			RoleDBRetire: {MemoryMB: 64, CPUs: 0.25, Nproc: 1024},
			// redis-cli: uid 998, like the cache.
			RoleCacheLogin:  {MemoryMB: 32, CPUs: 0.25, Nproc: 1024},
			RoleCacheRetire: {MemoryMB: 32, CPUs: 0.25, Nproc: 1024},
			// RLIMIT_NPROC counts a UID's processes host-wide: db and backup
			// both run as 999 (and cache as 998), so leave room for both.
			RoleDB:     {MemoryMB: 1024, CPUs: 1, Nproc: 1024},
			RoleCache:  {MemoryMB: 256, CPUs: 0.5, Nproc: 1024},
			RoleBackup: {MemoryMB: 512, CPUs: 1, Nproc: 1024},
			// nginx's stream module, one worker relaying a few TLS
			// connections at a time; uid 101, like the proxy.
			conventions.RoleBackupRelay: {MemoryMB: 64, CPUs: 0.25, Nproc: 1024},
			// The restore of a recovery: pgBackRest, then PostgreSQL
			// replaying the archive, as the database does.
			conventions.RoleRestore: {MemoryMB: 1024, CPUs: 1, Nproc: 1024},
		},
		Backup: Backup{
			FullCron: "30 1 * * 0", DiffCron: "30 1 * * 1-6", RetentionFull: 2, RetentionDiff: 6, ProcessMax: 2, ArchiveTimeout: "60s",
			// Wednesday, away from the backups' 01:30.
			DrillCron: "15 4 * * 3",
		},
		Logs: Logs{MaxSize: "10m", MaxFile: 5},
		App: App{
			HSTSSeconds: 63072000, MaxUploadBytes: 52428800, MaxRequestBodyBytes: 1048576,
			LogLevel: "info", DBMaxConns: 10, LoginRatePerMinute: 5, LoginBurst: 3,
			AcceptClientRequestID: true, EdgeCacheSeconds: 1,
		},
		Probe: Probe{Timeout: "3m"},
	}
}

// Values is a stack's raw configuration, as Pulumi hands it to the program.
type Values struct {
	// Raw maps keys without the namespace to their raw values: strings as
	// is, numbers and booleans as text, arrays and objects as JSON.
	Raw map[string]string
	// Secret reports whether a key was set with `--secret`.
	Secret func(key string) bool
}

// Problem is one bad key.
type Problem struct {
	Key    string // e.g. nbms:corsOrigins[0]
	Reason string
}

// Error lists every problem of a stack configuration, so the operator fixes
// them in one round. It never contains a secret value.
type Error struct {
	Stack    string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid stack configuration for stack %q: %d problem", e.Stack, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  - %s: %s", p.Key, p.Reason)
	}
	return b.String()
}

// Keys names the bad keys in order, without repeats.
func (e *Error) Keys() []string {
	var out []string
	for _, p := range e.Problems {
		if !slices.Contains(out, p.Key) {
			out = append(out, p.Key)
		}
	}
	return out
}

// Load reads the stack configuration from the Pulumi context and validates
// it. It registers nothing, so a bad configuration stops the program before
// any resource exists.
func Load(ctx *pulumi.Context) (*Config, error) {
	raw := map[string]string{}
	for _, key := range Keys() {
		if v, ok := ctx.GetConfig(Namespace + ":" + key); ok {
			raw[key] = v
		}
	}
	return Parse(ctx.Stack(), Values{
		Raw:    raw,
		Secret: func(key string) bool { return ctx.IsConfigSecret(Namespace + ":" + key) },
	})
}

// SecretKeys lists the top-level keys that are secret config only.
func SecretKeys() []string {
	var out []string
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("secret") == "true" {
			out = append(out, jsonName(f))
		}
	}
	return out
}

// IsSecretKey reports whether key (without the namespace) is secret config
// only.
func IsSecretKey(key string) bool { return slices.Contains(SecretKeys(), key) }

// Keys lists every top-level config key.
func Keys() []string {
	var out []string
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		if name := jsonName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// Parse decodes raw values over Defaults and validates the result. It is
// pure: tests call it without Pulumi.
func Parse(stack string, v Values) (*Config, error) {
	c := Defaults()
	c.Stack = stack
	var problems []Problem
	add := func(key, reason string) {
		problems = append(problems, Problem{Key: Namespace + ":" + key, Reason: reason})
	}

	if !stackNameRE.MatchString(stack) {
		problems = append(problems, Problem{Key: "stack", Reason: fmt.Sprintf("%q must be lower-case letters, digits and dashes (it prefixes Docker object names)", stack)})
	}
	known := map[string]bool{}
	rv := reflect.ValueOf(&c).Elem()
	for i := range rv.NumField() {
		sf := rv.Type().Field(i)
		key := jsonName(sf)
		if key == "" {
			continue
		}
		known[key] = true
		raw, ok := v.Raw[key]
		if !ok {
			continue
		}
		secretKey := sf.Tag.Get("secret") == "true"
		if secretKey {
			if raw != "" && (v.Secret == nil || !v.Secret(key)) {
				add(key, fmt.Sprintf("must be set as a secret: `pulumi config set --secret %s:%s` (the plaintext value must also be removed from the stack file and rotated)", Namespace, key))
			}
			rv.Field(i).Set(reflect.ValueOf(NewSecret(strings.TrimSpace(raw))))
			continue
		}
		if key == appEnvKey && v.Secret != nil && v.Secret(key) {
			add(key, "is set as a secret, but its values go into the app container's plain environment and the release label's hash: "+
				"a secret variable is either generated by the program or has its own secret key (nbms:sentryDsn)")
		}
		if err := decodeField(rv.Field(i), raw); err != nil {
			var entries entryErrors
			if !errors.As(err, &entries) {
				add(key, err.Error())
			}
			for _, e := range entries {
				add(key+"."+e.Key, e.Reason)
			}
		}
	}
	for key := range v.Raw {
		if !known[key] {
			add(key, "unknown key (typo?); known keys: "+strings.Join(Keys(), ", "))
		}
	}
	slices.SortStableFunc(problems, func(a, b Problem) int { return strings.Compare(a.Key, b.Key) })
	// The rules run even after a decoding problem, so one error names every
	// bad key; a key that did not decode keeps its default and is not
	// reported twice.
	undecoded := slices.Clone(problems)
	for _, p := range c.problems() {
		if !slices.ContainsFunc(undecoded, func(u Problem) bool {
			return p.Key == u.Key || strings.HasPrefix(p.Key, u.Key+".") || strings.HasPrefix(p.Key, u.Key+"[")
		}) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return &c, &Error{Stack: stack, Problems: problems}
	}
	return &c, nil
}

var stackNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// decodeField sets one top-level field from its raw text. Objects merge over
// the defaults, so a stack sets only what differs; unknown nested keys are
// refused (they are typos).
func decodeField(f reflect.Value, raw string) error {
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
		return nil
	case reflect.Map:
		if f.Type().Elem().Kind() == reflect.String {
			return decodeStrings(f, raw)
		}
		// A partial limits object overrides role by role, field by field.
		var roles map[string]json.RawMessage
		if err := strictJSON(raw, &roles); err != nil {
			return err
		}
		for role, one := range roles {
			merged := reflect.New(f.Type().Elem()).Elem()
			if old := f.MapIndex(reflect.ValueOf(role)); old.IsValid() {
				merged.Set(old)
			}
			if err := strictJSON(string(one), merged.Addr().Interface()); err != nil {
				return fmt.Errorf("%s: %w", role, err)
			}
			f.SetMapIndex(reflect.ValueOf(role), merged)
		}
		return nil
	}
	return strictJSON(raw, f.Addr().Interface())
}

// decodeStrings sets a map of names to text values (appEnv). The values
// are text as the container's environment holds it; numbers and booleans
// are taken as their text, because `pulumi config set --path` stores
// "600" and "true" as a number and a boolean. An entry of another type is
// reported against its own key, and the other entries are kept. The raw
// text is never quoted: a secret pasted here by mistake stays unechoed.
func decodeStrings(f reflect.Value, raw string) error {
	var entries map[string]any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&entries); err != nil || entries == nil {
		return errors.New("must be an object of NAME: value (`pulumi config set --path 'nbms:appEnv.NAME' value`)")
	}
	out := reflect.MakeMapWithSize(f.Type(), len(entries))
	var bad entryErrors
	for name, v := range entries {
		var text string
		switch v := v.(type) {
		case string:
			text = v
		case json.Number:
			text = v.String()
		case bool:
			text = strconv.FormatBool(v)
		default:
			bad = append(bad, Problem{Key: name, Reason: "must be a string, a number or a boolean (the variable's text)"})
			continue
		}
		out.SetMapIndex(reflect.ValueOf(name), reflect.ValueOf(text))
	}
	f.Set(out)
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// entryErrors are problems of single entries of an object key, each Key
// relative to it.
type entryErrors []Problem

func (e entryErrors) Error() string {
	var parts []string
	for _, p := range e {
		parts = append(parts, p.Key+": "+p.Reason)
	}
	return strings.Join(parts, "; ")
}

func strictJSON(raw string, into any) error {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return fmt.Errorf("%s must be of type %s", orValue(typeErr.Field), typeErr.Type)
		}
		return fmt.Errorf("cannot decode %q: %s", clip(raw), strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func orValue(field string) string {
	if field == "" {
		return "the value"
	}
	return field
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

var validate = sync.OnceValue(func() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string { return jsonName(f) })
	_ = v.RegisterValidation("pinned", func(fl validator.FieldLevel) bool { return CheckImageRef(fl.Field().String()) == nil })
	// The backup scheduler's own parser, not validator's laxer "cron".
	_ = v.RegisterValidation("cron", func(fl validator.FieldLevel) bool { return config.CheckCronSpec(fl.Field().String()) == nil })
	_ = v.RegisterValidation("version", func(fl validator.FieldLevel) bool { return versionRE.MatchString(fl.Field().String()) })
	_ = v.RegisterValidation("logsize", func(fl validator.FieldLevel) bool { return logSizeRE.MatchString(fl.Field().String()) })
	_ = v.RegisterValidation("duration", func(fl validator.FieldLevel) bool {
		d, err := time.ParseDuration(fl.Field().String())
		return err == nil && d > 0
	})
	return v
})

var (
	logSizeRE = regexp.MustCompile(`^[1-9][0-9]*[kmg]$`)
	// versionRE: a label that is safe in a build argument, a Docker label
	// and a log line (semver fits: 1.4.0-rc.2+build.7).
	versionRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	imageRefRE = regexp.MustCompile(`^([a-z0-9][a-z0-9._/-]*(?::[0-9]+)?/)?[a-z0-9][a-z0-9._/-]*:([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})@sha256:[0-9a-f]{64}$`)
	imageIDRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// CheckImageRef accepts an image pinned by content: name:tag@sha256:<digest>
// (never a latest tag: the tag tells humans what runs, the digest makes it
// so) or a local image ID, sha256:<64 hex digits>, which is the hash of
// the image's configuration and so pins it as firmly.
func CheckImageRef(ref string) error {
	if imageIDRE.MatchString(ref) {
		return nil
	}
	m := imageRefRE.FindStringSubmatch(ref)
	if m == nil {
		return fmt.Errorf("%q must be name:tag@sha256:<64 hex digits> or a local image ID sha256:<64 hex digits>", ref)
	}
	if strings.EqualFold(m[2], "latest") {
		return fmt.Errorf("%q uses the tag latest; pin a version", ref)
	}
	return nil
}

// CheckCACertificates accepts "" or PEM blocks that are all CA
// certificates: nothing else (a private key pasted by mistake, a server
// certificate) may travel into a build.
func CheckCACertificates(pemText string) error {
	rest := []byte(strings.TrimSpace(pemText))
	for n := 1; len(rest) > 0; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
			return fmt.Errorf("block %d is not PEM: give CA certificates in PEM only", n)
		case block.Type != "CERTIFICATE":
			return fmt.Errorf("block %d is a %s, not a CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("certificate %d: %v", n, err)
		}
		if !cert.IsCA {
			return fmt.Errorf("certificate %d (%s) is not a CA certificate", n, cert.Subject)
		}
		rest = bytes.TrimSpace(rest)
	}
	return nil
}

// problems applies the field rules, then the cross-field and env-contract
// rules, naming each bad key.
func (c *Config) problems() []Problem {
	var out []Problem
	add := func(key, reason string) { out = append(out, Problem{Key: Namespace + ":" + key, Reason: reason}) }

	if err := validate().Struct(c); err != nil {
		var verrs validator.ValidationErrors
		if !errors.As(err, &verrs) {
			add("?", err.Error())
		}
		for _, fe := range verrs {
			add(fieldKey(fe.Namespace()), ruleReason(fe))
		}
	}
	for _, role := range Roles {
		if _, ok := c.Limits[role]; !ok {
			add("limits."+role, "missing: every container role needs memoryMb, cpus and nproc")
		}
	}
	for role := range c.Limits {
		if !slices.Contains(Roles, role) {
			add("limits."+role, "unknown role; roles: "+strings.Join(Roles, ", "))
		}
	}
	prod := c.Profile == "prod"
	if a, err := netip.ParseAddr(c.BindAddress); err == nil && a.IsUnspecified() {
		add("bindAddress", fmt.Sprintf("%q publishes on every host address; name the interface that should serve traffic (CIS 5.14)", c.BindAddress))
	}

	// Origins: the app's own rule, entry by entry.
	for name, list := range map[string][]string{"csrfTrustedOrigins": c.CSRFTrustedOrigins, "corsOrigins": c.CORSOrigins} {
		for i, o := range list {
			if err := config.CheckOrigin(o, prod); err != nil {
				add(fmt.Sprintf("%s[%d]", name, i), err.Error())
			}
		}
	}
	// Hosts: the ALLOWED_HOSTS rule, entry by entry.
	for i, h := range c.AllowedHosts {
		if reason := hostProblem(h); reason != "" {
			add(fmt.Sprintf("allowedHosts[%d]", i), reason)
		}
	}

	switch {
	case prod && c.TLSMode != TLSProvided:
		add("tlsMode", "must be provided in production: the app redirects to HTTPS and sends HSTS")
	case c.TLSMode == TLSProvided:
		out = append(out, c.tlsProblems()...)
	case c.TLSCertificate != "" || c.TLSKey.IsSet():
		add("tlsMode", "is off but a certificate or key is configured; set it to provided or remove them")
	}
	if prod && c.App.HSTSSeconds < config.MinHSTSSeconds {
		add("app.hstsSeconds", fmt.Sprintf("is %d; production needs at least %d (one year)", c.App.HSTSSeconds, config.MinHSTSSeconds))
	}
	if err := CheckCACertificates(c.BuildCACertificates); err != nil {
		add("buildCaCertificates", err.Error())
	}
	if edge, err := netip.ParsePrefix(c.EdgeSubnet); err == nil {
		if edge.Bits() > maxEdgeSubnetBits {
			add("edgeSubnet", fmt.Sprintf("is a /%d; it needs at least a /%d: Docker hands out only its upper half, and the lower half is kept for addresses fixed by hand", edge.Bits(), maxEdgeSubnetBits))
		}
		if internal, err := netip.ParsePrefix(c.InternalSubnet); err == nil && edge.Overlaps(internal) {
			add("internalSubnet", fmt.Sprintf("%s overlaps edgeSubnet %s", c.InternalSubnet, c.EdgeSubnet))
		}
	}
	if c.App.MaxUploadBytes < c.App.MaxRequestBodyBytes {
		add("app.maxUploadBytes", fmt.Sprintf("is %d, below app.maxRequestBodyBytes (%d)", c.App.MaxUploadBytes, c.App.MaxRequestBodyBytes))
	}
	if reason := c.Backup.archiveTimeoutProblem(); reason != "" {
		add("backup.archiveTimeout", reason)
	}
	out = append(out, c.offHostProblems()...)
	out = append(out, c.appEnvProblems()...)
	if len(out) > 0 {
		return out
	}
	// Last net: the whole environment the app would get, through the app's
	// own loader.
	if _, err := c.AppConfig(); err != nil {
		var cerr *config.Error
		if !errors.As(err, &cerr) {
			return append(out, Problem{Key: Namespace + ":?", Reason: err.Error()})
		}
		for _, p := range cerr.Problems {
			key := "(derived " + p.Var + ")"
			if v, ok := config.Lookup(p.Var); ok && v.StackKey() != "" {
				key = strings.TrimPrefix(v.StackKey(), Namespace+":")
			}
			reason := p.Reason
			if p.Check != "" {
				reason = "[" + p.Check + "] " + reason
			}
			add(key, reason)
		}
	}
	return out
}

// AppConfig is the app's configuration as the stack's containers get it,
// parsed by the app's own loader: what the app will enforce, and what the
// edge must match (its security headers). The secrets are stand-ins of
// the right shape; the generated ones do not exist before the deployment.
func (c *Config) AppConfig() (*config.Settings, error) {
	env := c.AppSettings()
	env["SECRET_KEY"] = "validation-stand-in-Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iOoPqSTxVzY8wKj3"
	env["DATABASE_URL"] = "postgres://nbms:stand-in@db:5432/nbms?sslmode=disable"
	env["REDIS_URL"] = "redis://:stand-in@cache:6379/0"
	if c.SentryDSN.IsSet() {
		env["SENTRY_DSN"] = c.SentryDSN.value
	}
	return config.Parse(env)
}

// appEnvKey is the key of Config.AppEnv: config.StackEnvKey without the
// namespace (the contract names it in the settings reference).
var appEnvKey = strings.TrimPrefix(config.StackEnvKey, Namespace+":")

// appEnvProblems checks each nbms:appEnv entry against the env contract:
// the name must be a variable the operator may tune (not unknown, not one
// with a typed key, not the program's, not a secret) and the value must
// pass the variable's own rules. The rules over the whole environment (the
// deploy checks) run after, through the app's loader.
func (c *Config) appEnvProblems() []Problem {
	var out []Problem
	profile := config.Profile(c.Profile)
	for _, name := range slices.Sorted(maps.Keys(c.AppEnv)) {
		key := Namespace + ":" + appEnvKey + "." + name
		v, ok := config.Lookup(name)
		var reason string
		switch {
		case !ok:
			reason = "is not a variable of the env contract (app/config); the settings reference lists the ones a stack tunes (" + config.ReferencePath + ")"
			if upper, ok := config.Lookup(strings.ToUpper(name)); ok && upper.StackTunable() {
				reason = fmt.Sprintf("is not a variable of the env contract (app/config); did you mean %s?", upper.Name)
			}
		case v.StackTunable():
			if strings.TrimSpace(c.AppEnv[name]) == "" {
				reason = fmt.Sprintf("is empty; remove the entry to keep the contract's default (`pulumi config rm --path '%s'`)", key)
			} else if err := v.Validate(c.AppEnv[name], profile); err != nil {
				reason = err.Error()
			}
		case v.StackKey() != "":
			reason = fmt.Sprintf("is set by the typed key %s; set that key instead", v.StackKey())
			if v.Secret {
				reason += " (a secret: `pulumi config set --secret " + v.StackKey() + "`)"
			}
		case v.Stack == config.ProgramOwned:
			reason = "is set by the program (it follows from how it wires the containers, or is a generated secret); a stack cannot set it"
		default:
			reason = "is a secret variable; nbms:appEnv holds plain values only, and the stack has no key for this secret"
		}
		if reason != "" {
			out = append(out, Problem{Key: key, Reason: reason})
		}
	}
	return out
}

// hostProblem applies the env contract's ALLOWED_HOSTS rule to one entry by
// asking the contract itself, so the two can never disagree.
func hostProblem(h string) string {
	if strings.Contains(h, ",") {
		return fmt.Sprintf("%q contains a comma; give one host per entry", h)
	}
	if strings.TrimSpace(h) == "" {
		return "empty host"
	}
	_, err := config.Parse(map[string]string{config.EnvProfile: "dev", "ALLOWED_HOSTS": h})
	var cerr *config.Error
	if errors.As(err, &cerr) {
		for _, p := range cerr.Problems {
			if p.Var == "ALLOWED_HOSTS" {
				return p.Reason
			}
		}
	}
	return ""
}

func (c *Config) tlsProblems() []Problem {
	var out []Problem
	add := func(key, reason string) { out = append(out, Problem{Key: Namespace + ":" + key, Reason: reason}) }
	if strings.TrimSpace(c.TLSCertificate) == "" {
		add("tlsCertificate", "required when tlsMode is provided: `pulumi config set nbms:tlsCertificate -- \"$(cat fullchain.pem)\"`")
	}
	if !c.TLSKey.IsSet() {
		add("tlsKey", "required when tlsMode is provided: `pulumi config set --secret nbms:tlsKey -- \"$(cat privkey.pem)\"`")
	}
	if len(out) > 0 {
		return out
	}
	block, _ := pem.Decode([]byte(c.TLSCertificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return append(out, Problem{Namespace + ":tlsCertificate", "is not a PEM certificate"})
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return append(out, Problem{Namespace + ":tlsCertificate", "cannot parse the certificate: " + err.Error()})
	}
	for _, host := range c.PublicHosts() {
		if hostProblem(host) != "" {
			continue // reported against allowedHosts
		}
		if err := leaf.VerifyHostname(strings.TrimPrefix(host, ".")); err != nil {
			add("tlsCertificate", fmt.Sprintf("does not cover %q", host))
		}
	}
	// The key error text never includes key material.
	if _, err := tls.X509KeyPair([]byte(c.TLSCertificate), []byte(c.TLSKey.value)); err != nil {
		add("tlsKey", "does not match tlsCertificate or is not a PEM private key")
	}
	return out
}

func fieldKey(ns string) string {
	// "Config.limits[app].memoryMb" -> "limits.app.memoryMb"
	ns = strings.TrimPrefix(ns, "Config.")
	ns = strings.NewReplacer("[", ".", "]", "").Replace(ns)
	return ns
}

func ruleReason(fe validator.FieldError) string {
	shown := fmt.Sprintf("%v", fe.Value())
	switch fe.Tag() {
	case "required":
		return "required"
	case "pinned":
		return CheckImageRef(shown).Error()
	case "logsize":
		return fmt.Sprintf("%q must be a size like 10m (k, m or g)", shown)
	case "version":
		return fmt.Sprintf("%q must be a version label of letters, digits and ._+- (at most 64, like 1.4.0-rc.2)", shown)
	case "duration":
		return fmt.Sprintf("%q must be a positive duration like 3m", shown)
	case "cron":
		return fmt.Sprintf("%q is not a cron expression (minute hour day month weekday)", shown)
	case "nefield":
		return fmt.Sprintf("%s must differ from %s", shown, fe.Param())
	}
	if fe.Param() != "" {
		return fmt.Sprintf("%q does not satisfy %s=%s", shown, fe.Tag(), fe.Param())
	}
	return fmt.Sprintf("%q does not satisfy %s", shown, fe.Tag())
}

// TLS reports whether the proxy serves HTTPS.
func (c *Config) TLS() bool { return c.TLSMode == TLSProvided }

// maxEdgeSubnetBits is the smallest edge subnet (a /26): Docker picks
// addresses from its upper half only, which leaves the lower half to
// addresses an operator fixes by hand (and the stack room to give fixed
// addresses again without renumbering).
const maxEdgeSubnetBits = 26

// EdgeDynamicRange is the upper half of the edge subnet, where Docker
// picks the addresses of nginx and of every app release (the switch tells
// nginx the live release's address).
func (c *Config) EdgeDynamicRange() string {
	return upperHalf(c.EdgeSubnet)
}

// upperHalf is the upper half of a validated IPv4 subnet.
func upperHalf(subnet string) string {
	p := netip.MustParsePrefix(subnet).Masked()
	a := p.Addr().As4()
	// The upper half starts half the subnet's size above its first address.
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+1<<(31-p.Bits()))
	return netip.PrefixFrom(netip.AddrFrom4(a), p.Bits()+1).String()
}

// PublicHosts are the host names the app answers for (allowedHosts, or the
// domain alone).
func (c *Config) PublicHosts() []string {
	if len(c.AllowedHosts) > 0 {
		return c.AllowedHosts
	}
	return []string{c.Domain}
}

// Scheme is how visitors reach the app: "https" with TLS, else "http".
func (c *Config) Scheme() string {
	if c.TLS() {
		return "https"
	}
	return "http"
}

// PublicPort is the host port visitors reach the app on: HTTPSPort with
// TLS (HTTPPort then only redirects), else HTTPPort.
func (c *Config) PublicPort() int {
	if c.TLS() {
		return c.HTTPSPort
	}
	return c.HTTPPort
}

// PublicURL is the URL users reach the app at.
func (c *Config) PublicURL() string {
	scheme, port := c.Scheme(), c.PublicPort()
	if port == map[string]int{"http": 80, "https": 443}[scheme] {
		return scheme + "://" + c.Domain
	}
	return fmt.Sprintf("%s://%s:%d", scheme, c.Domain, port)
}

// AppSettings returns the non-secret app environment the stack decides,
// keyed by env contract name: what the program derives from the typed
// keys and its own wiring, and the operator's nbms:appEnv entries. Secrets (SECRET_KEY, DATABASE_URL, REDIS_URL,
// SENTRY_DSN) are added by the infra program as Pulumi secrets.
func (c *Config) AppSettings() map[string]string {
	csrf := c.CSRFTrustedOrigins
	if len(csrf) == 0 {
		csrf = []string{c.PublicURL()}
	}
	env := map[string]string{
		config.EnvProfile:        c.Profile,
		"HTTP_ADDR":              ":" + strconv.Itoa(AppPort),
		"ALLOWED_HOSTS":          strings.Join(c.PublicHosts(), ","),
		"CSRF_TRUSTED_ORIGINS":   strings.Join(csrf, ","),
		"TRUSTED_PROXY_CIDRS":    c.EdgeSubnet,
		"SECURE_SSL_REDIRECT":    strconv.FormatBool(c.TLS()),
		"SESSION_COOKIE_SECURE":  strconv.FormatBool(c.TLS()),
		"SECURE_HSTS_SECONDS":    strconv.Itoa(c.App.HSTSSeconds),
		"SECURE_HSTS_PRELOAD":    strconv.FormatBool(c.App.HSTSPreload),
		"MAX_UPLOAD_BYTES":       strconv.FormatInt(c.App.MaxUploadBytes, 10),
		"MAX_REQUEST_BODY_BYTES": strconv.FormatInt(c.App.MaxRequestBodyBytes, 10),
		"LOG_LEVEL":              c.App.LogLevel,
		"DB_MAX_CONNS":           strconv.Itoa(c.App.DBMaxConns),
		"STATIC_ROOT":            StaticRoot,
		"MEDIA_ROOT":             MediaRoot,
		// Every stack puts nginx in front of the app, dev stacks too: it
		// sends the evidence files the app authorises.
		"MEDIA_X_ACCEL_REDIRECT": "true",
		"SENTRY_ENVIRONMENT":     c.Stack,
	}
	if !c.TLS() {
		// Without HTTPS a Secure or __Host- cookie would never come back.
		env["SESSION_COOKIE_NAME"] = "nbms_session"
	}
	if len(c.CORSOrigins) > 0 {
		env["CORS_ALLOWED_ORIGINS"] = strings.Join(c.CORSOrigins, ",")
	}
	// The operator's tuning. Validation refuses every name the program
	// sets above, so nothing is overwritten; should one slip through, the
	// program's value stands.
	for name, value := range c.AppEnv {
		if _, set := env[name]; !set {
			env[name] = value
		}
	}
	return env
}

// TLSKeyOutput returns the TLS private key as a Pulumi secret.
func (c *Config) TLSKeyOutput() pulumi.StringOutput { return c.TLSKey.Output() }
