package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// Error is a failed AWS call: the operation, the resource it was for, and
// AWS's error code and message, so that the message alone says what failed
// where: `create security group "demo-nodes": InvalidParameterValue: ...`.
type Error struct {
	Op       string // "create security group"
	Resource string // "demo-nodes"
	Code     string // AWS's error code; "" when the call never got an answer
	Err      error
}

// Error formats e as `<op> "<resource>": <code>: <message>`.
func (e *Error) Error() string {
	var ae smithy.APIError
	if errors.As(e.Err, &ae) {
		return fmt.Sprintf("%s %q: %s: %s", e.Op, e.Resource, ae.ErrorCode(), ae.ErrorMessage())
	}
	return fmt.Sprintf("%s %q: %v", e.Op, e.Resource, e.Err)
}

// Unwrap returns the SDK's error, for errors.As with smithy.APIError.
func (e *Error) Unwrap() error { return e.Err }

// wrap names op and resource in err; nil stays nil.
func wrap(op, resource string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Op: op, Resource: resource, Err: err}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ae.ErrorCode()
	}
	return e
}

// code returns AWS's error code of err, or "".
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isCode reports whether err is an AWS error with one of codes.
func isCode(err error, codes ...string) bool {
	c := code(err)
	return c != "" && slices.Contains(codes, c)
}

// profileNotVisible reports whether err is EC2 or Auto Scaling saying the
// instance profile does not exist, which right after its creation means
// IAM has not propagated it yet.
func profileNotVisible(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	msg := strings.ToLower(ae.ErrorMessage())
	switch ae.ErrorCode() {
	case "InvalidParameterValue", "InvalidParameterCombination":
		return strings.Contains(msg, "instance profile") || strings.Contains(msg, "iaminstanceprofile")
	case "ValidationError":
		return strings.Contains(msg, "invalid iaminstanceprofile")
	}
	return false
}

// retryWhile calls fn until it succeeds, fails with an error transient does
// not accept, or bound has passed, backing off from 200 ms to 5 s between
// calls. It is for AWS's eventual consistency (a new instance profile, an
// ENI still detaching), which the SDK's retryer does not know about.
func retryWhile(ctx context.Context, bound time.Duration, transient func(error) bool, fn func() error) error {
	deadline := time.Now().Add(bound)
	delay := 200 * time.Millisecond
	for {
		err := fn()
		if err == nil || !transient(err) || time.Now().Add(delay).After(deadline) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}
