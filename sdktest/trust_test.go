package sdktest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTrustRecipes: the README's ways for each runtime to trust Caddy's
// internal root, each making one HTTPS call through the gateway with no
// token. A runtime that is not installed is skipped. (Node and Go are
// covered by the SDK tests.)
func TestTrustRecipes(t *testing.T) {
	f := startFake(t)
	g := startGateway(t, f)
	url := "https://" + g.HTTPS + "/cgi-bin/user/info?openid=o1"
	dir := t.TempDir()

	run := func(t *testing.T, env []string, name string, args ...string) string {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if !strings.Contains(string(out), `"errcode":0`) && !strings.Contains(string(out), `"errcode": 0`) {
			t.Fatalf("%s: no successful answer:\n%s", name, out)
		}
		return string(out)
	}

	t.Run("python SSL_CERT_FILE", func(t *testing.T) {
		run(t, []string{"SSL_CERT_FILE=" + g.RootCA}, "python3", "-c",
			"import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", url)
	})
	t.Run("curl CURL_CA_BUNDLE", func(t *testing.T) {
		run(t, []string{"CURL_CA_BUNDLE=" + g.RootCA}, "curl", "-sS", "--fail", url)
	})
	t.Run("java keytool", func(t *testing.T) {
		if _, err := exec.LookPath("keytool"); err != nil {
			t.Skip("keytool not installed")
		}
		ks := filepath.Join(dir, "caddy.jks")
		if out, err := exec.Command("keytool", "-importcert", "-noprompt", "-alias", "caddy-local",
			"-file", g.RootCA, "-keystore", ks, "-storepass", "changeit").CombinedOutput(); err != nil {
			t.Fatalf("keytool: %v\n%s", err, out)
		}
		src := filepath.Join(dir, "Get.java")
		if err := os.WriteFile(src, []byte(`public class Get {
	public static void main(String[] a) throws Exception {
		java.net.http.HttpClient c = java.net.http.HttpClient.newHttpClient();
		java.net.http.HttpRequest r = java.net.http.HttpRequest.newBuilder(java.net.URI.create(a[0])).build();
		System.out.println(c.send(r, java.net.http.HttpResponse.BodyHandlers.ofString()).body());
	}
}
`), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, nil, "java", "-Djavax.net.ssl.trustStore="+ks, "-Djavax.net.ssl.trustStorePassword=changeit", src, url)
	})
	f.checkRequests(t)
}
