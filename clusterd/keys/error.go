package keys

import "fmt"

// etcd v2 error codes, as etcdctl v2 and its scripts expect them.
const (
	ErrKeyNotFound  = 100
	ErrNotFile      = 102
	ErrNotDir       = 104
	ErrNodeExist    = 105
	ErrRootReadOnly = 107
	ErrDirNotEmpty  = 108
)

var messages = map[int]string{
	ErrKeyNotFound:  "Key not found",
	ErrNotFile:      "Not a file",
	ErrNotDir:       "Not a directory",
	ErrNodeExist:    "Key already exists",
	ErrRootReadOnly: "Root is read only",
	ErrDirNotEmpty:  "Directory not empty",
}

// Error is an etcd v2 error: a code with its standard message, the key it
// concerns, and the store's revision when it happened.
type Error struct {
	Code    int
	Message string
	Cause   string // the key concerned
	Index   int64  // the etcd revision at the time
}

func newError(code int, cause string, index int64) *Error {
	return &Error{Code: code, Message: messages[code], Cause: cause, Index: index}
}

// Error formats e as etcd v2 did, e.g. "100: Key not found (/foo/bar) [12]".
func (e *Error) Error() string {
	return fmt.Sprintf("%d: %s (%s) [%d]", e.Code, e.Message, e.Cause, e.Index)
}
