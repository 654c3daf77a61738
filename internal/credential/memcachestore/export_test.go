package memcachestore

import "context"

// DeleteIfBetween is DeleteIf with between run after its read.
func (b *Backend) DeleteIfBetween(ctx context.Context, k string, v []byte, between func()) error {
	return b.deleteIf(ctx, k, v, between)
}
