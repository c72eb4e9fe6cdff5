package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// callCommand is the command-line form of the debugging tool: it signs a request the
// way an Alibaba Cloud API Gateway client does, and shows the string-to-sign, the
// request and the response.
func callCommand() *cobra.Command {
	var (
		headers, forms, signHeaders []string
		data, appName, key, secret  string
		appCode, stage, host        string
		sha1, md5, quiet            bool
		timeout                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "call [METHOD] URL",
		Short: "Call an API through the gateway, signed with an app's key and secret",
		Long: `Call an API the way an Alibaba Cloud API Gateway client does: sign the request with
the app's AppKey and AppSecret (HmacSHA256, or --sha1), then print the string-to-sign,
the request and the response. On "Invalid Signature" compare the gateway's
StringToSign (in X-Ca-Error-Message, newlines as #) with ours.

The app's credentials come from --key/--secret, or from the admin API with --app NAME.
--appcode sends Authorization: APPCODE instead of signing; with neither, the call is
anonymous. The URL's host names the group (demo.localhost:8080); --host overrides the
Host header while connecting to the URL's address.

Examples:
  tollgate call --app mobile http://weather.localhost:8080/cities/paris?days=3
  tollgate call POST --key K --secret S -d '{"qty":2}' -H 'Content-Type: application/json' http://shop.localhost:8080/orders
  tollgate call POST --app mobile --form user=ann --form pin=1234 http://shop.localhost:8080/login`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			method, target := "GET", args[0]
			if len(args) == 2 {
				method, target = strings.ToUpper(args[0]), args[1]
			} else if data != "" || len(forms) > 0 {
				method = "POST"
			}
			u, err := url.Parse(target)
			if err != nil || u.Host == "" {
				return fmt.Errorf("URL %q: want an absolute URL like http://group.localhost:8080/path", target)
			}
			var body []byte
			contentType := ""
			switch {
			case len(forms) > 0 && data != "":
				return fmt.Errorf("use --form or -d, not both")
			case len(forms) > 0:
				v := url.Values{}
				for _, f := range forms {
					k, val, _ := strings.Cut(f, "=")
					v.Add(k, val)
				}
				body = []byte(v.Encode())
				contentType = "application/x-www-form-urlencoded; charset=utf-8"
			case strings.HasPrefix(data, "@"):
				if body, err = os.ReadFile(data[1:]); err != nil {
					return err
				}
			default:
				body = []byte(data)
			}
			req, err := http.NewRequest(method, u.String(), bytes.NewReader(body))
			if err != nil {
				return err
			}
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("-H %q: want 'Name: value'", h)
				}
				req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			if req.Header.Get("Accept") == "" {
				req.Header.Set("Accept", "application/json")
			}
			if host != "" {
				req.Host = host
			}
			if stage != "" {
				st, err := fsm.ParseStage(stage)
				if err != nil {
					return fmt.Errorf("--stage: %v", err)
				}
				stage = string(st)
			}
			if appName != "" && (key == "" || secret == "") {
				c, err := adminClient(cmd)
				if err != nil {
					return err
				}
				ctx, cancel := ctxTimeout()
				var app fsm.App
				err = c.Do(ctx, "GET", "/v1/apps/"+appName, nil, &app)
				cancel()
				if err != nil {
					return err
				}
				if len(app.Secrets) == 0 {
					return fmt.Errorf("app %s has no secret", appName)
				}
				key, secret = app.Key, app.Secrets[0]
				if appCode == "-" {
					appCode = app.Code
				}
			}
			out := cmd.OutOrStdout()
			switch {
			case appCode != "":
				req.Header.Set("Authorization", "APPCODE "+appCode)
				if stage != "" {
					req.Header.Set(signature.HeaderStage, stage)
				}
			case key != "":
				s := signature.NewSigner(key, secret)
				if sha1 {
					s.Method = signature.HmacSHA1
				}
				s.Stage = stage
				s.Headers = signHeaders
				s.ContentMD5 = md5
				sts, err := s.SignHTTP(req)
				if err != nil {
					return err
				}
				if !quiet {
					fmt.Fprintf(out, "== string to sign (%s)\n%s\n\n", s.Method, sts)
				}
			default:
				if stage != "" {
					req.Header.Set(signature.HeaderStage, stage)
				}
			}
			if !quiet {
				fmt.Fprintf(out, "== request\n%s %s HTTP/1.1\nHost: %s\n", req.Method, req.URL.RequestURI(), req.Host)
				printHeaders(out, req.Header)
				if len(body) > 0 {
					fmt.Fprintf(out, "\n%s\n", body)
				}
				fmt.Fprintln(out)
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			start := time.Now()
			resp, err := (&http.Client{Timeout: timeout, Transport: localhostTransport()}).Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			respBody, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintf(out, "== response (%s)\n%s %s\n", time.Since(start).Round(time.Microsecond), resp.Proto, resp.Status)
				printHeaders(out, resp.Header)
				fmt.Fprintln(out)
			}
			out.Write(respBody)
			if len(respBody) > 0 && respBody[len(respBody)-1] != '\n' {
				fmt.Fprintln(out)
			}
			if resp.StatusCode >= 400 {
				return exitError{1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	f.StringVarP(&data, "body", "d", "", "request body (@FILE reads a file)")
	f.StringArrayVar(&forms, "form", nil, "form parameter key=value (repeatable; sends a urlencoded body)")
	f.StringVar(&appName, "app", "", "sign as this app (its key and secret come from the admin API)")
	f.StringVar(&key, "key", "", "AppKey")
	f.StringVar(&secret, "secret", "", "AppSecret")
	f.StringVar(&appCode, "appcode", "", "send Authorization: APPCODE CODE instead of signing ('-' with --app: the app's code)")
	f.StringVar(&stage, "stage", "", "X-Ca-Stage (default: the gateway's, RELEASE)")
	f.StringVar(&host, "host", "", "Host header (default: the URL's host)")
	f.StringArrayVar(&signHeaders, "sign-header", nil, "another header to sign (repeatable)")
	f.BoolVar(&sha1, "sha1", false, "sign with HmacSHA1 instead of HmacSHA256")
	f.BoolVar(&md5, "content-md5", true, "send Content-MD5 for a non-form body")
	f.BoolVarP(&quiet, "quiet", "q", false, "print the response body only")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "request timeout")
	return clientCommand(cmd)
}

func printHeaders(w io.Writer, h http.Header) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range h[k] {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
}

// localhostTransport dials names under localhost (demo.localhost, the groups of a
// node on the default base domain) on the loopback address, as RFC 6761 has them
// resolve and as curl and browsers do. Go's resolver asks DNS for them, which on many
// machines knows no such host, and the quickstart's calls would fail there.
func localhostTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, loopbackForLocalhost(addr))
	}
	return t
}

// loopbackForLocalhost maps host:port to 127.0.0.1:port when host is localhost or a
// name under it.
func loopbackForLocalhost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
