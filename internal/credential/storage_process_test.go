package credential_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/certmagic"
)

const storageHelperEnv = "WECHAT_STORAGE_HELPER_DIR"

// TestStorageAcrossProcesses: three processes (this test binary run
// again) increment one counter in one directory. Only the storage's
// file lock keeps them apart, so the count is exact only if the lock
// makes each read-modify-write atomic across processes.
func TestStorageAcrossProcesses(t *testing.T) {
	overlapIfFast(t)
	const procs, each = 3, 4
	if dir := os.Getenv(storageHelperEnv); dir != "" {
		b := credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")
		for range each {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if _, err := b.Incr(ctx, "count", time.Hour); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		return
	}
	if testing.Short() {
		t.Skip("starts processes that wait on file locks")
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	for range procs {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestStorageAcrossProcesses$", "-test.count=1")
			cmd.Env = append(os.Environ(), storageHelperEnv+"="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("helper: %v: %s", err, out)
			}
		})
	}
	wg.Wait()
	b := credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")
	v, _, err := b.Get(context.Background(), "count")
	if err != nil || string(v) != strconv.Itoa(procs*each) {
		t.Fatalf("count = %q, %v; want %d", v, err, procs*each)
	}
}
