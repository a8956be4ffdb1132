package awsemu

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// iamNamespace is the XML namespace of IAM Query responses.
const iamNamespace = "https://iam.amazonaws.com/doc/2010-05-08/"

// iamService emulates the parts of AWS IAM (Query protocol, version
// 2010-05-08) that Corral uses: roles, inline role policies and instance
// profiles.
type iamService struct {
	mu      sync.Mutex
	account string // the emulated account id, for ARNs

	// profileDelay emulates IAM's eventual consistency: a new instance
	// profile is reported as not yet visible by InstanceProfileVisible
	// (which other services, such as EC2, consult) for this long after it
	// was created.
	profileDelay time.Duration
	// now is the clock; tests may replace it.
	now func() time.Time

	roles    map[string]*iamRole            // by lower-cased name
	profiles map[string]*iamInstanceProfile // by lower-cased name
}

type iamRole struct {
	name, path, id, description string
	assumeRolePolicy            string
	maxSessionDuration          int
	created                     time.Time
	tags                        []iamTag
	policies                    map[string]*iamInlinePolicy // by lower-cased name
}

type iamInlinePolicy struct {
	name, document string
}

type iamInstanceProfile struct {
	name, path, id string
	created        time.Time
	role           string // lower-cased role name, or ""
	tags           []iamTag
}

type iamTag struct {
	Key   string `xml:"Key"`
	Value string `xml:"Value"`
}

// newIAM returns an IAM emulator for the given account.
func newIAM(account string) *iamService {
	return &iamService{
		account:  account,
		now:      time.Now,
		roles:    map[string]*iamRole{},
		profiles: map[string]*iamInstanceProfile{},
	}
}

// SetInstanceProfileDelay sets how long new instance profiles stay invisible
// to InstanceProfileVisible.
func (s *iamService) SetInstanceProfileDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.profileDelay = d
}

// InstanceProfileVisible reports whether the named instance profile exists
// and has "propagated", i.e. was created at least profileDelay ago. EC2
// answers RunInstances with "InvalidParameterValue: Invalid IAM Instance
// Profile name" while this is false.
func (s *iamService) InstanceProfileVisible(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.profiles[strings.ToLower(name)]
	if !ok {
		return false
	}
	return !s.now().Before(p.created.Add(s.profileDelay))
}

// profileRole returns the name of the role in the named instance profile
// and the profile's id; ok is false if the profile does not exist or has
// no role. The instance metadata service uses it to hand out credentials.
func (s *iamService) profileRole(name string) (role, profileID string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.profiles[strings.ToLower(name)]
	if p == nil || p.role == "" || s.roles[p.role] == nil {
		return "", "", false
	}
	return s.roles[p.role].name, p.id, true
}

// iamError is an IAM error response.
type iamError struct {
	status        int
	code, message string
}

func (e *iamError) Error() string { return e.code + ": " + e.message }

