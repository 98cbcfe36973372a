package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
)

// Invoker is the part of the go-sdk client GRPC uses.
type Invoker interface {
	InvokeMethodWithContent(ctx context.Context, appID, methodName, verb string, content *dapr.DataContent) ([]byte, error)
	InvokeMethod(ctx context.Context, appID, methodName, verb string) ([]byte, error)
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// GRPC invokes through the sidecar's gRPC API with the go-sdk: Dapr's
// gRPC-to-HTTP path, deprecated by Dapr, which retries every non-2xx answer
// whatever the resiliency policy's matching says and passes at most 64
// characters of an app's error body. Client must come from daprc.Connect,
// whose interceptors add the API token and the trace context without
// dropping other metadata (such as Idempotency-Key).
type GRPC struct{ Client Invoker }

// Call implements api.Caller.
func (g GRPC) Call(ctx context.Context, r api.Request) ([]byte, error) {
	if r.IdempotencyKey != "" { // Dapr passes gRPC metadata to the app as HTTP headers
		ctx = metadata.AppendToOutgoingContext(ctx, strings.ToLower(contract.IdempotencyHeader), r.IdempotencyKey)
	}
	var out []byte
	var err error
	if r.Body != nil {
		out, err = g.Client.InvokeMethodWithContent(ctx, r.App, r.Method, r.Verb, &dapr.DataContent{Data: r.Body, ContentType: "application/json"})
	} else {
		out, err = g.Client.InvokeMethod(ctx, r.App, r.Method, r.Verb)
	}
	if err != nil {
		return nil, invokeError(r.App, r.Method, err, ctx.Err())
	}
	return out, nil
}

// Ping implements Sidecar.
func (g GRPC) Ping(ctx context.Context) error {
	_, err := g.Client.GetMetadata(ctx)
	return err
}

// invokeError maps a gRPC service invocation error to an apperr: the app's
// HTTP status (and its {"detail"}, when Dapr passed it whole) when the app
// answered, UNAVAILABLE when the app or the sidecar could not be reached.
func invokeError(app, method string, err, ctxErr error) error {
	cause := fmt.Errorf("invoke %s/%s: %w", app, method, err)
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return apperr.Wrap(apperr.Timeout, cause, "%s did not answer in time", app)
	}
	st, ok := status.FromError(err)
	if !ok {
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetMetadata()["http.code"] == "" {
			continue
		}
		code, _ := strconv.Atoi(info.GetMetadata()["http.code"])
		return api.AppError(app, code, []byte(info.GetMetadata()["http.error_message"]), cause)
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	case codes.NotFound:
		return apperr.Wrap(apperr.NotFound, cause, "not found")
	case codes.PermissionDenied:
		return apperr.Wrap(apperr.Forbidden, cause, "forbidden")
	case codes.Unauthenticated:
		return apperr.Wrap(apperr.Internal, cause, "internal error") // our own sidecar refused our token
	default:
		return apperr.Wrap(apperr.Unavailable, cause, "%s is unavailable", app)
	}
}
