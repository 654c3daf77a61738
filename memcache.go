package wechat

import "errors"

// newMemcacheStore is being written.
func newMemcacheStore(sc storeConfig, a *account) (sharedStore, error) {
	return nil, errors.New("memcache store not implemented yet")
}
