package awsemu

import (
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ---- images

// image is a public AMI. The emulator knows a fixed catalogue of them so
// "flatcar-stable" can be resolved by owner and name, as on AWS.
type image struct {
	id, name, owner, alias, arch, desc string
	created                            time.Time
}

// FlatcarOwner is the AWS account that publishes Flatcar Container Linux
// AMIs; the emulator's seeded Flatcar images belong to it.
const FlatcarOwner = "075585003325"

// seedImages returns the emulator's AMI catalogue: a few Flatcar releases
// per channel and architecture, newest last, and one Amazon Linux image.
func seedImages() map[string]*image {
	out := map[string]*image{}
	add := func(im *image) { out[im.id] = im }
	base := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	for _, ch := range []struct{ channel, version string }{
		{"stable", "4230.2.1"}, {"stable", "4230.2.3"}, {"beta", "4284.1.0"}, {"alpha", "4328.0.0"},
	} {
		for _, arch := range []string{"x86_64", "arm64"} {
			suffix := "hvm"
			if arch == "arm64" {
				suffix = "arm64-hvm"
			}
			n++
			add(&image{id: fmt.Sprintf("ami-0f1a7ca4000%06d", n), owner: FlatcarOwner, arch: arch,
				name: "Flatcar-" + ch.channel + "-" + ch.version + "-" + suffix, created: base.Add(time.Duration(n) * 24 * time.Hour),
				desc: "Flatcar Container Linux " + ch.channel + " " + ch.version + " (" + arch + ")"})
		}
	}
	add(&image{id: "ami-0a2e2ac0000000001", owner: "137112412989", alias: "amazon", arch: "x86_64",
		name: "al2023-ami-2023.9.20260901.0-kernel-6.1-x86_64", created: base, desc: "Amazon Linux 2023 AMI"})
	return out
}

func (s *ec2State) renderImage(im *image) string {
	alias := xo("imageOwnerAlias", im.alias)
	return xt("imageId", im.id) + xt("imageLocation", im.owner+"/"+im.name) + xt("imageState", "available") +
		xt("imageOwnerId", im.owner) + alias + xt("creationDate", im.created.Format("2006-01-02T15:04:05.000Z")) +
		xb("isPublic", true) + xt("architecture", im.arch) + xt("imageType", "machine") + xt("name", im.name) +
		xt("description", im.desc) + xt("rootDeviceType", "ebs") + xt("rootDeviceName", "/dev/xvda") +
		xt("virtualizationType", "hvm") + xt("hypervisor", "xen") + xb("enaSupport", true) +
		xlist("blockDeviceMapping", "item", []string{xt("deviceName", "/dev/xvda") +
			x("ebs", xt("snapshotId", "snap-"+im.id[4:]), xi("volumeSize", 8), xb("deleteOnTermination", true), xt("volumeType", "gp3"))})
}

func (s *ec2State) describeImages(q query) (string, error) {
	owners := q.list("Owner")
	items, err := describe(s, q, "ImageId", s.images, func(im *image) string { return im.id },
		func(im *image) map[string][]string {
			return map[string][]string{"image-id": {im.id}, "name": {im.name}, "owner-id": {im.owner},
				"owner-alias": {im.alias}, "architecture": {im.arch}, "state": {"available"}, "is-public": {"true"},
				"virtualization-type": {"hvm"}, "root-device-type": {"ebs"}, "image-type": {"machine"}}
		},
		func(im *image) string {
			for _, o := range owners {
				if o == im.owner || o == im.alias || (o == "self" && im.owner == s.e.opts.AccountID) {
					return x("item", s.renderImage(im))
				}
			}
			if len(owners) > 0 {
				return ""
			}
			return x("item", s.renderImage(im))
		})
	if err != nil {
		return "", err
	}
	return x("imagesSet", items...), nil
}

var amiIDRE = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)

// checkImage refuses a malformed AMI id. Well-formed ids outside the
// catalogue are accepted, so tests may use any placeholder AMI.
func checkImage(id string) error {
	if !amiIDRE.MatchString(id) {
		return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\" with 8 or 17 hex digits)", id)
	}
	return nil
}

// ---- instance types

type instanceType struct {
	vcpus, memMiB int
	arch          string
}

