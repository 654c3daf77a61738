package storetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// The multi-process case: three gateway processes (the test binary run
// again) share the store under test and one open platform, served over
// HTTP by this process. 120 authorizers' tokens expire at the same
// instant, and every process calls every authorizer three times at once
// just after. Every call is served with a token WeChat accepts, each
// authorizer is fetched once for the whole cluster, no refresh token is
// lost (refresh tokens rotate on every fetch, the old one dead at once,
// so two fetches of one authorizer would cost a 61023), the store holds
// WeChat's current refresh token for all 120, and no process counts a
// store error: contention on the store's locks is not an outage.

const (
	procEnvFake   = "WECHAT_CLUSTER_FAKE"   // the open platform's URL
	procEnvPrefix = "WECHAT_CLUSTER_PREFIX" // the store key prefix
	procEnvStart  = "WECHAT_CLUSTER_START"  // unix ms: when the tokens are past their use-by
	procEnvOut    = "WECHAT_CLUSTER_OUT"    // the file to write results to
	procCount     = 3
	procAuths     = 120
	procCalls     = 3 // per authorizer per process, at once
	procSecret    = "processes-component-secret-0123456789"
	procAppID     = "wxprocesscomponent"
)

// ProcessChild runs the child side if this process was started by
// Processes, and reports whether it was. open connects to the store as
// a new gateway would.
func ProcessChild(t *testing.T, open func(t *testing.T) credential.Backend) bool {
	fakeURL := os.Getenv(procEnvFake)
	if fakeURL == "" {
		return false
	}
	base, err := url.Parse(fakeURL)
	if err != nil {
		t.Fatal(err)
	}
	start, _ := strconv.ParseInt(os.Getenv(procEnvStart), 10, 64)
	out, err := os.Create(os.Getenv(procEnvOut))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n := newProcNode(t, open(t), os.Getenv(procEnvPrefix), base)
	time.Sleep(time.Until(time.UnixMilli(start).Add(100 * time.Millisecond)))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range procAuths {
		id := procAuthID(i)
		for range procCalls {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
				defer cancel()
				tok, _, err := n.reg.Token(ctx, id)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fmt.Fprintf(out, "err %s %s\n", id, strings.ReplaceAll(err.Error(), "\n", " "))
					return
				}
				fmt.Fprintf(out, "ok %s %s\n", id, tok.Value)
			})
		}
	}
	wg.Wait()
	fmt.Fprintf(out, "store_errors %d\n", n.obs.storeErrors.Load())
	fmt.Fprintf(out, "breaker_open %v\n", n.shared.BreakerOpen())
	n.close()
	return true
}

func procAuthID(i int) string { return fmt.Sprintf("wxp%015d", i) }

type procNode struct {
	shared *credential.Shared
	comp   *credential.Cache
	reg    *credential.Registry
	obs    *counter
}

func newProcNode(t *testing.T, b credential.Backend, prefix string, base *url.URL) *procNode {
	seal, err := credential.NewSealer(procSecret, procAppID)
	if err != nil {
		t.Fatal(err)
	}
	obs := &counter{}
	sh := credential.NewShared(b, seal, credential.SharedOptions{Prefix: prefix, OpTimeout: opTimeout, Observer: obs, Durable: true})
	rt := http.DefaultTransport.(*http.Transport).Clone()
	rt.MaxIdleConnsPerHost = 64
	comp := credential.New(credential.Config{
		Name:     "component_access_token",
		AppID:    procAppID,
		Source:   &credential.ComponentTokenSource{RT: rt, Bases: []*url.URL{base}, AppID: procAppID, Secret: procSecret},
		Shared:   sh,
		Window:   credential.ComponentWindow,
		Observer: obs,
	})
	plat := &credential.Platform{Component: comp, RT: rt, Bases: []*url.URL{base}, AppID: procAppID, Secret: procSecret}
	reg := credential.NewRegistry(plat, credential.RegistryConfig{Shared: sh, Ceiling: -1, Observer: obs})
	return &procNode{shared: sh, comp: comp, reg: reg, obs: obs}
}

func (n *procNode) close() {
	n.reg.Close()
	n.comp.Close()
	_ = n.shared.Close()
}

