package fusefs

// PauseWaiting is how many requests a pause of f holds back now.
func PauseWaiting(f *FS) int64 { return f.pause.waiting.Load() }
