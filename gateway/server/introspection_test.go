package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daca-go/daca/graph/graphtest"
)

// TestStandardIntrospectionQuery: the introspection query graphql-js
// 16.15.0's getIntrospectionQuery() makes — what GraphiQL, Apollo Sandbox,
// graphql-codegen and IDE plugins send — in each of its variants
// (testdata/introspection, generated with that version, see its README),
// is answered with the schema; a hostile deep __type stays bounded, and so
// do deep queries of the API.
func TestStandardIntrospectionQuery(t *testing.T) {
	_, h := newServer(graphtest.New(), Config{Introspection: true}, 0, nil)
	post := func(query string) (int, map[string]any, []map[string]any) {
		body, _ := json.Marshal(map[string]string{"query": query})
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var out struct {
			Data   map[string]any   `json:"data"`
			Errors []map[string]any `json:"errors"`
		}
		json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out.Data, out.Errors
	}
	files, _ := filepath.Glob("testdata/introspection/*.graphql")
	if len(files) < 4 {
		t.Fatalf("%d introspection queries in testdata; want the 4 variants", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			q, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			status, data, errs := post(string(q))
			if status != http.StatusOK || len(errs) != 0 {
				t.Fatalf("%d %v", status, errs)
			}
			schema, _ := data["__schema"].(map[string]any)
			types, _ := schema["types"].([]any)
			found := false
			for _, ty := range types {
				m, _ := ty.(map[string]any)
				if m["name"] != "Query" {
					continue
				}
				fields, _ := m["fields"].([]any)
				for _, fl := range fields {
					if fl.(map[string]any)["name"] == "memory" {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("the schema has no Query.memory: %d types", len(types))
			}
		})
	}
	deep := "{ __type(name: \"Query\") { name" + strings.Repeat(" ofType {", 30) + " name" + strings.Repeat(" }", 30) + " } }"
	for _, tt := range []struct{ name, query, want string }{
		{"hostile deep __type", deep, "the introspection query is nested deeper than 20 levels"},
		{"__typename is a leaf anywhere", `{ __typename memory(userId: "ana") { __typename name } }`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, errs := post(tt.query)
			switch {
			case tt.want == "" && len(errs) != 0:
				t.Fatalf("errors %v", errs)
			case tt.want != "" && (len(errs) == 0 || errs[0]["message"] != tt.want):
				t.Fatalf("errors %v; want %q", errs, tt.want)
			}
		})
	}
}
