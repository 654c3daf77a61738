package memstore_test

import (
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

func TestConformance(t *testing.T) {
	s := memstore.New()
	storetest.Run(t, storetest.Harness{
		Open:    func(*testing.T) credential.Backend { return s.Open() },
		Pause:   func(*testing.T) { s.Pause() },
		Resume:  func(*testing.T) { s.Resume() },
		Kill:    func(*testing.T) { s.Kill() },
		Restart: func(*testing.T) { s.Restart() },
		Durable: true,
	})
}
