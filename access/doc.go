// Package access holds the compiled who-may-call checks of an API that are not app
// signatures: IP access control (allow and deny CIDR lists, per-app lists, and the
// client address behind trusted proxies) and JWT authentication (auth: jwt).
//
// It is its own package, apart from proxy, because the checks are compiled access
// rules with more than one user: the proxy runs them on every request, and the command
// line compiles the same rules to validate a policy before it is
// applied and to answer "would this client be let in?" without a running node. Keeping
// them here also keeps proxy's pipeline about order and plumbing, not cryptography.
//
// # Compiled once, checked per request
//
// Like the routes, rules are compiled when a config version is built and are read only
// afterwards: CompileIPPolicy and CompileJWT do all the parsing, and the per-request
// methods take no lock and read no shared map that changes.
//
// IPRules.Allowed and ClientIP never allocate (alloc_test.go). Each address list is a
// sorted table of disjoint ranges, one for IPv4 and one for IPv6, searched in
// O(log n); IPv4-mapped IPv6 addresses and prefixes are treated as the IPv4 ones they
// map. The order of the IP check is: deny, then the app's own allow list if the policy
// has one for the calling app, then the API-wide allow list (empty allows all).
//
// # JWT
//
// Tokens are verified with github.com/golang-jwt/jwt/v5. Each configured key is bound
// at compile time to the algorithm (or, for a JWK without "alg", the algorithms of its
// type) it verifies, and the parser is told to accept only those, so "none" is never
// accepted and an HMAC secret can never be used to check an RSA token, or an RSA public
// key as an HMAC secret. A token with a kid is checked with the keys having that kid,
// then the keys having none; a token without kid with every key for its algorithm.
// The claims exp and nbf are checked against the time the caller passes, with a small
// leeway, then iss and aud, then (single use) jti through a ReplayStore. Verification
// allocates, as golang-jwt does; the IP path does not.
//
// Refusals are the sentinel errors of errors.go, with messages in the style of Alibaba
// Cloud API Gateway; the proxy maps them to status codes.
package access
