package integration

import (
	"strings"
	"testing"
)

func TestComponentCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{"wechat_component_callback {\n appid a\n secret {env.S}\n token {env.T}\n}", "aes_key are required"},
		{"wechat_component_callback {\n appid a\n secret s\n token t\n aes_key k\n bogus 1\n}", "unknown subdirective"},
		{"wechat_component {\n secret {env.S}\n}", "appid is required"},
		{"wechat_component {\n appid a\n secret s\n to http://x\n}", "not allowed"},
	} {
		_, err := adaptCaddyfile(":8080 {\n" + c.cfg + "\n}\n")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.cfg, err, c.want)
		}
	}
}
