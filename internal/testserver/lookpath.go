package testserver

import "testing"

// LookPath finds a binary a test needs that is not a store server
// (promtool, prometheus, chromium): missing, it skips the test and
// notes it for Summary, or fails under CI.
func LookPath(t testing.TB, bin, pkg string, dirs ...string) string {
	t.Helper()
	return lookPath(t, bin, pkg, dirs...)
}
