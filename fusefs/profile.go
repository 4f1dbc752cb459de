package fusefs

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/rs/zerolog"
)

// Environment variables that turn on profiling of a mount daemon. They are
// read by StartProfiling only; nothing is profiled unless one is set.
const (
	EnvCPUProfile = "ENCVOL_CPUPROFILE" // file for a CPU profile covering the daemon's life
	EnvMemProfile = "ENCVOL_MEMPROFILE" // file for a heap profile written when the daemon stops
)

// StartProfiling starts the profiles requested through EnvCPUProfile and
// EnvMemProfile and returns the function that writes and closes them; call
// it (typically deferred) once the file system has been unmounted. Profiles
// hold stack samples and allocation sites, never file contents or keys.
// Failures are logged and leave the daemon running unprofiled.
func StartProfiling(log zerolog.Logger) (stop func()) {
	var stops []func()
	if path := os.Getenv(EnvCPUProfile); path != "" {
		if f, err := createProfile(path); err != nil {
			log.Warn().Err(err).Msg("CPU profile not started")
		} else if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			log.Warn().Err(err).Str("path", path).Msg("CPU profile not started")
		} else {
			log.Info().Str("path", path).Msg("CPU profiling until unmount")
			stops = append(stops, func() {
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					log.Warn().Err(err).Str("path", path).Msg("writing the CPU profile failed")
				}
			})
		}
	}
	if path := os.Getenv(EnvMemProfile); path != "" {
		stops = append(stops, func() {
			f, err := createProfile(path)
			if err != nil {
				log.Warn().Err(err).Msg("heap profile not written")
				return
			}
			runtime.GC()
			err = pprof.Lookup("allocs").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				log.Warn().Err(err).Str("path", path).Msg("writing the heap profile failed")
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

func createProfile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create profile %s: %w", path, err)
	}
	return f, nil
}