// Processes runs the multi-process case on h. helper is the name of a
// test in the calling binary that calls ProcessChild first thing; env
// is what that test needs to reach the store.
func Processes(t *testing.T, h Harness, helper string, env []string) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	clock := NewClock() // the fake's clock; 2 h tokens outlive the test
	fake := NewOpenPlatform(clock, procAppID, procSecret)
	fake.RotateEvery = 1
	srv := httptest.NewServer(fake)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	prefix := newCluster(t, h, credential.APIStable).prefix

	// Seed as the first instance would have: a ticket, the component
	// token, 120 refresh tokens, and 120 tokens whose use-by time is the
	// same instant, a few seconds ahead.
	seed := newProcNode(t, h.Open(t), prefix, base)
	cx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := seed.comp.Aux().Put(cx, credential.AuxVerifyTicket, []byte(fake.PushTicket())); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.comp.Token(cx); err != nil {
		t.Fatal(err)
	}
	useBy := time.Now().Add(4 * time.Second)
	for i := range procAuths {
		id := procAuthID(i)
		fake.AddAuthorizer(id)
		if err := seed.reg.Authorize(cx, &credential.Authorization{AuthorizerAppID: id, RefreshToken: fake.RefreshToken(id)}); err != nil {
			t.Fatal(err)
		}
		old := credential.NewToken("seeded-"+id, 7200, useBy.Add(credential.SafetyMargin-7200*time.Second), "fetch")
		seed.shared.Store(cx, "authorizer:"+id, old)
	}
	seed.close()

	dir := t.TempDir()
	var wg sync.WaitGroup
	var failed atomic.Bool
	for p := range procCount {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1", "-test.timeout=2m")
			cmd.Env = append(append(os.Environ(), env...),
				procEnvFake+"="+srv.URL, procEnvPrefix+"="+prefix,
				procEnvStart+"="+strconv.FormatInt(useBy.UnixMilli(), 10),
				procEnvOut+"="+filepath.Join(dir, strconv.Itoa(p)))
			if out, err := cmd.CombinedOutput(); err != nil {
				failed.Store(true)
				t.Errorf("process %d: %v: %s", p, err, out)
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	served, errs := 0, 0
	for p := range procCount {
		f, err := os.Open(filepath.Join(dir, strconv.Itoa(p)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.SplitN(sc.Text(), " ", 3)
			switch fs[0] {
			case "ok":
				if !fake.Valid(fs[2]) {
					t.Errorf("process %d, %s: served a token WeChat rejects", p, fs[1])
				}
				served++
			case "err":
				errs++
				if errs <= 5 {
					t.Errorf("process %d, %s: %s", p, fs[1], fs[2])
				}
			case "store_errors":
				if fs[1] != "0" {
					t.Errorf("process %d counted %s store errors; want 0", p, fs[1])
				}
			case "breaker_open":
				if fs[1] != "false" {
					t.Errorf("process %d ended with its breaker open", p)
				}
			}
		}
		f.Close()
	}
	want := procCount * procAuths * procCalls
	t.Logf("%d processes × %d authorizers × %d calls: %d served, %d failed; %d authorizer fetches, %d rotations, %d refresh tokens recovered (61023)",
		procCount, procAuths, procCalls, served, errs, fake.AuthorizerFetches.Load(), fake.Rotations.Load(), fake.InfoCalls.Load())
	if served != want || errs != 0 {
		t.Fatalf("%d of %d calls served, %d failed", served, want, errs)
	}
	if n := fake.AuthorizerFetches.Load(); n != procAuths {
		t.Errorf("%d authorizer fetches for %d authorizers; want one each for the cluster", n, procAuths)
	}
	if n := fake.InfoCalls.Load(); n != 0 {
		t.Errorf("%d refresh tokens were lost (61023, recovered through api_get_authorizer_info)", n)
	}
	check := newProcNode(t, h.Open(t), prefix, base)
	defer check.close()
	lost := 0
	for i := range procAuths {
		id := procAuthID(i)
		a, err := check.reg.Get(cx, id)
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.Cache().Aux().Get(cx, credential.AuxRefreshToken)
		if err != nil || string(v) != fake.RefreshToken(id) {
			lost++
		}
	}
	if lost != 0 {
		t.Fatalf("the store does not hold WeChat's current refresh token for %d of %d authorizers", lost, procAuths)
	}
}
