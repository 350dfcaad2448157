package stacks

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// ProjectPath is where the project file lives, relative to the repository root.
const ProjectPath = "Pulumi.yaml"

// FindRoot returns the repository root, the nearest directory at or above
// the working directory that holds ProjectPath, relative to the working
// directory (the program's image build contexts are relative paths).
func FindRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, ProjectPath)); err == nil {
			return filepath.Rel(wd, dir)
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no %s in %s or above", ProjectPath, wd)
		}
	}
}

// docs describes every key; the project schema and the error for an unknown
// key come from here.
var docs = map[string]string{
	"profile":             "App profile: prod or dev. prod enforces HTTPS, HSTS, pinned images and protected volumes.",
	"domain":              "Public host name of the app (e.g. nbms.example.org); the URL and certificate name.",
	"allowedHosts":        "Host names the app and nginx answer for (default: [domain]). Exact lower-case names: no wildcards, no leading dot (nginx and the certificate check need exact names).",
	"csrfTrustedOrigins":  "Extra exact origins allowed to send state-changing browser requests (default: the public URL).",
	"corsOrigins":         "Exact origins allowed to read API responses cross-origin (https in prod; never * or null).",
	"bindAddress":         "Host address nginx publishes its ports on (0.0.0.0 for a server, 127.0.0.1 for a laptop).",
	"httpPort":            "Published host port for HTTP (redirects to HTTPS when TLS is on).",
	"httpsPort":           "Published host port for HTTPS.",
	"tlsMode":             "off (plain HTTP, dev only) or provided (nbms:tlsCertificate + secret nbms:tlsKey).",
	"tlsCertificate":      "PEM certificate chain for the allowed hosts: pulumi config set nbms:tlsCertificate -- \"$(cat fullchain.pem)\".",
	"tlsKey":              "PEM private key (secret): pulumi config set --secret nbms:tlsKey -- \"$(cat privkey.pem)\".",
	"sentryDsn":           "Sentry DSN (secret, optional): pulumi config set --secret nbms:sentryDsn <dsn>.",
	"edgeSubnet":          "IPv4 subnet of the edge network (nginx + app), a /26 or larger; the app trusts X-Forwarded-* from it only; Docker hands out only its upper half (every app release and nginx get addresses there). Keep it outside Docker's default address pools (172.17-31.0.0/16, 192.168.0.0/16).",
	"internalSubnet":      "IPv4 subnet of the internal network (the app, PostgreSQL, Redis, the backup scheduler); fixed like edgeSubnet, so that no network Docker numbers itself can take it.",
	"protectVolumes":      "Protect the data volumes (pgdata, pgBackRest repo, media) from pulumi destroy and replacement.",
	"images":              "base: the one Debian bookworm image every NBMS image is built from, pinned (name:tag@sha256:digest, or the sha256: image ID of a local image made by scripts/base-image.sh); platform: of the built images; appVersion: the app's version label, stamped into its binary and image (a new value is a new release, which goes live blue/green).",
	"buildCaCertificates": "Extra CA certificates (PEM) the app image's builder trusts for its HTTPS downloads, for a Docker host behind a TLS-inspecting proxy; never in a running image: pulumi config set nbms:buildCaCertificates -- \"$(cat /usr/local/share/ca-certificates/*.crt)\".",
	"limits":              "Per container role (app, migrate, collectstatic, switch, proxy, db, cache, backup; secrets: the one-shots that place each tier's secret files; dblogin, cachelogin, dbretire, cacheretire: each release's one-shots that grant its logins and retire the others; backup-relay: the database's way to backup.offHost): memoryMb, cpus, nproc (ulimit; pulumi-docker has no pids limit).",
	"backup":              "pgBackRest schedule (cron: minute hour day month weekday) and retention (count of full / differential backups); archiveTimeout: PostgreSQL's archive_timeout, how often WAL is archived when there are writes, which bounds the data a lost host takes with it (10s to 1h); offHost: the second repository, on S3-compatible storage away from this host, encrypted (aes-256-cbc, with a passphrase the program generates: generatedSecrets.backupCipherPass, keep a copy off the host) — endpoint, port (443), address (optional IPv4 the relay connects to), bucket, region, path, pathStyle, caCertificates (PEM), retentionFull and retentionDiff (0: the local repository's).",
	"backupSubnet":        "IPv4 subnet of the backup network (PostgreSQL, the backup scheduler and the relay that is their only way to backup.offHost); used only with backup.offHost, fixed like the others: the relay has its second address.",
	"backupS3Key":         "Access key of backup.offHost.",
	"backupS3KeySecret":   "Secret key of backup.offHost.",
	"backupCipherPass":    "Passphrase of backup.offHost, given instead of generated: for a stack recovered without its state (nbms-deploy recover); once given, give it at every up.",
	"recover":             "Recover the database from backup.offHost when its data volume is created: latest, or an RFC 3339 time (point in time); empty: no recovery. Set by nbms-deploy recover (make recover) for one up of a stack with no database in its state, never in a stack file; needs backupCipherPass.",
	"logs":                "json-file log rotation of every container (maxSize like 10m, maxFile count).",
	"app":                 "App settings the stack decides: HSTS, body and upload limits, log level, DB pool, nginx login rate limit, whether the edge keeps a client's well-formed X-Request-ID, how many seconds the edge answers repeats of public API answers itself (0: never).",
	"appEnv":              "The app's tuning, by env contract name (NAME: value), for every variable without a typed key that the program does not set and that is not a secret: rate limits, session lifetimes, timeouts, pool sizes, CSP and the rest; each value is checked by the contract's own rule before anything deploys. pulumi config set --path 'nbms:appEnv.RATE_LIMIT_PUBLIC_API' 600/1m. The settings reference lists every variable and its stack key (docs/production_hardening/secure_settings_reference.md).",
	"probe":               "Post-deploy readiness probe: overall timeout and an optional base URL (default: the published address).",
	"secretGenerations":   "Rotation of the generated secrets: raise secretKey, appDbPassword, dbSuperuserPassword or redisPassword (0 at first) to generate that secret anew on the next up; never lower one (any change is a new value). A new secretKey, appDbPassword or redisPassword is a new app release, blue/green, whose login (nbms_a or nbms_b) gets the new password while PostgreSQL and Redis keep running; a new dbSuperuserPassword restarts PostgreSQL.",
}

