package param

// System carries the values of the system parameters for one request. The proxy fills
// the fields it knows (slices into its own per-request memory are fine: Apply copies
// what it writes) before calling Apply; an empty field forwards an empty value, except
// Proxy, which defaults to DefaultProxy.
type System struct {
	ClientIP   []byte // CaClientIp: the client's address as the gateway saw it
	RequestID  []byte // CaRequestId: the X-Ca-Request-Id the gateway answers with
	AppID      []byte // CaAppId: the calling app's name (empty for anonymous calls)
	AppKey     []byte // CaAppKey: the calling app's key
	APIName    []byte // CaApiName: the API's name
	Stage      []byte // CaStage: TEST, PRE or RELEASE
	Domain     []byte // CaDomain: the Host the client called
	HTTPSchema []byte // CaHttpSchema: http or https
	// RequestHandleTime is CaRequestHandleTime: when the gateway received the request;
	// Alibaba sends it as an HTTP date in GMT (time.RFC1123 with "GMT").
	RequestHandleTime []byte
	Proxy             []byte // CaProxy: the gateway's name
}

// DefaultProxy is CaProxy's value when System.Proxy is empty.
const DefaultProxy = "Tollgate"

// sysID names a System field, so a compiled plan reads it without a map.
type sysID uint8

const (
	sysClientIP sysID = iota
	sysRequestID
	sysAppID
	sysAppKey
	sysAPIName
	sysStage
	sysDomain
	sysHTTPSchema
	sysRequestHandleTime
	sysProxy
)

// systemNames maps the declarative file's system parameter names to fields.
var systemNames = map[string]sysID{
	"CaClientIp":          sysClientIP,
	"CaRequestId":         sysRequestID,
	"CaAppId":             sysAppID,
	"CaAppKey":            sysAppKey,
	"CaApiName":           sysAPIName,
	"CaStage":             sysStage,
	"CaDomain":            sysDomain,
	"CaHttpSchema":        sysHTTPSchema,
	"CaRequestHandleTime": sysRequestHandleTime,
	"CaProxy":             sysProxy,
}

var defaultProxy = []byte(DefaultProxy)

func (s *System) get(id sysID) []byte {
	if s == nil {
		if id == sysProxy {
			return defaultProxy
		}
		return nil
	}
	switch id {
	case sysClientIP:
		return s.ClientIP
	case sysRequestID:
		return s.RequestID
	case sysAppID:
		return s.AppID
	case sysAppKey:
		return s.AppKey
	case sysAPIName:
		return s.APIName
	case sysStage:
		return s.Stage
	case sysDomain:
		return s.Domain
	case sysHTTPSchema:
		return s.HTTPSchema
	case sysRequestHandleTime:
		return s.RequestHandleTime
	case sysProxy:
		if len(s.Proxy) == 0 {
			return defaultProxy
		}
		return s.Proxy
	}
	return nil
}
