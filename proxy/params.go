package proxy

import (
	"slices"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/param"
	"github.com/valyala/fasthttp"
)

// needsPlan reports whether an API declares anything param.Plan does: parameters, a
// body schema, mappings, constants, system parameters or the injection guard. An API
// that declares none is forwarded as received and pays nothing for this stage.
func needsPlan(def *fsm.APIDef) bool {
	return len(def.Params) > 0 || (def.Body != nil && def.Body.Schema != "") ||
		len(def.Backend.Map) > 0 || len(def.Backend.Constants) > 0 || len(def.Backend.System) > 0 ||
		slices.Contains(def.Guard, "injection")
}

// buildVerify compiles the API's parameter plan into the route and the step that
// applies it: verification, then conversion into the backend request (undeclared
// parameters dropped, mapped ones moved, defaults, constants, system parameters).
// The forward step builds the backend path from the same plan.
func buildVerify(_ *builder, r *Route, def *fsm.APIDef) (Step, error) {
	if !needsPlan(def) {
		return nil, nil
	}
	plan, err := param.Compile(def, r.paramNames)
	if err != nil {
		return nil, err
	}
	r.plan = plan
	sys := len(def.Backend.System) > 0
	return func(c *Call) bool {
		var s *param.System
		if sys {
			s = c.system()
		}
		if e := plan.Apply(&c.Ctx.Request, c.params.v[:c.params.n], s, &c.ps); e != nil {
			return c.failParam(e)
		}
		return true
	}, nil
}

// failParam answers a refused parameter with its row and param's message, which names
// the parameter and the rule ("Invalid Parameter: a (max 100)").
func (c *Call) failParam(e *param.Error) bool {
	code := ErrInvalidParam
	switch e.Kind {
	case param.KindMissing:
		code = ErrMissingParam
	case param.KindInjection:
		code = ErrInjection
	case param.KindBody:
		code = ErrInvalidBody
	}
	c.msg = e.AppendMessage(c.msg[:0])
	return c.FailMessage(code, c.msg)
}

// system fills the request's system parameter values, once, into the Call's own
// buffers, so it allocates nothing once they have grown.
func (c *Call) system() *param.System {
	s := &c.sys
	if s.RequestID != nil {
		return s
	}
	b := c.sysBuf[:0]
	ip := c.ClientIP()
	if ip.IsValid() {
		b = ip.AppendTo(b)
	}
	nIP := len(b)
	b = fasthttp.AppendHTTPDate(b, c.Start)
	c.sysBuf = b
	s.ClientIP = b[:nIP:nIP]
	s.RequestHandleTime = b[nIP:]
	s.RequestID = c.reqID[:]
	if c.app != nil {
		s.AppID = c.app.nameB
		s.AppKey = c.app.keyB
	}
	if c.Route != nil {
		s.APIName = c.Route.apiName
	}
	s.Stage = stageNames[c.si]
	s.Domain = c.host
	s.HTTPSchema = schemeHTTP
	if c.Ctx.IsTLS() {
		s.HTTPSchema = schemeHTTPS
	}
	return s
}
