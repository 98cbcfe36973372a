package httpx

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/logging"
)

// delivery is an event handler's answer other than SUCCESS.
type delivery struct {
	status string // contract.DeliveryRetry or contract.DeliveryDrop
	reason string
	err    error
}

func (d *delivery) Error() string {
	if d.err == nil {
		return d.reason
	}
	return d.reason + ": " + d.err.Error()
}

func (d *delivery) Unwrap() error { return d.err }

// Retry is an event handler's error that has Dapr deliver the event again
// later (a dependency is unavailable); err may be nil.
func Retry(reason string, err error) error {
	return &delivery{status: contract.DeliveryRetry, reason: reason, err: err}
}

// Drop is an event handler's error for an event that can never be applied:
// Dapr drops it (to the dead-letter topic when one is set); err may be nil.
func Drop(reason string, err error) error {
	return &delivery{status: contract.DeliveryDrop, reason: reason, err: err}
}

// EventFunc handles one delivered CloudEvent whose data was decoded into
// data. It returns nil when the event is applied (or was already), Retry or
// Drop otherwise; any other error drops the event.
type EventFunc[T any] func(ctx context.Context, ce contract.CloudEvent, data *T) error

// Events adapts h to Dapr's delivery protocol, for every app's pub/sub
// routes: it reads the body (at most contract.MaxEventBody) and the
// CloudEvent, adds its id and trace id to the request's logger, calls h and
// answers {"status": SUCCESS | RETRY | DROP} with 200, logging why an event
// is retried or dropped. count, when not nil, is called with the status.
func Events[T any](log *slog.Logger, count func(status string), h EventFunc[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var data T
		var ce contract.CloudEvent
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, contract.MaxEventBody))
		if err != nil {
			err = Drop("body unreadable or larger than 1 MiB", err)
		} else if ce, err = contract.DecodeCloudEvent(body, &data); err != nil {
			err = Drop("not a CloudEvent of this topic", err)
		}
		ctx := r.Context()
		if ce.ID != "" { // the logger is built only when a line is written
			attrs := []any{"cloudevent_id", ce.ID}
			if tid := TraceID(ce.Traceparent); tid != "" {
				attrs = append(attrs, "trace_id", tid)
			}
			ctx = logging.With(ctx, log, attrs...)
		}
		if err == nil {
			err = h(ctx, ce, &data)
		}
		status := contract.DeliverySuccess
		if err != nil {
			var d *delivery
			if !errors.As(err, &d) {
				d = &delivery{status: contract.DeliveryDrop, reason: "cannot be applied", err: err}
			}
			status = d.status
			msg := "event dropped"
			if status == contract.DeliveryRetry {
				msg = "event will be retried"
			}
			logging.From(ctx, log).Warn(msg, "path", r.URL.Path, "reason", d.reason, "err", d.err)
		}
		if count != nil {
			count(status)
		}
		JSON(w, http.StatusOK, map[string]string{"status": status})
	}
}
