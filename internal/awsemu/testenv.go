package awsemu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// DefaultRegion is the region an Emulator emulates unless Options.Region
// says otherwise.
const DefaultRegion = "us-west-2"

// Static test credentials: the emulator checks no signature, so any do.
const (
	TestAccessKeyID     = "AKIDEXAMPLE"
	TestSecretAccessKey = "secret"
)

// TestConfig is an SDK configuration pointed at the emulator at url, in
// DefaultRegion, with the static test credentials. S3 clients made from it
// need path-style addressing (s3.Options.UsePathStyle).
func TestConfig(url string) aws.Config {
	return aws.Config{
		Region:       DefaultRegion,
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(TestAccessKeyID, TestSecretAccessKey, ""),
	}
}

// SetTestEnv points the SDK's default chain (config.LoadDefaultConfig, and
// so the code under test) at the static test credentials, and away from
// this host's AWS files, profile, endpoint and instance metadata, for the
// rest of the test.
func SetTestEnv(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", TestAccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", TestSecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// SetTestProfiles writes a shared config file and a shared credentials
// file with the given contents (INI, as in ~/.aws) and points the SDK's
// default chain at them instead of static credentials from the
// environment, for the rest of the test.
func SetTestProfiles(t testing.TB, config, credentials string) {
	t.Helper()
	dir := t.TempDir()
	configFile, credsFile := filepath.Join(dir, "config"), filepath.Join(dir, "credentials")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credsFile, []byte(credentials), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", configFile)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", credsFile)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
}