// instanceTypes are the instance types the emulator accepts: common
// families in their usual sizes, plus m1.small, the default.
var instanceTypes = func() map[string]instanceType {
	out := map[string]instanceType{"m1.small": {1, 1740, "x86_64"}}
	// GiB of memory per vCPU by family class; burstable (t) types differ.
	families := map[string]int{
		"m5": 4, "m5d": 4, "m6i": 4, "m6g": 4, "m6gd": 4, "m7i": 4, "m7g": 4, "g4dn": 4,
		"c5": 2, "c6i": 2, "c6g": 2, "c7g": 2, "c7gn": 2, "r5": 8, "r6i": 8, "r6g": 8,
	}
	vcpus := map[string]int{"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
	for fam, ratio := range families {
		arch := "x86_64"
		if fam != "g4dn" && strings.Contains(fam[1:], "g") {
			arch = "arm64" // Graviton: the g after the generation digit
		}
		for size, n := range vcpus {
			out[fam+"."+size] = instanceType{n, n * ratio * 1024, arch}
		}
	}
	burst := map[string]int{"nano": 512, "micro": 1024, "small": 2048, "medium": 4096, "large": 8192, "xlarge": 16384, "2xlarge": 32768}
	for _, fam := range []string{"t2", "t3", "t3a", "t4g"} {
		arch := map[bool]string{true: "arm64", false: "x86_64"}[fam == "t4g"]
		for size, mem := range burst {
			n := 2
			if size == "xlarge" || size == "2xlarge" {
				n = 4 << (len(size) - len("xlarge"))
			}
			if fam == "t2" && mem <= 2048 {
				n = 1
			}
			out[fam+"."+size] = instanceType{n, mem, arch}
		}
	}
	return out
}()

func checkInstanceType(t string) error {
	if _, ok := instanceTypes[t]; !ok {
		return errf("InvalidParameterValue", "Invalid value '%s' for InstanceType: not an instance type awsemu knows (families t2, t3, t3a, t4g, m5, m5d, m6i, m6g, m6gd, m7i, m7g, c5, c6i, c6g, c7g, c7gn, r5, r6i, r6g, g4dn; see DescribeInstanceTypes)", t)
	}
	return nil
}

func (s *ec2State) describeInstanceTypes(q query) (string, error) {
	want := q.list("InstanceType")
	for _, t := range want {
		if err := checkInstanceType(t); err != nil {
			return "", err
		}
	}
	var items []string
	for _, name := range slices.Sorted(maps.Keys(instanceTypes)) {
		it := instanceTypes[name]
		attrs := map[string][]string{"instance-type": {name}, "processor-info.supported-architecture": {it.arch},
			"vcpu-info.default-vcpus": {strconv.Itoa(it.vcpus)}, "memory-info.size-in-mib": {strconv.Itoa(it.memMiB)},
			"current-generation": {strconv.FormatBool(name != "m1.small")}}
		if m, err := s.match(q, "", attrs); err != nil {
			return "", err
		} else if !m || !wanted(want, name) {
			continue
		}
		items = append(items, xt("instanceType", name)+xb("currentGeneration", name != "m1.small")+
			x("processorInfo", xtlist("supportedArchitectures", "item", []string{it.arch}))+
			x("vCpuInfo", xi("defaultVCpus", it.vcpus))+x("memoryInfo", xi("sizeInMiB", it.memMiB))+
			xt("hypervisor", "nitro"))
	}
	return xlist("instanceTypeSet", "item", items), nil
}

// ---- key pairs

type keyPair struct {
	id, name, typ, fingerprint, material string
	created                              time.Time
}

func (s *ec2State) importKeyPair(q query) (string, error) {
	name := q.get("KeyName")
	if name == "" {
		return "", errf("MissingParameter", "The request must contain the parameter KeyName")
	}
	for _, k := range s.keys {
		if k.name == name {
			return "", errf("InvalidKeyPair.Duplicate", "The keypair '%s' already exists.", name)
		}
	}
	mat, err := base64.StdEncoding.DecodeString(q.get("PublicKeyMaterial"))
	if err != nil {
		return "", errf("InvalidParameterValue", "Value for parameter PublicKeyMaterial is invalid: it must be base64-encoded (%v)", err)
	}
	f := strings.Fields(string(mat))
	typ := map[string]string{"ssh-rsa": "rsa", "ssh-ed25519": "ed25519"}[firstOr(f, "")]
	if typ == "" || len(f) < 2 {
		return "", errf("InvalidKey.Format", "Key is not in valid OpenSSH public key format: expected \"ssh-rsa AAAA...\" or \"ssh-ed25519 AAAA...\"")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", errf("InvalidKey.Format", "Key is not in valid OpenSSH public key format: %v", err)
	}
	sum := md5.Sum(blob)
	var fp []string
	for _, b := range sum {
		fp = append(fp, fmt.Sprintf("%02x", b))
	}
	k := &keyPair{id: newID("key"), name: name, typ: typ, fingerprint: strings.Join(fp, ":"), material: string(mat), created: time.Now()}
	s.keys[k.id] = k
	s.setTags(k.id, specTags(q, "key-pair"))
	return xt("keyFingerprint", k.fingerprint) + xt("keyName", k.name) + xt("keyPairId", k.id) + s.tagSet(k.id), nil
}

func firstOr(ss []string, def string) string {
	if len(ss) == 0 {
		return def
	}
	return ss[0]
}

// keyByName returns the key pair named name, or InvalidKeyPair.NotFound.
func (s *ec2State) keyByName(name string) (*keyPair, error) {
	for _, k := range s.keys {
		if k.name == name {
			return k, nil
		}
	}
	return nil, errf("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", name)
}

func (s *ec2State) describeKeyPairs(q query) (string, error) {
	names := q.list("KeyName")
	for _, n := range names {
		if _, err := s.keyByName(n); err != nil {
			return "", err
		}
	}
	withKey, _ := q.boolean("IncludePublicKey")
	items, err := describe(s, q, "KeyPairId", s.keys, func(k *keyPair) string { return k.id },
		func(k *keyPair) map[string][]string {
			return map[string][]string{"key-name": {k.name}, "key-pair-id": {k.id}, "fingerprint": {k.fingerprint}, "key-type": {k.typ}}
		},
		func(k *keyPair) string {
			if !wanted(names, k.name) {
				return ""
			}
			pub := ""
			if withKey {
				pub = xt("publicKey", k.material)
			}
			return x("item", xt("keyPairId", k.id), xt("keyFingerprint", k.fingerprint), xt("keyName", k.name),
				xt("keyType", k.typ), xtime("createTime", k.created), pub, s.tagSet(k.id))
		})
	if err != nil {
		return "", err
	}
	return x("keySet", items...), nil
}

func (s *ec2State) deleteKeyPair(q query) (string, error) {
	for id, k := range s.keys {
		if k.id == q.get("KeyPairId") || k.name == q.get("KeyName") {
			delete(s.keys, id)
			delete(s.tags, id)
		}
	}
	return ok() // AWS: deleting a missing key pair succeeds
}
