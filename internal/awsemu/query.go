package awsemu

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// apiError is an AWS error returned by an action.
type apiError struct {
	status int
	typ    string // Sender or Receiver (Query protocol errors)
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

// errf returns a 400 Sender error.
func errf(code, format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "Sender", code, fmt.Sprintf(format, args...)}
}

// query holds the parameters of a Query-protocol request.
type query struct{ v url.Values }

func (q query) get(k string) string { return q.v.Get(k) }
func (q query) has(k string) bool   { _, ok := q.v[k]; return ok }

// bool reads a boolean parameter; ok reports whether it was present.
func (q query) boolean(k string) (b, ok bool) {
	s := q.v.Get(k)
	if s == "" {
		return false, false
	}
	return strings.EqualFold(s, "true"), true
}

// integer reads an integer parameter; ok reports whether it was present.
func (q query) integer(k string) (int, bool, error) {
	s := q.v.Get(k)
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, true, errf("InvalidParameterValue", "Value (%s) for parameter %s is invalid", s, k)
	}
	return n, true, nil
}

// elem returns the prefix of the i-th (1-based) element of the list prefix,
// accepting both the EC2 form (P.1) and the Query form (P.member.1).
func (q query) elem(prefix string, i int) (string, bool) {
	for _, p := range []string{prefix + ".member." + strconv.Itoa(i), prefix + "." + strconv.Itoa(i)} {
		if q.has(p) {
			return p, true
		}
		for k := range q.v {
			if strings.HasPrefix(k, p+".") {
				return p, true
			}
		}
	}
	return "", false
}

// list returns the scalar list prefix (P.1, P.2, … or P.member.N).
func (q query) list(prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		p, ok := q.elem(prefix, i)
		if !ok {
			return out
		}
		out = append(out, q.get(p))
	}
}

// structs returns the structure list prefix, each element as a query of
// its own members.
func (q query) structs(prefix string) []query {
	var out []query
	for i := 1; ; i++ {
		p, ok := q.elem(prefix, i)
		if !ok {
			return out
		}
		out = append(out, q.sub(p))
	}
}

// sub returns the members of the structure prefix.
func (q query) sub(prefix string) query {
	s := query{url.Values{}}
	for k, v := range q.v {
		if strings.HasPrefix(k, prefix+".") {
			s.v[k[len(prefix)+1:]] = v
		}
	}
	return s
}

// empty reports whether q has no parameters.
func (q query) empty() bool { return len(q.v) == 0 }

// tags reads a list of Key/Value structures.
func (q query) tags(prefix string) []tag {
	var out []tag
	for _, s := range q.structs(prefix) {
		out = append(out, tag{s.get("Key"), s.get("Value")})
	}
	return out
}

type tag struct{ key, value string }

// XML building. Element content is built as strings; xt escapes text.

func x(name string, kids ...string) string {
	return "<" + name + ">" + strings.Join(kids, "") + "</" + name + ">"
}

func xt(name, v string) string { return "<" + name + ">" + html.EscapeString(v) + "</" + name + ">" }

// xo is xt, omitted when v is empty.
func xo(name, v string) string {
	if v == "" {
		return ""
	}
	return xt(name, v)
}

func xb(name string, b bool) string { return xt(name, strconv.FormatBool(b)) }
func xi(name string, n int) string  { return xt(name, strconv.Itoa(n)) }

// xlist wraps each element in <elem> inside <name>.
func xlist(name, elem string, items []string) string {
	var b strings.Builder
	b.WriteString("<" + name + ">")
	for _, it := range items {
		b.WriteString("<" + elem + ">" + it + "</" + elem + ">")
	}
	b.WriteString("</" + name + ">")
	return b.String()
}

// xtlist is xlist of escaped scalar values.
func xtlist(name, elem string, vals []string) string {
	items := make([]string, len(vals))
	for i, v := range vals {
		items[i] = html.EscapeString(v)
	}
	return xlist(name, elem, items)
}

func xtime(name string, t time.Time) string {
	return xt(name, t.UTC().Format("2006-01-02T15:04:05.000Z"))
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newID returns an AWS-style id: prefix-<17 hex digits>.
func newID(prefix string) string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)[:17]
}

// newUpperID returns an upper-case id in the shape IAM uses for role and
// instance-profile ids: prefix followed by 17 characters (AROA…, AIPA…).
func newUpperID(prefix string) string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return prefix + strings.ToUpper(hex.EncodeToString(b))[:17]
}

// writeXMLValue writes v, marshalled with encoding/xml, as an XML document;
// writeXML is for bodies built as strings.
func writeXMLValue(w http.ResponseWriter, status int, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeXML(w, status, string(body))
}

// writeJSON11 writes v as an application/x-amz-json-1.1 document.
func writeJSON11(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeXML(w http.ResponseWriter, status int, body string) {
	const header = `<?xml version="1.0" encoding="UTF-8"?>` + "\n"
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(header)+len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(header + body))
}

func asAPIError(err error) *apiError {
	if ae, ok := err.(*apiError); ok {
		return ae
	}
	return &apiError{http.StatusInternalServerError, "Receiver", "InternalError", err.Error()}
}

// writeEC2Error writes err in the EC2 error format.
func writeEC2Error(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	writeXML(w, ae.status, x("Response",
		x("Errors", x("Error", xt("Code", ae.code), xt("Message", ae.msg))),
		xt("RequestID", newRequestID())))
}

// writeQueryError writes err in the AWS Query error format.
func writeQueryError(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	typ := ae.typ
	if typ == "" {
		typ = "Sender"
	}
	writeXML(w, ae.status, x("ErrorResponse",
		x("Error", xt("Type", typ), xt("Code", ae.code), xt("Message", ae.msg)),
		xt("RequestId", newRequestID())))
}

// queryService serves a Query-protocol API: each action maps to a function
// returning the response's inner XML. Actions run with the Emulator's state
// lock held.
type queryService struct {
	e         *Emulator
	namespace string
	ec2Style  bool // EC2 response/error shapes instead of Query ones
	actions   map[string]func(q query) (string, error)
}

func (s *queryService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.writeError(w, errf("MalformedQueryString", "%v", err))
		return
	}
	action := r.Form.Get("Action")
	fn := s.actions[action]
	if fn == nil {
		s.writeError(w, errf("InvalidAction", "The action %s is not valid for this web service.", action))
		return
	}
	s.e.mu.Lock()
	body, err := fn(query{r.Form})
	s.e.mu.Unlock()
	if err != nil {
		s.writeError(w, err)
		return
	}
	rid := newRequestID()
	if s.ec2Style {
		writeXML(w, http.StatusOK, `<`+action+`Response xmlns="`+s.namespace+`">`+xt("requestId", rid)+body+`</`+action+`Response>`)
		return
	}
	writeXML(w, http.StatusOK, `<`+action+`Response xmlns="`+s.namespace+`">`+
		x(action+"Result", body)+x("ResponseMetadata", xt("RequestId", rid))+`</`+action+`Response>`)
}

func (s *queryService) writeError(w http.ResponseWriter, err error) {
	if s.ec2Style {
		writeEC2Error(w, err)
	} else {
		writeQueryError(w, err)
	}
}
