// Package config reads and writes Tollgate's declarative file: the YAML form of
// fsm.Bundle that `tollgate apply -f FILE` sends to the cluster.
//
// It is a package of its own, not part of fsm, because it deals with text: lines,
// YAML nodes and file names, which the replicated state never sees (the admin API
// receives the bundle as JSON). fsm.Bundle.Validate owns the rules; this package only
// finds, for each problem, the line it comes from, so every error reads
//
//	FILE:LINE: PATH: message
//
// for example `quickstart.yaml:12: groups[0].apis[0].methd: unknown field`. Parsing
// is strict: unknown fields, duplicate keys and values of the wrong type are refused,
// all of them at once rather than one per run, before Validate runs.
//
// YAML anchors, aliases and merge keys work; top-level keys starting with "x-" are
// ignored so they can hold anchors shared by the rest of the file (as in Docker
// Compose):
//
//	x-backend: &backend {type: http, url: http://127.0.0.1:9001, timeout: 3s}
//	groups:
//	  - name: weather
//	    apis:
//	      - {name: city, method: GET, path: /cities, auth: app, backend: {<<: *backend, path: /v2/cities}}
//
// Everything here is pure and safe for concurrent use.
package config
