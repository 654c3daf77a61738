//go:build mutation

package credential_test

func init() { fastOnly = true }
