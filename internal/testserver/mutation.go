//go:build mutation

package testserver

// Under the "mutation" build tag (./mutate.sh), gremlins runs a package's
// tests once per mutant: a server that takes seconds to start would turn
// a minutes-long run into hours, so every launcher skips instead.
func init() { mutationBuild = true }
