package component

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func poolSize() int {
	n := 0
	platforms.Range(func(_, _ any) bool { n++; return true })
	return n
}

// Two transports of one component share one platform (a reload keeps its
// authorizers' tokens), and the platform is closed and leaves the pool
// when the last of them is cleaned up: nothing of a component outlives
// the configs that name it.
func TestPlatformSharedAndReleased(t *testing.T) {
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	before := poolSize()
	cfg := ComponentConfig{AppID: testComponentAppID, Secret: "{env.TEST_COMPONENT_SECRET}", TokenEndpoints: []string{"http://127.0.0.1:9"}}
	a, b := &ComponentTransport{ComponentConfig: cfg}, &ComponentTransport{ComponentConfig: cfg}
	for _, tr := range []*ComponentTransport{a, b} {
		if err := tr.Provision(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a.p == nil || a.p != b.p || poolSize() != before+1 {
		t.Fatalf("two transports of one component: platforms %p %p, pool %d; want one shared", a.p, b.p, poolSize()-before)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if poolSize() != before+1 {
		t.Fatal("the platform left the pool while a transport still uses it")
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n := poolSize(); n != before {
		t.Fatalf("%d platforms still pooled after the last cleanup", n-before)
	}
}
