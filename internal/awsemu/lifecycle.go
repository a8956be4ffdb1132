package awsemu

import (
	"encoding/base64"
	"maps"
	"strings"
	"sync"
)

// Instance describes an emulated EC2 instance to the lifecycle callbacks
// of Options, so an end-to-end test can boot each instance as a local node.
type Instance struct {
	ID           string
	ImageID      string
	InstanceType string
	PrivateIP    string
	SubnetID     string
	VpcID        string
	Zone         string // availability zone, e.g. us-west-2a
	// UserData is the user data as the instance sees it: base64-decoded.
	UserData       []byte
	Tags           map[string]string
	SecurityGroups []string
	// LaunchTemplateID and LaunchTemplateVersion name the launch template
	// version the instance was launched from, if any.
	LaunchTemplateID      string
	LaunchTemplateVersion int
	// IAMInstanceProfile is the ARN of the instance profile, or "".
	IAMInstanceProfile string
	KeyName            string
}

// hooks delivers instance lifecycle events to the Options callbacks, in
// the order they happened, on a goroutine of its own: callbacks run
// outside the state lock, may take long and may call the emulator's APIs.
type hooks struct {
	onLaunch, onTerminate func(Instance)

	mu      sync.Mutex
	queue   []hookEvent
	running bool // a delivery goroutine is draining queue
	idle    *sync.Cond
}

type hookEvent struct {
	launch bool
	in     Instance
}

// emit queues an event; it is called with the Emulator's state lock held,
// so events are queued in the order the state changed.
func (h *hooks) emit(launch bool, in Instance) {
	if (launch && h.onLaunch == nil) || (!launch && h.onTerminate == nil) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.idle == nil {
		h.idle = sync.NewCond(&h.mu)
	}
	h.queue = append(h.queue, hookEvent{launch, in})
	if !h.running {
		h.running = true
		go h.deliver()
	}
}

func (h *hooks) deliver() {
	h.mu.Lock()
	for len(h.queue) > 0 {
		ev := h.queue[0]
		h.queue = h.queue[1:]
		h.mu.Unlock()
		if ev.launch {
			h.onLaunch(ev.in)
		} else {
			h.onTerminate(ev.in)
		}
		h.mu.Lock()
	}
	h.running = false
	h.idle.Broadcast()
	h.mu.Unlock()
}

// wait blocks until every queued event has been delivered.
func (h *hooks) wait() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.running {
		h.idle.Wait()
	}
}

// WaitHooks blocks until the OnLaunch and OnTerminate callbacks of every
// lifecycle event so far have returned. Close waits for them too.
func (e *Emulator) WaitHooks() { e.hooks.wait() }

// snapshot returns the public view of in. The caller holds the state lock.
func (s *ec2State) snapshot(in *instance) Instance {
	ud, err := base64.StdEncoding.DecodeString(in.userData)
	if err != nil {
		ud = []byte(in.userData) // not base64: RunInstances accepted it as given
	}
	return Instance{ID: in.id, ImageID: in.imageID, InstanceType: in.itype, PrivateIP: in.ip, SubnetID: in.subnetID,
		VpcID: in.vpcID, Zone: in.az, UserData: ud, Tags: maps.Clone(s.tags[in.id]), SecurityGroups: in.groups,
		LaunchTemplateID: in.ltID, LaunchTemplateVersion: in.ltVersion, IAMInstanceProfile: in.iamProfile, KeyName: in.keyName}
}

// Instance returns the current view of an emulated instance; ok is false
// if there is no such instance.
func (e *Emulator) Instance(id string) (in Instance, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := e.ec2.instances[id]
	if i == nil {
		return Instance{}, false
	}
	return e.ec2.snapshot(i), true
}

// InstanceState returns the EC2 state name of an instance (pending,
// running, shutting-down, terminated), or "" if there is no such instance.
func (e *Emulator) InstanceState(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ec2.refresh()
	if i := e.ec2.instances[id]; i != nil {
		return i.state
	}
	return ""
}

// profileName returns the instance profile name of an instance profile ARN
// (arn:aws:iam::ACCOUNT:instance-profile/PATH/NAME).
func profileName(arn string) string {
	return arn[strings.LastIndexByte(arn, '/')+1:]
}
