// Package wechatcmd adds `caddy wechat status` and `caddy wechat doctor`
// to any Caddy built with the gateway (the root package imports it).
// It imports nothing of the root package: it reads the running gateway
// through the admin API, and a config through Caddy's adapters and
// module registry.
package wechatcmd

import (
	"errors"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wechat",
		Short: "Commands for the WeChat gateway (status, doctor)",
		Long: `
Looks at the WeChat gateway from outside:

  caddy wechat status   prints the running gateway's accounts and unhealthy
                        authorizers, from the admin API
  caddy wechat doctor   checks a config before it runs: placeholders,
                        WeChat's domains, one token fetch per account, the
                        store and the clock

Neither prints a token, ticket or secret.
`,
		CobraFunc: func(cmd *cobra.Command) {
			status := &cobra.Command{
				Use:   "status [--address <admin>] [--config <path> [--adapter <name>]]",
				Short: "Prints the running gateway's accounts and unhealthy authorizers",
				Long: `
Reads /wechat/status and /wechat/status/authorizers?unhealthy=1 from the
admin API of a running Caddy and prints them as tables: every credential
with its state (healthy, renewing, backing off, at the ceiling, store
down, ...), age, next renewal and fetches today against the ceiling,
the last error and what to do about it; then, per component, the
authorizers that are unhealthy.

--address is the admin endpoint (default: from --config, else
localhost:2019). Exit status 1 when the admin API cannot be read.
`,
				RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
					addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
					if err != nil {
						return 1, err
					}
					return Status(os.Stdout, addr)
				}),
			}
			status.Flags().String("address", "", "The address of the admin API")
			status.Flags().StringP("config", "c", "", "Configuration file, for the admin address")
			status.Flags().StringP("adapter", "a", "", "Name of the config adapter")
			cmd.AddCommand(status)

			doctor := &cobra.Command{
				Use:   "doctor --config <path> [--adapter <name>]",
				Short: "Checks every WeChat account of a config, one line per check",
				Long: `
For every account of the config (wechat directive or transport,
wechat_jssdk, WeCom, open platform component) checks that:

  - the config adapts;
  - each {env.*} / {file.*} placeholder resolves;
  - WeChat's domains (the configured upstreams) resolve and answer;
  - the credentials fetch a token: one fetch from the stable endpoint in
    normal mode (WeCom: gettoken), which returns the token the gateway
    already uses, so nothing is retired; a WeChat errcode is said in words
    (40164 names the IP to whitelist);
  - the store answers (one read);
  - this machine's clock is within a minute of WeChat's (the callback
    checks timestamps).

Prints one line per check (ok, FAIL, skip) and exits 1 if any failed.
`,
				RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
					if code := Doctor(os.Stdout, fl.String("config"), fl.String("adapter")); code != 0 {
						// An error, so that Caddy's Main exits non-zero (a
						// bare status 1 would exit 0).
						return code, errors.New("caddy wechat doctor: a check failed (the FAIL lines above)")
					}
					return 0, nil
				}),
			}
			doctor.Flags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			doctor.Flags().StringP("adapter", "a", "", "Name of the config adapter")
			cmd.AddCommand(doctor)
		},
	})
}
