package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/service"
)

// loadSettings loads the contract or explains every problem at once on
// stderr. ok is false when the process must exit with config.ExitConfig.
func loadSettings(stderr io.Writer) (*config.Settings, bool) {
	s, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "nbms:", err)
		var cerr *config.Error
		if errors.As(err, &cerr) {
			fmt.Fprintf(stderr, "nbms: see %s for every variable\n", config.ReferencePath)
		}
		return nil, false
	}
	return s, true
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	svc, err := service.Build(ctx, s, service.Options{LogOutput: stdout})
	if err != nil {
		fmt.Fprintln(stderr, "nbms:", err)
		return config.ExitConfig
	}
	ln, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		svc.Logger.Error("cannot listen", "addr", s.HTTPAddr, "error", err)
		svc.Close()
		return exitFail
	}
	svc.Logger.Info("serving", "addr", ln.Addr().String(), "version", version)
	if err := svc.Run(ctx, ln); err != nil {
		return exitFail
	}
	return exitOK
}

func runSettingsReference(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprint(stdout, config.Reference())
	return exitOK
}
