package awsemu

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// imdsServer is the instance metadata service of one emulated instance,
// IMDSv2 only: every read needs a token from PUT /latest/api/token.
type imdsServer struct {
	e  *Emulator
	id string

	mu     sync.Mutex
	tokens map[string]time.Time // token → expiry
}

// IMDS returns the instance metadata service (IMDSv2) of the instance
// instanceID as an http.Handler; serve it (httptest.NewServer, or a
// listener on 169.254.169.254 in a test's network namespace) and point the
// SDK's feature/ec2/imds client (Options.Endpoint) or Ignition at it.
//
// It answers PUT /latest/api/token and, with the token, GET of
// /latest/meta-data/{instance-id, ami-id, instance-type, local-ipv4,
// local-hostname, hostname, mac, placement/availability-zone,
// placement/availability-zone-id, placement/region, iam/info,
// iam/security-credentials/[ROLE]}, /latest/user-data (the decoded bytes)
// and /latest/dynamic/instance-identity/document. Credentials are
// temporary keys for the role of the instance's instance profile.
func (e *Emulator) IMDS(instanceID string) http.Handler {
	return &imdsServer{e: e, id: instanceID, tokens: map[string]time.Time{}}
}

const (
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

func (m *imdsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		m.issueToken(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !m.validToken(r.Header.Get(imdsTokenHeader)) {
		// IMDSv1 is disabled, as corral's launch templates require.
		http.Error(w, "Unauthorized: a valid IMDSv2 token is required", http.StatusUnauthorized)
		return
	}
	in, ok := m.e.Instance(m.id)
	if !ok || m.e.InstanceState(m.id) == "terminated" {
		http.NotFound(w, r)
		return
	}
	body, ctype, found := m.lookup(in, r.URL.Path)
	if !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (m *imdsServer) issueToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "Bad Request: "+imdsTTLHeader+" must be 1-21600 seconds", http.StatusBadRequest)
		return
	}
	tok := randHex(40)
	m.mu.Lock()
	m.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
	m.mu.Unlock()
	w.Header().Set(imdsTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(tok))
}

func (m *imdsServer) validToken(tok string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.tokens[tok]
	return ok && time.Now().Before(exp)
}

// lookup returns the document at path for instance in.
func (m *imdsServer) lookup(in Instance, path string) (body []byte, ctype string, ok bool) {
	const text, js = "text/plain", "application/json"
	region := m.e.opts.Region
	role, profileID, hasRole := "", "", false
	if in.IAMInstanceProfile != "" {
		role, profileID, hasRole = m.e.iam.profileRole(profileName(in.IAMInstanceProfile))
	}
	now := time.Now().UTC()
	switch path {
	case "/latest/user-data":
		if len(in.UserData) == 0 {
			return nil, "", false
		}
		return in.UserData, "application/octet-stream", true
	case "/latest/dynamic/instance-identity/document":
		return imdsJSON(map[string]any{"accountId": m.e.opts.AccountID, "architecture": "x86_64",
			"availabilityZone": in.Zone, "imageId": in.ImageID, "instanceId": in.ID, "instanceType": in.InstanceType,
			"pendingTime": now.Format(time.RFC3339), "privateIp": in.PrivateIP, "region": region, "version": "2017-09-30"}), js, true
	case "/latest/meta-data/iam/info":
		if !hasRole {
			return nil, "", false
		}
		return imdsJSON(map[string]any{"Code": "Success", "LastUpdated": now.Format(time.RFC3339),
			"InstanceProfileArn": in.IAMInstanceProfile, "InstanceProfileId": profileID}), js, true
	case "/latest/meta-data/iam/security-credentials", "/latest/meta-data/iam/security-credentials/":
		if !hasRole {
			return nil, "", false
		}
		return []byte(role), text, true
	case "/latest/meta-data/iam/security-credentials/" + role:
		if !hasRole {
			return nil, "", false
		}
		return imdsJSON(map[string]any{"Code": "Success", "LastUpdated": now.Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId": "ASIA" + strings.ToUpper(randHex(16)), "SecretAccessKey": randHex(40),
			"Token": "awsemu-session-" + randHex(32), "Expiration": now.Add(6 * time.Hour).Format(time.RFC3339)}), js, true
	}
	host := "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + "." + region + ".compute.internal"
	meta := map[string]string{
		"instance-id": in.ID, "ami-id": in.ImageID, "instance-type": in.InstanceType, "local-ipv4": in.PrivateIP,
		"local-hostname": host, "hostname": host, "mac": "02:00:" + in.ID[2:4] + ":" + in.ID[4:6] + ":" + in.ID[6:8] + ":" + in.ID[8:10],
		"placement/availability-zone": in.Zone, "placement/region": region,
		"placement/availability-zone-id": m.e.ec2.zoneID(in.Zone), // reads only the immutable region,
	}
	if path == "/latest/meta-data" || path == "/latest/meta-data/" {
		keys := []string{"ami-id", "hostname", "instance-id", "instance-type", "local-hostname", "local-ipv4", "mac", "placement/"}
		if hasRole {
			keys = append(keys, "iam/")
		}
		return []byte(strings.Join(keys, "\n")), text, true
	}
	v, ok := meta[strings.TrimPrefix(path, "/latest/meta-data/")]
	return []byte(v), text, ok
}

func imdsJSON(v any) []byte {
	b, _ := json.Marshal(v) // maps of strings always marshal
	return b
}
