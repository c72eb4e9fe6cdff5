// Package param verifies a request's parameters against an API's declaration and
// converts the request, in place, into the request its backend expects.
//
// It is its own package because verification and conversion are one body of rules
// (types, checks, locations, mapping, constants, system parameters, JSON Schema,
// injection detection) that the proxy runs as two stages of its pipeline but should
// not have to know: the proxy compiles a Plan per API per config version and calls
// Apply per request. The package reads fsm's model and nothing else of Tollgate.
//
// # Compile once, apply per request
//
// Compile turns an fsm.APIDef into an immutable Plan: regexes compiled, enums as sets,
// numeric bounds parsed, defaults validated against their own rules, error values
// built, the backend path split into literals and [name] segments, a JSON Schema
// compiled. Compile is also the validator of a declaration: an error names the
// parameter and what is wrong with it, so whoever accepts a declarative file can refuse
// it before it is applied. A Plan is safe for concurrent use.
//
// Plan.Apply reads the request's path (values the router decoded), query, headers and
// application/x-www-form-urlencoded body, checks every declared parameter, and rewrites
// the request into the backend request. A Scratch holds every buffer it needs, so a
// pooled Scratch makes verification and conversion allocation-free for scalar
// parameters; a JSON Schema check decodes the body and allocates. Plan.BackendPath then
// builds the backend path from the same Scratch.
//
// # Rules
//
//   - Types: string, int (32-bit), long (64-bit), float (32-bit), double (64-bit),
//     boolean ("true" or "false", any case), array (of items, a scalar type, string by
//     default). Integers are decimal with an optional sign; floats are decimal with an
//     optional fraction and exponent (no NaN, Inf or hex).
//   - min/max bound the numeric value and apply to numeric types only; minLength and
//     maxLength count characters (Unicode code points); enum compares the text exactly;
//     regex is RE2 and searches the value (anchor it with ^ and $ to match it whole).
//   - A parameter given several times (a repeated query or form key, a repeated header
//     line) is checked once per value, so a backend that reads the last one cannot be
//     handed an unchecked value. An array's values are its repeated keys, each also
//     split on commas; every rule applies to each item. An empty value is an empty
//     string, not an absent parameter; an empty array value has no items.
//   - default is used when the parameter is absent and is forwarded like a value sent
//     by the client; required without default refuses an absent parameter.
//
// # Conversion
//
// An API that declares parameters forwards only those, unless it is passthrough:
// undeclared query and form parameters are dropped, and so are undeclared headers that
// are not standard (see StandardHeader: Accept*, Content-*, If-*, Authorization, Cookie,
// User-Agent, X-Forwarded-*, X-Ca-*, trace context...). An API that declares none
// forwards everything and only adds its constants and system parameters.
//
// A backend.map entry moves a declared parameter to another location and name. A value
// that stays where it came from, under the same name, is left untouched; a moved value
// is written anew: into a query or form as one key per value (an array, one key per
// item), into a header or path segment as its values joined with commas. Constants and
// then system parameters are written last and replace any value of the same name, so a
// client cannot forge them. The query string and a form body are re-encoded only when
// something in them changes.
//
// # Errors
//
// Apply returns nil or an *Error with the parameter and the rule it broke, whose
// message follows Alibaba Cloud API Gateway's: "Required Parameter Missing: a",
// "Invalid Parameter: a (max 100)". Errors for declared parameters are built by Compile
// and shared, so refusing a request allocates nothing either; never modify one.
package param
