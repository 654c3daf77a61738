package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The processes under test. Each runs alone on a loopback port so that
// the gateway and the plain proxy get the same treatment from the OS, and
// none of them shares a heap or a GC with the load generator.

const (
	appID  = "wx00000000bench0001"
	secret = "0123456789abcdef0123456789abcdefbench"
	// apiPath is a small JSON echo in the fake: the typical WeChat call.
	apiPath = "/cgi-bin/user/info?openid=o1&lang=zh_CN"
)

// proc is a child process we started and must stop.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once the process has been reaped
	stop   os.Signal     // asks it to stop; os.Interrupt if nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// buildCaddy compiles pkg (./cmd/caddy: gateway + fake) once into dir.
func buildCaddy(dir, pkg string) string {
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fatalf("go build %s (run from the module root): %v", pkg, err)
	}
	return bin
}

// globalOpts is shared by every Caddyfile: no admin API unless profiling,
// nothing written to $HOME, no HTTPS machinery.
func globalOpts(admin string) string {
	if admin == "" {
		admin = "off"
	}
	return fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tauto_https off\n}\n", admin)
}

// startCaddy writes caddyfile into dir and runs the binary on it.
func startCaddy(bin, dir, name, caddyfile string) *proc {
	cf := filepath.Join(dir, name+".Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile), 0o600); err != nil {
		fatalf("%v", err)
	}
	return start(dir, name, bin, "run", "--adapter", "caddyfile", "--config", cf)
}

func start(dir, name, bin string, args ...string) *proc {
	return startAs(dir, name, nil, bin, args...)
}

// startAs runs bin as the user cred (nil: as we are), e.g. postgres,
// which refuses root.
func startAs(dir, name string, cred *syscall.Credential, bin string, args ...string) *proc {
	p := &proc{name: name, log: filepath.Join(dir, name+".log")}
	// Appended to: a restarted server keeps the log of its first run.
	f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fatalf("%v", err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := p.cmd.Start(); err != nil {
		fatalf("start %s: %v", name, err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.exited) }()
	procs = append(procs, p)
	return p
}

// procs lists every child, for stopAll.
var procs []*proc

// stopAll ends the children we started, by pid, and waits for them.
func stopAll() {
	for _, p := range procs {
		sig := p.stop
		if sig == nil {
			sig = os.Interrupt
		}
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	procs = nil
}

// waitPort waits until addr accepts connections.
func waitPort(p *proc, addr string) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(p.log)
			fatalf("%s exited; its log:\n%s", p.name, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(p.log)
	fatalf("%s did not listen on %s; its log:\n%s", p.name, addr, log)
}

var httpc = &http.Client{Timeout: 10 * time.Second}

// stableToken asks the fake for the account's token, as an app that calls
// WeChat directly (or through a plain proxy) has to.
func stableToken(fake string) string {
	body, _ := json.Marshal(map[string]string{"grant_type": "client_credential", "appid": appID, "secret": secret})
	resp, err := httpc.Post(fake+"/cgi-bin/stable_token", "application/json", bytes.NewReader(body))
	if err != nil {
		fatalf("stable_token: %v", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Token   string `json:"access_token"`
		Errcode int    `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.Token == "" {
		fatalf("stable_token: errcode %d, %v", ans.Errcode, err)
	}
	return ans.Token
}

// check makes one request and insists on WeChat's success answer, so a
// misconfigured target cannot post a great score by failing fast.
func check(name, url string) {
	resp, err := httpc.Get(url)
	if err != nil {
		fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		Errcode int    `json:"errcode"`
		Path    string `json:"path"`
	}
	_ = json.Unmarshal(b, &ans)
	if resp.StatusCode != 200 || ans.Errcode != 0 || ans.Path != "/cgi-bin/user/info" {
		fatalf("%s: GET %s: status %d body %s", name, url, resp.StatusCode, b)
	}
}

// startMemcached runs a private memcached on a free loopback port; restart
// kills it (its data goes with it) and runs it again on that port.
func startMemcached(dir string) (addr string, restart func(down func())) {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		fatalf("memcached not found (apt-get install memcached), or run with -memcache=false")
	}
	port := freePort()
	addr = "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "16", "-t", "1"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root without it
	}
	launch := func() *proc {
		p := start(dir, "memcached", bin, args...)
		waitPort(p, addr)
		return p
	}
	return addr, restarter(launch(), syscall.SIGKILL, launch)
}

// mcStats reads memcached's counters.
func mcStats(addr string) map[string]int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fatalf("memcached stats: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "stats\r\n"); err != nil {
		fatalf("memcached stats: %v", err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "END" {
			break
		}
		if len(f) == 3 && f[0] == "STAT" {
			if n, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				out[f[1]] = n
			}
		}
	}
	return out
}

// profile fetches a CPU profile of the gateway from Caddy's admin API
// while load runs.
func profile(admin string, secs int, file string) error {
	c := &http.Client{Timeout: time.Duration(secs+30) * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("pprof: status %d", resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
