//go:build mutation

package wechat

func init() { fastOnly = true }
