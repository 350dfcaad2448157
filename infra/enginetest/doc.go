// Package enginetest runs the NBMS program through the real Pulumi engine:
// the CLI built by scripts/build-pulumi.sh (`make setup`), the deploy driver
// (infra/driver), the real policy pack binary, and in-process test doubles
// of the docker and random providers (package fakeprovider). Mocks prove
// what the program registers; these tests prove what the engine then plans,
// refuses, creates, encrypts, updates and deletes.
package enginetest
