// Package component is the open platform (第三方平台) as Caddy modules: one
// component, its component_access_token, and the tokens of every merchant
// (authorizer) that authorized it, on the same request path as an account
// (internal/gateway) with the engine's authorizer and component caches as
// its credentials.
//
// Modules:
//
//   - http.reverse_proxy.transport.wechat_component (transport.go): calls
//     on behalf of an authorizer, named by the Wechat-Authorizer-Appid
//     header or an /authorizer/{appid}/ path prefix, get its token;
//     /cgi-bin/component/* calls get the component's.
//   - http.handlers.wechat_component_callback (callback.go): the
//     authorization event URL: tickets, authorizations, their revocation.
//   - admin.api.wechat_component (status.go): /wechat/status/authorizers.
//
// The wechat_component directive is a shortcut for reverse_proxy with the
// transport, as php_fastcgi is for the fastcgi one:
//
//	wechat_component {
//	    appid  {env.COMPONENT_APPID}
//	    secret {env.COMPONENT_SECRET}
//	    store redis {
//	        address 10.0.0.7:6379
//	    }
//	}
//
// expands to reverse_proxy https://api.weixin.qq.com with transport
// wechat_component and the failover defaults of the wechat directive
// (caddykit/). The callback and the transport of one component
// share one platform (platform.go) through a pool, so a reload that keeps
// the component keeps its authorizers' tokens. The root package imports
// this one; it never imports the root.
package component
