// Package e2e holds the real deploy (its tests only): the project's driver
// deploys the e2e stack (Pulumi.e2e.yaml) with the real Pulumi engine and
// the real docker and random provider plugins to this machine's Docker
// engine, with images built from the local Debian base, and the running
// stack is then checked from the outside — TLS through nginx, the
// workflows, hardening as `docker inspect` reports it, a scheduled backup
// restored into a scratch instance, no-op, update, rollback, failed and
// destroyed deployments, and restarts of its containers and of dockerd
// itself. `make e2e` runs it alone; `make test` runs it with the rest,
// holding the Docker engine to itself (testsupport.LockDockerEngine).
//
// It needs what `make setup` provides: a Docker engine, the Pulumi CLI and
// provider plugins under .tools/pulumi, and the base image
// nbms-base:bookworm (NBMS_BASE_IMAGE overrides the name).
package e2e
