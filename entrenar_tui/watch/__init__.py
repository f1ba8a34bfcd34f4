"""Watching run directories from background threads that only post Messages: one WatchThread,
the run watcher, the root watcher, and the log tail."""