// ProjectYAML renders Pulumi.yaml: the project and its typed config schema,
// with Defaults as the default of every non-secret key. Values are written
// as JSON, which YAML reads as flow style.
func ProjectYAML() string {
	var b strings.Builder
	b.WriteString(`# Generated from stacks.Defaults by ` + "`go test ./stacks -run TestProjectFileIsUpToDate -update`" + `; do not edit.
name: nbms
description: NBMS backend, nginx, PostgreSQL/PostGIS with pgBackRest, and Redis on one Docker host.
runtime: go
main: infra/
# Resource hooks, after-hook failure semantics, stack policies and binary policy packs.
requiredPulumiVersion: ">=3.258.0"
config:
`)
	defaults := reflect.ValueOf(Defaults())
	t := defaults.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := jsonName(f)
		if key == "" {
			continue
		}
		if f.Tag.Get("secret") == "true" {
			// Secret keys are optional (sentryDsn; tlsKey only with
			// tlsMode provided) and Pulumi's schema cannot say so: a key
			// without a default is demanded on every stack, and a default
			// of a secret key must itself be encrypted. So they are listed
			// here as comments; Load refuses them in plaintext.
			fmt.Fprintf(&b, "  # %s (secret, set with `pulumi config set --secret %s:%s`): %s\n", key, Namespace, key, docs[key])
			continue
		}
		fmt.Fprintf(&b, "  %s:\n", key)
		fmt.Fprintf(&b, "    type: %s\n", schemaType(f.Type))
		if f.Type.Kind() == reflect.Slice {
			b.WriteString("    items:\n      type: string\n")
		}
		fmt.Fprintf(&b, "    description: %s\n", mustJSON(docs[key]))
		v := defaults.Field(i).Interface()
		switch {
		case f.Type.Kind() == reflect.Slice && defaults.Field(i).IsNil():
			v = []string{}
		case f.Type.Kind() == reflect.Map && defaults.Field(i).IsNil():
			v = map[string]string{}
		}
		fmt.Fprintf(&b, "    default: %s\n", mustJSON(v))
	}
	return b.String()
}

func schemaType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array"
	}
	if t == reflect.TypeOf(Secret{}) {
		return "string"
	}
	return "object"
}

func mustJSON(v any) string {
	out, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(out)
}
