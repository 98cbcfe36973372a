// Package trusted is the gateway's list of trusted documents: the GraphQL
// operations its own clients were built with, read from the manifests
// their build tools write — graphql-codegen's client preset
// (persistedDocuments: {"<hash>": "<document>"}) and Apollo's
// generate-persisted-query-manifest ({"format":
// "apollo-persisted-query-manifest", "operations": [{"id", "body"}]}) —
// and from the gateway's own chat page. With GRAPHQL_TRUSTED_DOCUMENTS
// (Mode) the gateway runs only these (require), or runs everything and
// logs what is not among them (log).
package trusted

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Mode is GRAPHQL_TRUSTED_DOCUMENTS.
type Mode string

const (
	Off     Mode = "off"     // every operation runs; APQ registers new ones
	Log     Mode = "log"     // every operation runs; one not trusted is logged
	Require Mode = "require" // only trusted documents run; APQ registers nothing
)

// ParseMode reads GRAPHQL_TRUSTED_DOCUMENTS.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.TrimSpace(s)); m {
	case Off, Log, Require:
		return m, nil
	case "":
		return Off, nil
	}
	return "", fmt.Errorf("GRAPHQL_TRUSTED_DOCUMENTS=%q: want off, log or require", s)
}

// Manifest is the trusted documents by id, and the hashes of their texts.
type Manifest struct {
	byID   map[string]string
	bodies map[string]bool // sha256 hex of each document's text
}

// Hash is a document's id as the manifests give it: the SHA-256 of its
// text, in hex.
func Hash(doc string) string {
	sum := sha256.Sum256([]byte(doc))
	return hex.EncodeToString(sum[:])
}

// New is a manifest of docs (ids by Hash).
func New(docs ...string) *Manifest {
	m := &Manifest{byID: map[string]string{}, bodies: map[string]bool{}}
	for _, d := range docs {
		m.add(Hash(d), d)
	}
	return m
}

// Add trusts doc (its id: Hash).
func (m *Manifest) Add(doc string) { m.add(Hash(doc), doc) }

func (m *Manifest) add(id, doc string) {
	m.byID[strings.ToLower(id)] = doc
	m.bodies[Hash(doc)] = true
}

// Len is how many documents the manifest holds.
func (m *Manifest) Len() int { return len(m.byID) }

// Load adds the manifest files at paths, in either format.
func (m *Manifest) Load(paths ...string) error {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("trusted documents: %w", err)
		}
		if err := m.Parse(b); err != nil {
			return fmt.Errorf("trusted documents: %s: %w", p, err)
		}
	}
	return nil
}

// Parse adds one manifest: Apollo's or graphql-codegen's.
func (m *Manifest) Parse(b []byte) error {
	var apollo struct {
		Format     string `json:"format"`
		Operations []struct {
			ID   string `json:"id"`
			Body string `json:"body"`
		} `json:"operations"`
	}
	if json.Unmarshal(b, &apollo) == nil && apollo.Format != "" {
		if apollo.Format != "apollo-persisted-query-manifest" {
			return fmt.Errorf("unknown manifest format %q", apollo.Format)
		}
		for _, op := range apollo.Operations {
			if op.ID == "" || op.Body == "" {
				return fmt.Errorf("an operation without id or body")
			}
			m.add(op.ID, op.Body)
		}
		return nil
	}
	var codegen map[string]string
	if err := json.Unmarshal(b, &codegen); err != nil {
		return fmt.Errorf("neither Apollo's persisted query manifest nor graphql-codegen's persisted documents: %w", err)
	}
	for id, doc := range codegen {
		if id == "" || doc == "" {
			return fmt.Errorf("a document without id or text")
		}
		m.add(id, doc)
	}
	return nil
}

// Lookup is the document of id ("sha256:<hex>" as GraphQL over HTTP's
// persisted documents write it, or the bare hex).
func (m *Manifest) Lookup(id string) (string, bool) {
	id = strings.ToLower(strings.TrimPrefix(id, "sha256:"))
	doc, ok := m.byID[id]
	return doc, ok
}

// Trusts reports whether doc is the text of a trusted document.
func (m *Manifest) Trusts(doc string) bool { return m.bodies[Hash(doc)] }
