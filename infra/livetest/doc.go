// Package livetest runs what the infra program deploys with the real
// consumers, on this machine instead of Docker: the real nbms binary (built
// from app/cmd/nbms) with the environment deploy.AppEnv builds for a
// production stack, migrated against the real PostgreSQL and using the real
// Redis, behind the real nginx running the config nginx.Render produces
// from deploy.NginxParams. Only what is local to a container (ports, file
// system paths, the upstream address) differs from a deployment.
//
// The package holds tests only; it needs root (nginx runs as nobody, like
// infra/nginx's live test), /usr/sbin/nginx, PostgreSQL on 127.0.0.1:5432
// with trust auth for root, Redis on 127.0.0.1:6379 and the go tool.
package livetest