func iamErr(status int, code, format string, args ...any) *iamError {
	return &iamError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func iamNoSuchEntity(format string, args ...any) *iamError {
	return iamErr(http.StatusNotFound, "NoSuchEntity", format, args...)
}

func iamValidation(format string, args ...any) *iamError {
	return iamErr(http.StatusBadRequest, "ValidationError", format, args...)
}

type iamErrorResponse struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

type iamEnvelope struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	Result    *iamResult
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

type iamMembers[T any] struct {
	Member []T `xml:"member"`
}

// iamResult is the <OperationResult> element; every operation fills the
// fields it returns.
type iamResult struct {
	XMLName          xml.Name
	Role             *iamRoleXML                `xml:"Role,omitempty"`
	Roles            *iamMembers[iamRoleXML]    `xml:"Roles,omitempty"`
	InstanceProfile  *iamProfileXML             `xml:"InstanceProfile,omitempty"`
	InstanceProfiles *iamMembers[iamProfileXML] `xml:"InstanceProfiles,omitempty"`
	Tags             *iamMembers[iamTag]        `xml:"Tags,omitempty"`
	PolicyNames      *iamMembers[string]        `xml:"PolicyNames,omitempty"`
	RoleName         string                     `xml:"RoleName,omitempty"`
	PolicyName       string                     `xml:"PolicyName,omitempty"`
	PolicyDocument   string                     `xml:"PolicyDocument,omitempty"`
	IsTruncated      *bool                      `xml:"IsTruncated,omitempty"`
	Marker           string                     `xml:"Marker,omitempty"`
}

type iamRoleXML struct {
	Path                     string              `xml:"Path"`
	RoleName                 string              `xml:"RoleName"`
	RoleID                   string              `xml:"RoleId"`
	Arn                      string              `xml:"Arn"`
	CreateDate               string              `xml:"CreateDate"`
	AssumeRolePolicyDocument string              `xml:"AssumeRolePolicyDocument,omitempty"`
	Description              string              `xml:"Description,omitempty"`
	MaxSessionDuration       int                 `xml:"MaxSessionDuration,omitempty"`
	Tags                     *iamMembers[iamTag] `xml:"Tags,omitempty"`
}

type iamProfileXML struct {
	Path                string                 `xml:"Path"`
	InstanceProfileName string                 `xml:"InstanceProfileName"`
	InstanceProfileID   string                 `xml:"InstanceProfileId"`
	Arn                 string                 `xml:"Arn"`
	CreateDate          string                 `xml:"CreateDate"`
	Roles               iamMembers[iamRoleXML] `xml:"Roles"`
	Tags                *iamMembers[iamTag]    `xml:"Tags,omitempty"`
}

// iamEncodeDocument percent-encodes a policy document the way IAM returns
// them (RFC 3986, spaces as %20).
func iamEncodeDocument(doc string) string {
	return strings.ReplaceAll(url.QueryEscape(doc), "+", "%20")
}

func iamTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (s *iamService) roleXML(r *iamRole, withTags bool) iamRoleXML {
	x := iamRoleXML{
		Path:                     r.path,
		RoleName:                 r.name,
		RoleID:                   r.id,
		Arn:                      "arn:aws:iam::" + s.account + ":role" + r.path + r.name,
		CreateDate:               iamTime(r.created),
		AssumeRolePolicyDocument: iamEncodeDocument(r.assumeRolePolicy),
		Description:              r.description,
		MaxSessionDuration:       r.maxSessionDuration,
	}
	if withTags && len(r.tags) > 0 {
		x.Tags = &iamMembers[iamTag]{Member: slices.Clone(r.tags)}
	}
	return x
}

func (s *iamService) profileXML(p *iamInstanceProfile) iamProfileXML {
	x := iamProfileXML{
		Path:                p.path,
		InstanceProfileName: p.name,
		InstanceProfileID:   p.id,
		Arn:                 "arn:aws:iam::" + s.account + ":instance-profile" + p.path + p.name,
		CreateDate:          iamTime(p.created),
	}
	if r, ok := s.roles[p.role]; ok && p.role != "" {
		x.Roles.Member = []iamRoleXML{s.roleXML(r, false)}
	}
	if len(p.tags) > 0 {
		x.Tags = &iamMembers[iamTag]{Member: slices.Clone(p.tags)}
	}
	return x
}

func (s *iamService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("X-Amzn-Requestid", reqID)
	if err := r.ParseForm(); err != nil {
		s.writeError(w, reqID, iamErr(http.StatusBadRequest, "MalformedQueryString", "%v", err))
		return
	}
	action := r.Form.Get("Action")
	if v := r.Form.Get("Version"); v != "" && v != "2010-05-08" {
		s.writeError(w, reqID, iamErr(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version %s", action, v))
		return
	}
	handler, ok := iamActions[action]
	if !ok {
		s.writeError(w, reqID, iamErr(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version 2010-05-08", action))
		return
	}
	s.mu.Lock()
	res, ierr := handler(s, r.Form)
	s.mu.Unlock()
	if ierr != nil {
		s.writeError(w, reqID, ierr)
		return
	}
	if res != nil {
		res.XMLName = xml.Name{Local: action + "Result"}
	}
	writeXMLValue(w, http.StatusOK, iamEnvelope{
		XMLName:   xml.Name{Local: action + "Response"},
		Xmlns:     iamNamespace,
		Result:    res,
		RequestID: reqID,
	})
}

func (s *iamService) writeError(w http.ResponseWriter, reqID string, e *iamError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	writeXMLValue(w, e.status, iamErrorResponse{
		Xmlns: iamNamespace, Type: typ, Code: e.code, Message: e.message, RequestID: reqID,
	})
}

type iamAction func(s *iamService, f url.Values) (*iamResult, *iamError)

var iamActions map[string]iamAction

func init() {
	iamActions = map[string]iamAction{
		"CreateRole":                    (*iamService).createRole,
		"GetRole":                       (*iamService).getRole,
		"DeleteRole":                    (*iamService).deleteRole,
		"ListRoles":                     (*iamService).listRoles,
		"TagRole":                       (*iamService).tagRole,
		"UntagRole":                     (*iamService).untagRole,
		"ListRoleTags":                  (*iamService).listRoleTags,
		"PutRolePolicy":                 (*iamService).putRolePolicy,
		"GetRolePolicy":                 (*iamService).getRolePolicy,
		"DeleteRolePolicy":              (*iamService).deleteRolePolicy,
		"ListRolePolicies":              (*iamService).listRolePolicies,
		"CreateInstanceProfile":         (*iamService).createInstanceProfile,
		"GetInstanceProfile":            (*iamService).getInstanceProfile,
		"DeleteInstanceProfile":         (*iamService).deleteInstanceProfile,
		"AddRoleToInstanceProfile":      (*iamService).addRoleToInstanceProfile,
		"RemoveRoleFromInstanceProfile": (*iamService).removeRoleFromInstanceProfile,
		"ListInstanceProfiles":          (*iamService).listInstanceProfiles,
		"ListInstanceProfilesForRole":   (*iamService).listInstanceProfilesForRole,
	}
}

var iamNameRE = regexp.MustCompile(`^[\w+=,.@-]+$`)

func iamName(f url.Values, param string, max int) (string, *iamError) {
	v := f.Get(param)
	if v == "" {
		return "", iamValidation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", iamLowerFirst(param))
	}
	if len(v) > max || !iamNameRE.MatchString(v) {
		return "", iamValidation("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length less than or equal to %d", v, iamLowerFirst(param), max)
	}
	return v, nil
}

func iamLowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func iamPath(f url.Values, param string) (string, *iamError) {
	p := f.Get(param)
	if p == "" {
		return "/", nil
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || len(p) > 512 {
		return "", iamValidation("The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters.")
	}
	return p, nil
}

func iamPolicyDocument(doc string) *iamError {
	if doc == "" {
		return iamValidation("1 validation error detected: Value null at 'policyDocument' failed to satisfy constraint: Member must not be null")
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return iamErr(http.StatusBadRequest, "MalformedPolicyDocument", "Syntax errors in policy.")
	}
	return nil
}

func iamParseTags(f url.Values) ([]iamTag, *iamError) {
	var tags []iamTag
	seen := map[string]bool{}
	for _, t := range (query{f}).tags("Tags") {
		k := t.key
		if k == "" {
			return nil, iamValidation("1 validation error detected: Value null at 'tags.member.key' failed to satisfy constraint: Member must not be null")
		}
		if seen[strings.ToLower(k)] {
			return nil, iamErr(http.StatusBadRequest, "InvalidInput", "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		seen[strings.ToLower(k)] = true
		tags = append(tags, iamTag{Key: k, Value: t.value})
	}
	if len(tags) > 50 {
		return nil, iamErr(http.StatusConflict, "LimitExceeded", "The number of tags has reached the maximum limit.")
	}
	return tags, nil
}

// iamMergeTags adds or overwrites tags (keys compared case-insensitively).
func iamMergeTags(have, add []iamTag) ([]iamTag, *iamError) {
	out := slices.Clone(have)
	for _, t := range add {
		i := slices.IndexFunc(out, func(o iamTag) bool { return strings.EqualFold(o.Key, t.Key) })
		if i >= 0 {
			out[i] = t
		} else {
			out = append(out, t)
		}
	}
	if len(out) > 50 {
		return nil, iamErr(http.StatusConflict, "LimitExceeded", "The number of tags has reached the maximum limit.")
	}
	return out, nil
}

// iamPage applies Marker/MaxItems pagination to n sorted items.
func iamPage(f url.Values, n int) (start, end int, res *iamResult, err *iamError) {
	maxItems := 100
	if v := f.Get("MaxItems"); v != "" {
		m, perr := strconv.Atoi(v)
		if perr != nil || m < 1 || m > 1000 {
			return 0, 0, nil, iamValidation("Invalid value for MaxItems: %s", v)
		}
		maxItems = m
	}
	if v := f.Get("Marker"); v != "" {
		m, perr := strconv.Atoi(v)
		if perr != nil || m < 0 || m > n {
			return 0, 0, nil, iamValidation("Invalid value for Marker")
		}
		start = m
	}
	end = min(start+maxItems, n)
	truncated := end < n
	res = &iamResult{IsTruncated: &truncated}
	if truncated {
		res.Marker = strconv.Itoa(end)
	}
	return start, end, res, nil
}

func (s *iamService) role(f url.Values) (*iamRole, *iamError) {
	name, err := iamName(f, "RoleName", 64)
	if err != nil {
		return nil, err
	}
	r, ok := s.roles[strings.ToLower(name)]
	if !ok {
		return nil, iamNoSuchEntity("The role with name %s cannot be found.", name)
	}
	return r, nil
}

func (s *iamService) profile(f url.Values) (*iamInstanceProfile, *iamError) {
	name, err := iamName(f, "InstanceProfileName", 128)
	if err != nil {
		return nil, err
	}
	p, ok := s.profiles[strings.ToLower(name)]
	if !ok {
		return nil, iamNoSuchEntity("Instance Profile %s cannot be found.", name)
	}
	return p, nil
}

func (s *iamService) createRole(f url.Values) (*iamResult, *iamError) {
	name, err := iamName(f, "RoleName", 64)
	if err != nil {
		return nil, err
	}
	path, err := iamPath(f, "Path")
	if err != nil {
		return nil, err
	}
	doc := f.Get("AssumeRolePolicyDocument")
	if err := iamPolicyDocument(doc); err != nil {
		return nil, err
	}
	tags, err := iamParseTags(f)
	if err != nil {
		return nil, err
	}
	maxSession := 3600
	if v := f.Get("MaxSessionDuration"); v != "" {
		m, perr := strconv.Atoi(v)
		if perr != nil || m < 3600 || m > 43200 {
			return nil, iamValidation("The requested MaxSessionDuration %s is invalid.", v)
		}
		maxSession = m
	}
	if _, ok := s.roles[strings.ToLower(name)]; ok {
		return nil, iamErr(http.StatusConflict, "EntityAlreadyExists", "Role with name %s already exists.", name)
	}
	r := &iamRole{
		name: name, path: path, id: newUpperID("AROA"),
		description:        f.Get("Description"),
		assumeRolePolicy:   doc,
		maxSessionDuration: maxSession,
		created:            s.now(),
		tags:               tags,
		policies:           map[string]*iamInlinePolicy{},
	}
	s.roles[strings.ToLower(name)] = r
	x := s.roleXML(r, true)
	return &iamResult{Role: &x}, nil
}

func (s *iamService) getRole(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	x := s.roleXML(r, true)
	return &iamResult{Role: &x}, nil
}

func (s *iamService) deleteRole(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	if len(r.policies) > 0 {
		return nil, iamErr(http.StatusConflict, "DeleteConflict", "Cannot delete entity, must delete policies first.")
	}
	for _, p := range s.profiles {
		if p.role == strings.ToLower(r.name) {
			return nil, iamErr(http.StatusConflict, "DeleteConflict", "Cannot delete entity, must remove roles from instance profile first.")
		}
	}
	delete(s.roles, strings.ToLower(r.name))
	return nil, nil
}

func (s *iamService) listRoles(f url.Values) (*iamResult, *iamError) {
	prefix := f.Get("PathPrefix")
	var roles []*iamRole
	for _, r := range s.roles {
		if strings.HasPrefix(r.path, prefix) {
			roles = append(roles, r)
		}
	}
	slices.SortFunc(roles, func(a, b *iamRole) int { return strings.Compare(strings.ToLower(a.name), strings.ToLower(b.name)) })
	start, end, res, err := iamPage(f, len(roles))
	if err != nil {
		return nil, err
	}
	res.Roles = &iamMembers[iamRoleXML]{}
	for _, r := range roles[start:end] {
		res.Roles.Member = append(res.Roles.Member, s.roleXML(r, false))
	}
	return res, nil
}

func (s *iamService) tagRole(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	tags, err := iamParseTags(f)
	if err != nil {
		return nil, err
	}
	merged, err := iamMergeTags(r.tags, tags)
	if err != nil {
		return nil, err
	}
	r.tags = merged
	return nil, nil
}

func (s *iamService) untagRole(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	for _, k := range (query{f}).list("TagKeys") {
		r.tags = slices.DeleteFunc(r.tags, func(t iamTag) bool { return strings.EqualFold(t.Key, k) })
	}
	return nil, nil
}

func (s *iamService) listRoleTags(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	start, end, res, err := iamPage(f, len(r.tags))
	if err != nil {
		return nil, err
	}
	res.Tags = &iamMembers[iamTag]{Member: slices.Clone(r.tags[start:end])}
	return res, nil
}

func (s *iamService) putRolePolicy(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	name, err := iamName(f, "PolicyName", 128)
	if err != nil {
		return nil, err
	}
	doc := f.Get("PolicyDocument")
	if err := iamPolicyDocument(doc); err != nil {
		return nil, err
	}
	r.policies[strings.ToLower(name)] = &iamInlinePolicy{name: name, document: doc}
	return nil, nil
}

func (s *iamService) inlinePolicy(f url.Values) (*iamRole, *iamInlinePolicy, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, nil, err
	}
	name, err := iamName(f, "PolicyName", 128)
	if err != nil {
		return nil, nil, err
	}
	p, ok := r.policies[strings.ToLower(name)]
	if !ok {
		return nil, nil, iamNoSuchEntity("The role policy with name %s cannot be found.", name)
	}
	return r, p, nil
}

func (s *iamService) getRolePolicy(f url.Values) (*iamResult, *iamError) {
	r, p, err := s.inlinePolicy(f)
	if err != nil {
		return nil, err
	}
	return &iamResult{RoleName: r.name, PolicyName: p.name, PolicyDocument: iamEncodeDocument(p.document)}, nil
}

func (s *iamService) deleteRolePolicy(f url.Values) (*iamResult, *iamError) {
	r, p, err := s.inlinePolicy(f)
	if err != nil {
		return nil, err
	}
	delete(r.policies, strings.ToLower(p.name))
	return nil, nil
}

func (s *iamService) listRolePolicies(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range r.policies {
		names = append(names, p.name)
	}
	slices.Sort(names)
	start, end, res, err := iamPage(f, len(names))
	if err != nil {
		return nil, err
	}
	res.PolicyNames = &iamMembers[string]{Member: names[start:end]}
	return res, nil
}

func (s *iamService) createInstanceProfile(f url.Values) (*iamResult, *iamError) {
	name, err := iamName(f, "InstanceProfileName", 128)
	if err != nil {
		return nil, err
	}
	path, err := iamPath(f, "Path")
	if err != nil {
		return nil, err
	}
	tags, err := iamParseTags(f)
	if err != nil {
		return nil, err
	}
	if _, ok := s.profiles[strings.ToLower(name)]; ok {
		return nil, iamErr(http.StatusConflict, "EntityAlreadyExists", "Instance Profile %s already exists.", name)
	}
	p := &iamInstanceProfile{name: name, path: path, id: newUpperID("AIPA"), created: s.now(), tags: tags}
	s.profiles[strings.ToLower(name)] = p
	x := s.profileXML(p)
	return &iamResult{InstanceProfile: &x}, nil
}

func (s *iamService) getInstanceProfile(f url.Values) (*iamResult, *iamError) {
	p, err := s.profile(f)
	if err != nil {
		return nil, err
	}
	x := s.profileXML(p)
	return &iamResult{InstanceProfile: &x}, nil
}

func (s *iamService) deleteInstanceProfile(f url.Values) (*iamResult, *iamError) {
	p, err := s.profile(f)
	if err != nil {
		return nil, err
	}
	if p.role != "" {
		return nil, iamErr(http.StatusConflict, "DeleteConflict", "Cannot delete entity, must remove roles from instance profile first.")
	}
	delete(s.profiles, strings.ToLower(p.name))
	return nil, nil
}

func (s *iamService) addRoleToInstanceProfile(f url.Values) (*iamResult, *iamError) {
	p, err := s.profile(f)
	if err != nil {
		return nil, err
	}
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	if p.role != "" {
		return nil, iamErr(http.StatusConflict, "LimitExceeded", "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1")
	}
	p.role = strings.ToLower(r.name)
	return nil, nil
}

func (s *iamService) removeRoleFromInstanceProfile(f url.Values) (*iamResult, *iamError) {
	p, err := s.profile(f)
	if err != nil {
		return nil, err
	}
	name, err := iamName(f, "RoleName", 64)
	if err != nil {
		return nil, err
	}
	if p.role == "" || p.role != strings.ToLower(name) {
		return nil, iamNoSuchEntity("The role with name %s cannot be found.", name)
	}
	p.role = ""
	return nil, nil
}

func (s *iamService) profileList(f url.Values, keep func(*iamInstanceProfile) bool) (*iamResult, *iamError) {
	var ps []*iamInstanceProfile
	for _, p := range s.profiles {
		if keep(p) {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *iamInstanceProfile) int {
		return strings.Compare(strings.ToLower(a.name), strings.ToLower(b.name))
	})
	start, end, res, err := iamPage(f, len(ps))
	if err != nil {
		return nil, err
	}
	res.InstanceProfiles = &iamMembers[iamProfileXML]{}
	for _, p := range ps[start:end] {
		res.InstanceProfiles.Member = append(res.InstanceProfiles.Member, s.profileXML(p))
	}
	return res, nil
}

func (s *iamService) listInstanceProfiles(f url.Values) (*iamResult, *iamError) {
	prefix := f.Get("PathPrefix")
	return s.profileList(f, func(p *iamInstanceProfile) bool { return strings.HasPrefix(p.path, prefix) })
}

func (s *iamService) listInstanceProfilesForRole(f url.Values) (*iamResult, *iamError) {
	r, err := s.role(f)
	if err != nil {
		return nil, err
	}
	key := strings.ToLower(r.name)
	return s.profileList(f, func(p *iamInstanceProfile) bool { return p.role == key })
}
