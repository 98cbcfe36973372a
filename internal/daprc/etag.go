package daprc

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsETagMismatch reports whether the sidecar refused a state write for its
// ETag: gRPC Aborted (the ETag no longer matches, or a first-write on a
// key that exists). Read again and retry.
func IsETagMismatch(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == codes.Aborted
}
