package nginx

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// Render returns the complete nginx.conf for p, or the Validate error.
func Render(p Params) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	v, err := newView(p.withDefaults())
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := confTemplate.Execute(&b, v); err != nil {
		return "", fmt.Errorf("nginx: render: %w", err)
	}
	return b.String(), nil
}

// view is Params turned into the exact strings the template writes.
type view struct {
	Params
	Workers         string
	ReadTimeout     string
	HTTPListen      string
	HTTPSListen     string
	ServerNameList  string
	UpstreamURL     string
	HealthURL       string // the app's liveness probe, through UpstreamURL
	UpstreamGroup   string // the app's upstream group, for an address upstream or an upstream file
	UpstreamServer  string // its one server, host:port
	UpstreamInclude string // or the file of its servers
	ResolverAddr    string
	RedirectTarget  string
	ForwardedPort   string
	LoginRate       string
	RetryAfter      int
	HashedPattern   string
	// RequestIDPattern is the app's rule for a client's request ID.
	RequestIDPattern string
	// ProtectedMediaPrefix is the internal location the app's
	// X-Accel-Redirect names, and AttachmentCSP the policy of its files.
	ProtectedMediaPrefix, AttachmentCSP string
	ErrorPages                          []errorPage
}

// errorPage is a response nginx produces itself, rendered as the same RFC
// 9457 problem+json body the app's problem package writes, so clients get
// one error shape whether nginx or the app refused the request.
type errorPage struct {
	Status int
	Body   string
}

