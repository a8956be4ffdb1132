package provision

import (
	"testing"

	"github.com/corral-dev/corral/providers/aws"
)

// SetAWSStackOptions tunes the aws provider's Stacks (shorter waits and
// backoff against the emulator) until the test ends.
func SetAWSStackOptions(t testing.TB, o aws.Options) {
	old := awsStackOptions
	awsStackOptions = o
	t.Cleanup(func() { awsStackOptions = old })
}
