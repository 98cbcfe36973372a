package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/go-chi/chi/v5"

	"github.com/daca-go/daca/internal/api"
	"github.com/daca-go/daca/internal/apperr"
	"github.com/daca-go/daca/internal/contract"
	"github.com/daca-go/daca/internal/httpx"
	"github.com/daca-go/daca/internal/llm"
	"github.com/daca-go/daca/internal/logging"
	"github.com/daca-go/daca/services/memory/store"
)

// Jobs schedules Dapr jobs (the sidecar's scheduler: durable, so a
// summary that waits survives any restart).
type Jobs interface {
	ScheduleJob(ctx context.Context, job *dapr.Job) error
}

// A user's summary is made when it will be read: once the user's turns
// have paused for SUMMARY_DEBOUNCE (each turn moves the user's job
// forward: Overwrite), or at the SUMMARY_EVERY-th turn since the last one
// (Apply makes it then), whichever comes first.

const jobPrefix = "summary-"

// summaryJob is the name of user's job (the id hex-encoded: job names
// take fewer characters than ids).
func summaryJob(user string) string { return jobPrefix + hex.EncodeToString([]byte(user)) }

func userOfJob(name string) (string, bool) {
	h, ok := strings.CutPrefix(name, jobPrefix)
	if !ok {
		return "", false
	}
	b, err := hex.DecodeString(h)
	if err != nil || !contract.ValidID(string(b)) {
		return "", false
	}
	return string(b), true
}

// later schedules (or moves forward) the user's summary job.
func (s *srv) later(ctx context.Context, b *backends, user string) error {
	due := s.debounce.String()
	if err := b.jobs.ScheduleJob(ctx, &dapr.Job{Name: summaryJob(user), DueTime: &due, Overwrite: true}); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the scheduler is unavailable")
	}
	return nil
}

// summarizer asks the model for a user's summary.
func summarizer(b *backends) store.Summarizer {
	return func(ctx context.Context, p contract.Profile, recent []contract.Entry) (string, error) {
		hist := make([]llm.Message, len(recent))
		for i, e := range recent {
			hist[i] = llm.Message{Role: e.Role, Content: e.Content}
		}
		return b.model.Complete(ctx, llm.SummaryInstructions(p.Name, p.UserSummary), hist, llm.SummaryRequest)
	}
}

// onSummaryJob is a user's job: the summary the user's turns wait for,
// and its MemoryUpdated. An error makes Dapr deliver the job again.
func (s *srv) onSummaryJob(w http.ResponseWriter, r *http.Request) error {
	b := s.backends.Load()
	user, ok := userOfJob(chi.URLParam(r, api.ParamJobName))
	if !ok {
		return apperr.New(apperr.Invalid, "not a summary job")
	}
	ctx := r.Context()
	summary, session, done, err := b.mem.Summarize(ctx, user, summarizer(b))
	if err != nil {
		return err
	}
	if done {
		s.announce(ctx, b, contract.MemoryUpdated{UserID: user, SessionID: session, UserSummary: summary},
			fmt.Sprintf("memory-%s-%d", summaryJob(user), time.Now().UnixNano()))
	}
	httpx.JSON(w, http.StatusOK, map[string]bool{"summarized": done})
	return nil
}

// announce publishes MemoryUpdated; a failure loses only the live
// notification (the memory itself is updated).
func (s *srv) announce(ctx context.Context, b *backends, up contract.MemoryUpdated, id string) {
	if err := b.pub.PublishEvent(ctx, contract.PubSub, contract.TopicMemoryUpdates, up,
		dapr.PublishEventWithMetadata(map[string]string{contract.CloudEventIDMetadata: id})); err != nil {
		logging.From(ctx, s.log).Error("publishing MemoryUpdated failed", "err", err)
	}
}
