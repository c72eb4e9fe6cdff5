// Package signature implements the request signatures of Alibaba Cloud API Gateway,
// so that clients written for it (its Java, Python and Node.js SDKs) call Tollgate
// unchanged, and the backend signature by which Tollgate proves to a backend that a
// call came through it.
//
// It is its own package, not part of proxy, because three parties share it: the proxy
// verifies app signatures and signs backend calls on the hot path, the `tollgate call`
// command and the benchmark load generator sign requests as a client does, and backend
// authors verify the backend signature with VerifyBackendRequest (net/http only, no
// fasthttp needed on their side).
//
// # App signature (DESIGN.md, "App signatures")
//
//	StringToSign = METHOD "\n" Accept "\n" Content-MD5 "\n" Content-Type "\n" Date "\n"
//	               Headers PathAndParameters
//
// Headers are the names listed in X-Ca-Signature-Headers, trimmed, sorted byte-wise as
// written, each "name:value\n" with the value looked up case-insensitively (empty when
// the header is absent). X-Ca-Signature and X-Ca-Signature-Headers are never signed,
// even when listed. PathAndParameters is the path, then "?" and the query and form
// parameters sorted by key (a stable sort: query before form for an equal key), values
// percent-decoded with '+' as a space and not re-encoded, "key" alone when the value is
// empty. Form parameters count only for an application/x-www-form-urlencoded body.
//
// Choices where the published algorithm is silent, each pinned by a test:
//
//   - Repeated keys: every value is signed, joined by "," in the order sent (query
//     values first, then form values), as "key=v1,v2". This is exactly what Alibaba's
//     Node.js client signs for an array parameter (it stringifies the array), and it
//     leaves no value unsigned, so a party in the middle cannot append a second value
//     for a key the backend reads last. (Alibaba's gateway is documented to sign only
//     the first value; its Java and Python SDKs cannot send a repeated key at all.)
//     A client that sends one key both in the query and in the form must sign both
//     values; Alibaba's SDKs would sign only the form value there, and are refused.
//   - The path: every Alibaba SDK signs the path string it puts on the wire, percent
//     escapes included, so Verify first checks the path exactly as received; when it
//     holds a '%' escape, Verify also accepts the percent-decoded path, for clients and
//     intermediaries that sign or rewrite the decoded form. AppendStringToSign, and so
//     the "Server StringToSign" in an error, shows the path as received.
//   - Key order is byte order of the UTF-8 keys. The SDKs sort UTF-16 code units; the
//     two orders differ only between characters above U+FFFF and those in
//     U+E000..U+FFFF.
//
// # Backend signature
//
//	StringToSign = METHOD "\n" Content-MD5 "\n" Headers PathAndParameters
//
// Content-MD5 is base64(md5(body)) of the body actually sent, for a POST or PUT whose
// non-empty body is not a form, else empty. Headers are every X-Ca-* header of the
// outgoing request except the X-Ca-Proxy-Signature* ones, plus the header parameters
// the caller names (mapped, constant and system parameters sent in headers), each
// lower-cased and listed in X-Ca-Proxy-Signature-Headers. The path is percent-decoded,
// parameters as for the app signature. The MAC is always HmacSHA256.
//
// # Hot path
//
// Verify, AppendStringToSign and BackendKey.Sign allocate nothing once their buffers
// have grown (see alloc_test.go), take no lock, and never build an HMAC per request:
// a Secret holds the HMAC inner and outer hash states precomputed, and a Scratch (one
// per in-flight request) holds the hash objects and buffers.
package signature
