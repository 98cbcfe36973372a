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
// have paused for SUMMARY_DEBOUNCE (the user's Dapr job: the first turn
// that waits schedules it, and while turns keep coming the job moves itself
// to the pause's end — store.Memory.Summarize), or at the SUMMARY_EVERY-th
// turn since the last one (Apply makes it then), whichever comes first.

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

// later schedules (or moves) the user's summary job; nil without a
// debounce (the summary at every turn).
func (s *srv) later(b *backends, user string) store.Later {
	if s.debounce <= 0 {
		return nil
	}
	return func(ctx context.Context, after time.Duration) error {
		due := after.Round(time.Millisecond).String()
		return b.jobs.ScheduleJob(ctx, &dapr.Job{Name: summaryJob(user), DueTime: &due, Overwrite: true, FailurePolicy: jobRetries()})
	}
}

// jobRetries is the summary job's failure policy: delivered again every 5 s
// for an hour while the memory service (or its model) cannot make the
// summary — Dapr's default gives up after three tries a second apart, and a
// memory service down longer than that would lose the summary its users'
// turns wait for.
func jobRetries() dapr.FailurePolicy {
	every, tries := 5*time.Second, uint32(720)
	return &dapr.JobFailurePolicyConstant{Interval: &every, MaxRetries: &tries}
}

// summarizer asks the model for a user's summary.
func summarizer(b *backends) store.Summarizer {
	return func(ctx context.Context, p contract.Profile, recent []contract.Entry) (string, contract.Usage, error) {
		hist := make([]llm.Message, len(recent))
		for i, e := range recent {
			hist[i] = llm.Message{Role: e.Role, Content: e.Content}
		}
		text, u, err := b.model.Complete(ctx, llm.SummaryInstructions(p.Name, p.UserSummary), hist, llm.SummaryRequest)
		return text, contract.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, LLMCalls: 1}, err
	}
}

// onSummaryJob is a user's job: the summary the user's turns wait for,
// and its MemoryUpdated. An error makes Dapr deliver the job again.
func (s *srv) onSummaryJob(w http.ResponseWriter, r *http.Request) error {
	b := s.backends.Load()
	ctx := r.Context()
	user, ok := userOfJob(chi.URLParam(r, api.ParamJobName))
	if !ok { // answered, so that the scheduler does not deliver it again
		logging.From(ctx, s.log).Warn("a job that is not a user's summary job was ignored", "job", chi.URLParam(r, api.ParamJobName))
		httpx.JSON(w, http.StatusOK, map[string]bool{"summarized": false})
		return nil
	}
	summary, session, done, err := b.mem.Summarize(ctx, user, summarizer(b), s.later(b, user))
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
