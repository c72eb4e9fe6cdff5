// Command echo is a small backend for the quickstart and tests: it answers every
// request with a JSON description of what it received (method, path, query, headers,
// body), so you can see what the gateway forwards.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9001", "address to listen on")
	flag.Parse()
	log.Printf("echo backend on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(echo)))
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(map[string]any{
		"method":  r.Method,
		"host":    r.Host,
		"path":    r.URL.Path,
		"query":   r.URL.Query(),
		"headers": r.Header,
		"body":    string(body),
	})
}
