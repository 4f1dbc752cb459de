// Command encvol creates, mounts and verifies KMS-keyed encrypted FUSE volumes
// and runs the KMS they use. This package only parses flags, loads the
// configuration and prints results; the work happens in volume/, kmsclient/
// and kms/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/encvol/encvol/volume"
)

// app carries what every subcommand shares: global flags, the logger and
// the lazily loaded configuration.
type app struct {
	configPath string
	logLevel   string
	logFormat  string
	// readableConfig accepts a configuration with secrets that other
	// users can read (--allow-readable-config).
	readableConfig bool

	log    zerolog.Logger
	cfg    *volume.Config
	stdout io.Writer
	stderr io.Writer
}

// subcommands is filled by init functions in the other files of this
// package, so each verb lives in its own file.
var subcommands []func(a *app) *cobra.Command

// codedError carries the exit code a failure should produce.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withCode marks err so main exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// errQuiet ends a command with its exit code (withCode) and no message:
// the command's report already said everything.
var errQuiet = errors.New("")

// usageError reports bad arguments or configuration (exit 2).
func usageError(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "encvol: %s\n", msg)
	}
	return exitCode(err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "encvol",
		Short:         "Transparent encrypted volumes whose keys live in a KMS",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(a.stderr, a.logLevel, a.logFormat)
			if err != nil {
				return withCode(exitUsage, err)
			}
			a.log = log
			// A --config that names no readable, valid file is a usage
			// error for every command, also those that need no setting;
			// cobra's help and shell completion work regardless.
			if a.configPath != "" && !isCobraOwn(cmd) {
				if _, err := a.config(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "configuration file (default /etc/encvol/encvol.toml, then $XDG_CONFIG_HOME/encvol/encvol.toml)")
	pf.BoolVar(&a.readableConfig, "allow-readable-config", false, "use a configuration file that holds secret access keys although other users can read it")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.logFormat, "log-format", "console", "log format: console or json")
	for _, sub := range subcommands {
		root.AddCommand(sub(a))
	}
	addExamples(root)
	return root
}

// newLogger builds the zerolog logger: human console output by default,
// one JSON object per line with --log-format json. Console output is
// coloured only on a terminal, and never when NO_COLOR is set
// (https://no-color.org): escape codes in a log file or a pipe are noise.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("bad --log-level %q: want debug, info, warn or error", level)
	}
	var out io.Writer
	switch format {
	case "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !colorOK(w)}
	case "json":
		out = w
	default:
		return zerolog.Nop(), fmt.Errorf("bad --log-format %q: want console or json", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// colorOK reports whether console logs to w may use ANSI colours.
func colorOK(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// config loads the configuration once. A missing file is not an error:
// the built-in default (one local KMS) applies.
func (a *app) config() (*volume.Config, error) {
	if a.cfg != nil {
		return a.cfg, nil
	}
	path, err := volume.FindConfig(a.configPath)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	cfg, err := volume.LoadConfig(path)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	if !a.readableConfig {
		if err := cfg.CheckPrivate(); err != nil {
			return nil, withCode(exitUsage, err)
		}
	}
	a.cfg = cfg
	return cfg, nil
}

// isCobraOwn reports whether cmd is one of the commands cobra adds (help,
// completion and the hidden __complete), which read no configuration.
func isCobraOwn(cmd *cobra.Command) bool {
	for c := cmd; c != nil && c.HasParent(); c = c.Parent() {
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return true
		}
	}
	return false
}