func newView(p Params) (view, error) {
	v := view{
		Params:               p,
		Workers:              "auto",
		HTTPListen:           listen(p.ListenAddress, p.HTTPPort),
		HTTPSListen:          listen(p.ListenAddress, p.HTTPSPort),
		ServerNameList:       strings.Join(p.ServerNames, " "),
		ForwardedPort:        strconv.Itoa(p.PublicPort),
		HashedPattern:        HashedNamePattern,
		RequestIDPattern:     config.RequestIDPattern,
		ProtectedMediaPrefix: config.ProtectedMediaPrefix,
		AttachmentCSP:        config.AttachmentCSP,
		LoginRate:            strconv.Itoa(p.LoginRatePerMinute) + "r/m",
		// The time one request slot takes to refill, rounded up.
		RetryAfter: (60 + p.LoginRatePerMinute - 1) / p.LoginRatePerMinute,
	}
	if p.WorkerProcesses > 0 {
		v.Workers = strconv.Itoa(p.WorkerProcesses)
	}
	v.ReadTimeout = strconv.Itoa(int(cmp.Or(p.UpstreamReadTimeout, DefaultUpstreamReadTimeout)/time.Second)) + "s"
	host, port, _ := net.SplitHostPort(p.Upstream) // validated; both empty with an UpstreamFile
	v.UpstreamURL = "http://" + net.JoinHostPort(host, port)
	if p.UpstreamFile != "" {
		// The switch's file of servers: an upstream group, like an address.
		v.UpstreamGroup, v.UpstreamInclude = upstreamGroup, p.UpstreamFile
		v.UpstreamURL = "http://" + upstreamGroup
	} else if _, err := netip.ParseAddr(host); err == nil {
		// An address: an upstream group, whose idle connections nginx keeps
		// open and reuses (a variable naming a group uses the group). A name
		// is re-resolved per request through the resolver, which leaves no
		// group to keep connections in.
		v.UpstreamGroup, v.UpstreamServer = upstreamGroup, net.JoinHostPort(host, port)
		v.UpstreamURL = "http://" + upstreamGroup
	}
	v.HealthURL = v.UpstreamURL + config.LivenessPath
	if p.Resolver != "" {
		v.ResolverAddr = p.Resolver
		if addr := netip.MustParseAddr(p.Resolver); addr.Is6() {
			v.ResolverAddr = "[" + addr.String() + "]"
		}
	}
	// $host comes from a Host header that matched server_name (any other
	// host lands in the default server), so the redirect cannot be pointed
	// at a foreign site.
	v.RedirectTarget = "https://$host"
	if p.PublicPort != 443 {
		v.RedirectTarget += ":" + strconv.Itoa(p.PublicPort)
	}
	v.RedirectTarget += "$request_uri"

	details := map[int]string{
		http.StatusMethodNotAllowed:      "The request method is not allowed here.",
		http.StatusRequestEntityTooLarge: fmt.Sprintf("The request body is larger than the %d bytes this server accepts.", p.ClientMaxBodyBytes),
		http.StatusTooManyRequests:       "Too many login attempts from this address; wait before retrying.",
		http.StatusBadGateway:            "The application is not reachable right now; try again shortly.",
		http.StatusGatewayTimeout:        "The application did not answer in time; try again shortly.",
	}
	// Not 400: nginx cannot send an invalid request (a URI above the root,
	// say) to a named location, and would answer 500 instead. Its own 400
	// page still carries the server's headers.
	for _, status := range []int{405, 413, 429, 502, 504} {
		body, err := json.Marshal(struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}{"about:blank", http.StatusText(status), status, details[status]})
		if err != nil {
			return view{}, fmt.Errorf("nginx: error page %d: %w", status, err)
		}
		// The body goes inside a single-quoted nginx string, where $ would
		// start a variable; the texts above contain neither.
		if strings.ContainsAny(string(body), `'$\`) {
			return view{}, fmt.Errorf("nginx: error page %d body cannot be quoted", status)
		}
		v.ErrorPages = append(v.ErrorPages, errorPage{Status: status, Body: string(body)})
	}
	return v, nil
}

func listen(addr string, port int) string {
	if addr == "" {
		return strconv.Itoa(port)
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// upstreamGroup names the app's upstream group in the rendered config.
const upstreamGroup = "nbms_app"

var confTemplate = template.Must(template.New("nginx.conf").Parse(confText))

// Two nginx rules shape the configuration:
//
//   - add_header, proxy_set_header and proxy_hide_header are inherited by a
//     block only when it defines none of its own. One add_header in a
//     location silently drops every server-level header (HSTS included), so
//     Security and Proxy are rendered into every block that needs them
//     instead of relying on inheritance.
//   - A location prefix and its alias must both end in "/": with
//     "location /static" a request for /static../x maps outside the folder.

// ownHeader reports whether nginx sets a header of the app's set itself
// (and hides the app's copy). Cache-Control is each location's decision.
func ownHeader(name string) bool { return !strings.EqualFold(name, "Cache-Control") }

// Security is the app's security header set, as nginx adds it to every
// response of a block (always: error responses too), plus the request ID.
// overrides are name, value pairs that replace a header of the set in this
// block, or join it (the stricter policy of uploads).
func (v view) Security(indent int, overrides ...string) string {
	var lines []string
	used := map[int]bool{}
	for _, h := range v.SecurityHeaders {
		if !ownHeader(h.Name) {
			continue
		}
		value := h.Value
		for i := 0; i+1 < len(overrides); i += 2 {
			if strings.EqualFold(overrides[i], h.Name) {
				value, used[i] = overrides[i+1], true
			}
		}
		lines = append(lines, `add_header `+h.Name+` `+quoteValue(value)+` always;`)
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		if !used[i] {
			lines = append(lines, `add_header `+overrides[i]+` `+quoteValue(overrides[i+1])+` always;`)
		}
	}
	lines = append(lines, `add_header X-Request-ID $nbms_request_id always;`)
	return indentLines(indent, lines)
}

// quoteValue quotes a header value for nginx: in double quotes, or in single
// quotes when it holds a double quote (Reporting-Endpoints does, a CSP holds
// single ones). Validate refuses a value with both, or with $ or a backslash.
func quoteValue(v string) string {
	if strings.Contains(v, `"`) {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}

// Proxy sends a request to the app with the headers the app's proxy
// package believes from a trusted peer, and hides the app's copies of the
// headers nginx sets itself, so each response carries exactly one.
// port is the X-Forwarded-Port the app gets.
func (v view) Proxy(indent int, port string) string {
	lines := []string{
		`proxy_pass $nbms_upstream;`,
		`proxy_set_header Connection "";`,
		`proxy_set_header Host $host;`,
		`# $remote_addr, not $proxy_add_x_forwarded_for: this is the edge, and`,
		`# whatever the client sent in X-Forwarded-For is forged.`,
		`proxy_set_header X-Forwarded-For $remote_addr;`,
		`proxy_set_header X-Forwarded-Proto $scheme;`,
		`proxy_set_header X-Forwarded-Host $host;`,
		`proxy_set_header X-Forwarded-Port ` + port + `;`,
		`proxy_set_header X-Request-ID $nbms_request_id;`,
		`# The app ignores Forwarded; nothing behind nginx may believe a forged one.`,
		`proxy_set_header Forwarded "";`,
		`# nginx sets these itself, so each response carries exactly one.`,
	}
	for _, h := range v.SecurityHeaders {
		if ownHeader(h.Name) {
			lines = append(lines, `proxy_hide_header `+h.Name+`;`)
		}
	}
	lines = append(lines,
		`proxy_hide_header X-Request-ID;`,
		`# Software banners.`,
		`proxy_hide_header X-Powered-By;`,
		`proxy_hide_header Server;`,
	)
	return indentLines(indent, lines)
}

func indentLines(indent int, lines []string) string {
	pad := strings.Repeat(" ", indent)
	return pad + strings.Join(lines, "\n"+pad)
}

const confText = `# Generated by github.com/nbms-deploy/nbms/infra/nginx from the stack config.
# Do not edit: change the stack config and run pulumi up.
# Run in the foreground: nginx -g 'daemon off;'. No user directive: nginx
# runs only as the container's (non-root) user.
worker_processes {{.Workers}};
pid {{.PidPath}};
error_log stderr warn;

events {
    worker_connections 1024;
}

http {
    server_tokens off;
    sendfile on;
    tcp_nopush on;

    # Inline MIME types keep this file self-contained; anything else is
    # served as a download, never as something a browser might render.
    default_type application/octet-stream;
    types {
        text/html html htm;
        text/css css;
        text/plain txt;
        text/csv csv;
        text/javascript js mjs;
        application/json json map;
        application/geo+json geojson;
        application/manifest+json webmanifest;
        application/pdf pdf;
        application/wasm wasm;
        application/xml xml;
        image/avif avif;
        image/gif gif;
        image/jpeg jpg jpeg;
        image/png png;
        image/svg+xml svg;
        image/webp webp;
        image/x-icon ico;
        font/otf otf;
        font/ttf ttf;
        font/woff woff;
        font/woff2 woff2;
    }

    # Writable paths under TempDir: the root filesystem is read-only.
    client_body_temp_path {{.TempDir}}/nginx-client-body;
    proxy_temp_path {{.TempDir}}/nginx-proxy;
    fastcgi_temp_path {{.TempDir}}/nginx-fastcgi;
    uwsgi_temp_path {{.TempDir}}/nginx-uwsgi;
    scgi_temp_path {{.TempDir}}/nginx-scgi;

    # The request's ID: the client's X-Request-ID when it has the app's form
    # (config.RequestIDPattern) and the stack accepts clients' IDs, so a
    # caller can trace its own request; nginx's own otherwise. An ID sent
    # but not used is logged beside it (client_request_id).
{{- if .AcceptClientRequestID}}
    map $http_x_request_id $nbms_request_id {
        "~{{.RequestIDPattern}}" $http_x_request_id;
        default $request_id;
    }
    map $http_x_request_id $nbms_client_request_id {
        "~{{.RequestIDPattern}}" "";
        default $http_x_request_id;
    }
{{- else}}
    map $http_x_request_id $nbms_request_id {
        default $request_id;
    }
    map $http_x_request_id $nbms_client_request_id {
        default $http_x_request_id;
    }
{{- end}}

    # One JSON object per request on stdout. request_id is the X-Request-ID
    # the app receives, so the two log lines join. The path is the one the
    # client sent, without its query string, which may carry tokens: not
    # $uri, which an internal redirect rewrites (an evidence download would
    # log the stored file name the app redirected to).
    map $request_uri $nbms_log_path {
        "~^(?<nbms_path>[^?]*)" $nbms_path;
    }
    log_format nbms_json escape=json '{"time":"$time_iso8601","request_id":"$nbms_request_id",'
        '"client_request_id":"$nbms_client_request_id",'
        '"remote_addr":"$remote_addr","host":"$host","method":"$request_method","path":"$nbms_log_path",'
        '"protocol":"$server_protocol","status":$status,"body_bytes_sent":$body_bytes_sent,'
        '"request_length":$request_length,"request_time":$request_time,'
        '"upstream_status":"$upstream_status","upstream_response_time":"$upstream_response_time",'
        '"user_agent":"$http_user_agent"}';
    access_log /dev/stdout nbms_json;

    # Slow clients are cut off instead of holding connections open.
    client_header_timeout 10s;
    client_body_timeout 30s;
    send_timeout 30s;
    keepalive_timeout 65s;
    reset_timedout_connection on;

    # The app's MAX_UPLOAD_BYTES: a larger body gets 413 here. One that
    # says its length is refused before the app sees the request; a chunked
    # one is cut off where it passes the limit.
    client_max_body_size {{.ClientMaxBodyBytes}};

    # Request bodies stream to the app as they arrive, never buffered whole:
    # a buffered body (up to client_max_body_size) would sit in this
    # container's tmpfs, which is its memory, so a handful of concurrent
    # maximum-size uploads would fill it or get nginx killed. Unbuffered, a
    # request holds at most client_body_buffer_size here, whatever its size:
    # concurrent uploads are bounded by connections (worker_connections per
    # worker), not by memory. The app reads each body under its own limits
    # (MAX_REQUEST_BODY_BYTES, MAX_UPLOAD_BYTES) and streams uploads to the
    # media volume; client_body_timeout still cuts off a stalled sender.
    proxy_request_buffering off;
    client_body_buffer_size 16k;

    # Login attempts per client address. Only POST counts: requests whose
    # key is empty are not limited.
    map $request_method $nbms_login_limit_key {
        POST $binary_remote_addr;
        default "";
    }
    limit_req_zone $nbms_login_limit_key zone=nbms_login:10m rate={{.LoginRate}};
    limit_req_status 429;
    limit_req_log_level warn;

    # Hashed static names never change content: cache them for a year.
    # Anything else is revalidated, so a deploy is seen at once.
    map $uri $nbms_static_cache_control {
        "~{{.HashedPattern}}" "public, max-age=31536000, immutable";
        default "no-cache";
    }
{{- if .ResolverAddr}}

    # The app is addressed through a variable, so nginx re-resolves its name
    # (valid=10s) and follows a replaced container to its new address.
    resolver {{.ResolverAddr}} valid=10s ipv6=off;
    resolver_timeout 2s;
{{- end}}

{{- if .TLS}}

    # Mozilla "intermediate": TLS 1.3, and TLS 1.2 with forward-secret AEAD
    # suites only. Set here, not per server: the protocol version is agreed
    # with the default server's settings, before SNI picks the site.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:nbms_tls:10m;
    ssl_session_timeout 1d;
    # Tickets would encrypt every session under one key until restart,
    # which defeats forward secrecy.
    ssl_session_tickets off;
{{- end}}

{{- if .PublicCacheSeconds}}

    # The micro-cache of the app's public answers (see the public location).
    # Only an answer the app marks Cache-Control: public may be kept.
    proxy_cache_path {{.TempDir}}/nginx-cache levels=1:2 keys_zone=nbms_public:4m max_size=32m inactive=1m use_temp_path=off;
    map $upstream_http_cache_control $nbms_not_public {
        "~*(^|[ ,])public($|[ ,])" "";
        default 1;
    }
{{- end}}

{{- if .UpstreamGroup}}

    # The app. Idle connections are kept and reused: a request does not pay
    # for a TCP handshake with the app. max_fails=0: with a single server,
    # marking it down would only turn a blip into 502s for fail_timeout.
    upstream {{.UpstreamGroup}} {
{{- if .UpstreamInclude}}
        # The live release, written by the blue/green switch and loaded by a
        # graceful reload (new workers; the old ones finish their requests).
        include {{.UpstreamInclude}};
{{- else}}
        server {{.UpstreamServer}} max_fails=0;
{{- end}}
        keepalive 32;
        keepalive_requests 10000;
        keepalive_timeout 60s;
    }
{{- end}}

    # HTTP/1.1 with an empty Connection header (each proxied location sets
    # it): needed for the kept upstream connections.
    proxy_http_version 1.1;
    proxy_connect_timeout 5s;
    proxy_send_timeout 60s;
    proxy_read_timeout {{.ReadTimeout}};

    # A request for a host this site does not serve gets no answer at all.
    server {
        listen {{.HTTPListen}} default_server;
        server_name _;
{{template "health" .}}
        location / {
            return 444;
        }
    }
{{- if .TLS}}

    server {
        listen {{.HTTPSListen}} ssl default_server;
        server_name _;
        ssl_reject_handshake on;
        return 444;
    }

    # Plain HTTP only redirects to HTTPS{{if .ACMEChallengeRoot}} (and answers ACME HTTP-01 challenges){{end}}.
    server {
        listen {{.HTTPListen}};
        server_name {{.ServerNameList}};
{{.Security 8}}
{{template "health" .}}
{{- if .ProbePaths}}

        # A probe gets the app's own answer here, never a redirect: a load
        # balancer or uptime checker may only speak plain HTTP.
        set $nbms_upstream {{.UpstreamURL}};
{{- end}}
{{- range .ProbePaths}}
        location = {{.}} {
{{$.Security 12}}
{{$.Proxy 12 "$server_port"}}
        }
{{- end}}
{{- if .ACMEChallengeRoot}}
        location ^~ /.well-known/acme-challenge/ {
            root {{.ACMEChallengeRoot}};
            default_type text/plain;
        }
{{- end}}
        location / {
            return 301 {{.RedirectTarget}};
        }
    }

    server {
        listen {{.HTTPSListen}} ssl;
        server_name {{.ServerNameList}};

        ssl_certificate {{.CertPath}};
        ssl_certificate_key {{.KeyPath}};
{{template "site" .}}
    }
{{- else}}

    server {
        listen {{.HTTPListen}};
        server_name {{.ServerNameList}};
{{template "health" .}}
{{template "site" .}}
    }
{{- end}}
}
{{define "health"}}
        # The edge's health is the app's liveness, asked through the site's
        # upstream with short timeouts: 502 or 504 while nginx cannot reach
        # the live release, so the proxy's health check sees that outage.
        location = ` + HealthPath + ` {
            access_log off;
            set $nbms_health_url {{.HealthURL}};
            proxy_pass $nbms_health_url;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
        }
{{- end}}
{{define "site"}}
        set $nbms_upstream {{.UpstreamURL}};

        # add_header in a location drops these server-level headers, so
        # every location below repeats them.
{{.Security 8}}
{{- range .ErrorPages}}
        error_page {{.Status}} @nbms_error_{{.Status}};
{{- end}}

        # Location and alias both end in "/": with "location /static" a
        # request for /static../x would map outside the folder.
        location /static/ {
            alias {{.StaticRoot}}/;
{{.Security 12}}
            add_header Cache-Control $nbms_static_cache_control;
        }

        # Evidence files. Nothing serves the media root publicly: the app
        # decides who may read a file and answers an authorised download
        # with X-Accel-Redirect to this location, whose internal flag makes
        # it 404 to any client that asks for it. nginx keeps the app's
        # Content-Type, Content-Disposition (attachment) and Cache-Control
        # (private, no-store) through the redirect; nothing here caches.
        location {{.ProtectedMediaPrefix}} {
            internal;
            alias {{.MediaRoot}}/;
{{.Security 12 "Content-Security-Policy" .AttachmentCSP}}
        }

{{- if .PublicCacheSeconds}}

        # Anonymous open data: nginx keeps the answers the app marks public
        # and answers repeats itself for {{.PublicCacheSeconds}}s (the app's
        # longer max-age still reaches browsers). It never keeps an answer
        # that is not public (private, no-store, an error) or sets a cookie,
        # and a request with credentials neither reads nor fills the cache.
        # The key holds the Origin: the CORS answer differs by origin. A
        # cached answer is nobody's rate-limit state, so those headers go.
        location {{.PublicPrefix}} {
{{.Security 12}}
{{.Proxy 12 .ForwardedPort}}
            proxy_hide_header RateLimit;
            proxy_hide_header RateLimit-Policy;
            proxy_cache nbms_public;
            proxy_cache_key "$scheme://$host$request_uri|$http_origin";
            proxy_cache_methods GET HEAD;
            proxy_ignore_headers Cache-Control Expires;
            proxy_cache_valid 200 {{.PublicCacheSeconds}}s;
            proxy_cache_bypass $http_authorization;
            proxy_no_cache $http_authorization $nbms_not_public;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 2s;
            proxy_cache_use_stale updating;
            add_header X-Cache-Status $upstream_cache_status always;
        }
{{- end}}

        location = {{.LoginPath}} {
            limit_req zone=nbms_login{{if .LoginBurst}} burst={{.LoginBurst}}{{end}} nodelay;
{{.Security 12}}
{{.Proxy 12 .ForwardedPort}}
        }

        location / {
{{.Security 12}}
{{.Proxy 12 .ForwardedPort}}
        }

        # Errors nginx answers itself, in the app's problem+json shape.
{{- range .ErrorPages}}
        location @nbms_error_{{.Status}} {
{{$.Security 12}}
            add_header Cache-Control "no-store" always;
{{- if eq .Status 429}}
            add_header Retry-After "{{$.RetryAfter}}" always;
{{- end}}
            types { }
            default_type application/problem+json;
            return {{.Status}} '{{.Body}}';
        }
{{- end}}
{{- end}}`
